"""The prediction on screen: a bar chart and a line naming the case.

Shows the case's prediction. When the scan, record, note, model or device
changes after it was computed, the chart is greyed out and the text says it
is stale and what changed, until Predict is clicked again: a result is
never shown as if it belonged to another case.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..analysis.case import Case, CaseIdentity
from ..infer.subject import SubjectPrediction
from .plain import PlainCanvas

__all__ = ["ResultView", "PREDICTION"]

PREDICTION = "prediction"
HIGHLIGHT, OTHER, STALE = "#f0a030", "#4c9be8", "#b0b0b0"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else "?"
    return str(value)


def _qc_line(qc: dict[str, Any]) -> str:
    verdict = {"ok": "ok", "warn": "WARNING", "refuse": "REFUSED"}.get(qc.get("verdict", ""), "?")
    return (
        f"Input QC {verdict}: NCC with the MNI template {qc['ncc']:.2f}, brain coverage {qc['coverage']:.0%}, "
        f"head size {qc['head_scale']:.2f} x template, voxels {qc['voxel_mm']:.1f} mm"
    )


def _typicality_line(typical: dict[str, Any]) -> str:
    if not typical.get("available", True):
        return "Typicality: the model file stores no training statistics"
    pct = typical.get("image_percentile", float("nan"))
    image = f"image more atypical than {pct:.0f} % of training scans" if math.isfinite(pct) else "no image"
    ehr = ", ".join(typical.get("out_of_range", [])) or "none"
    return f"Typicality: {image}; EHR fields outside the training range: {ehr}"


class ResultView(QWidget):
    """The case's prediction (or the last one, marked stale)."""

    def __init__(self, case: Case, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.case = case
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.figure = Figure(figsize=(3.2, 2.0))
        self.canvas = PlainCanvas(self.figure)
        self.canvas.setMinimumHeight(160)
        layout.addWidget(self.canvas)
        self.label = QLabel("No prediction yet.")
        self.label.setObjectName("result_label")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.PlainText)  # names come from files: never markup
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # what is unusual about the inputs (input gate warnings, out-of-distribution flags), in orange
        self.warning_label = QLabel()
        self.warning_label.setObjectName("result_warnings")
        self.warning_label.setWordWrap(True)
        self.warning_label.setTextFormat(Qt.TextFormat.PlainText)
        self.warning_label.setStyleSheet("color: #f0a030;")
        self.warning_label.setVisible(False)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.label)
        # one line for the panel's fixed bar: the answer stays in view however far the user scrolled
        self.headline = QLabel("No prediction yet.")
        self.headline.setObjectName("result_headline")
        self.headline.setWordWrap(True)
        self.headline.setTextFormat(Qt.TextFormat.PlainText)
        self.headline.setStyleSheet("font-weight: bold;")
        self.shown: tuple[CaseIdentity, SubjectPrediction] | None = None
        self.stale = False
        self.canvas.mpl_connect("draw_event", self._on_chart_drawn)
        case.changed.connect(self.refresh)
        case.results_changed.connect(self.refresh)

    def refresh(self, *args: Any) -> None:
        current = self.case.result(PREDICTION)
        if current is not None:
            self._show(self.case.identity, current, stale=False)
            return
        latest = self.case.latest(PREDICTION)
        if latest is None:
            self.shown, self.stale = None, False
            self.figure.clear()
            self.canvas.draw_idle()
            self.label.setText("No prediction yet.")
            self.headline.setText("No prediction yet.")
            self.warning_label.setVisible(False)
            return
        self._show(*latest, stale=True)

    def _show(self, identity: CaseIdentity, result: SubjectPrediction, stale: bool) -> None:
        # the chart only changes with the result or its staleness; the text says what changed, every time
        if self.shown is None or self.shown[1] is not result or self.stale != stale:
            self._draw(result, stale)
        self.shown, self.stale = (identity, result), stale
        warnings = result.warnings
        self.warning_label.setText("CHECK THE INPUTS: " + "; ".join(warnings) if warnings else "")
        self.warning_label.setVisible(bool(warnings))
        lines = []
        if stale:
            changed = " and ".join(self.case.identity.differences(identity)) or "case"
            lines.append(f"STALE: the {changed} changed since this was computed; click Predict.")
        lines.append(result.summary())
        first = result.summary().splitlines()[0]
        self.headline.setText(("STALE (click Predict): " if stale else "Prediction: ") + first)
        self.headline.setStyleSheet(f"font-weight: bold; color: {STALE};" if stale else "font-weight: bold;")
        seconds = result.extra.get("click_to_result_s", result.seconds)
        lines.append(f"For {identity.describe()}; {seconds * 1000:.0f} ms from the click")
        lines.append("Inputs: " + ", ".join(f"{k}={_fmt(v)}" for k, v in result.record.items()))
        if result.imputed:
            lines.append("Filled in by the model: " + ", ".join(result.imputed))
        if result.input_qc:
            lines.append(_qc_line(result.input_qc))
        if result.typicality:
            lines.append(_typicality_line(result.typicality))
        attention = result.extra.get("label_attention")
        if attention:  # MedFusionNet: which tokens each label's query read (not an attribution)
            lines.append(
                "Label decoder attention (not attribution): "
                + "; ".join(
                    f"{label}: " + ", ".join(f"{t} {w:.0%}" for t, w in sorted(row.items(), key=lambda x: -x[1])[:2])
                    for label, row in attention.items()
                )
            )
        self.label.setText("\n".join(lines))

    def _on_chart_drawn(self, event: Any = None) -> None:
        """The time the panel shows is from the click to this draw of the
        new result's chart (not to the worker's return)."""
        if self.shown is None:
            return
        identity, result = self.shown
        clicked = result.extra.pop("clicked_at", None)
        if clicked is None:
            return
        result.extra["click_to_result_s"] = time.perf_counter() - clicked
        self._show(identity, result, self.stale)  # the text only: the chart is drawn

    def _draw(self, result: SubjectPrediction, stale: bool) -> None:
        fig = self.figure
        fig.clear()
        # fixed margins: matplotlib's tight layout costs more than the prediction itself
        long_names = result.is_multilabel or result.chronological_age is not None  # "chronological age"
        two_line_caption = result.age_gap_corrected is not None
        fig.subplots_adjust(
            left=0.34 if long_names else 0.2, right=0.97, bottom=0.32 if two_line_caption else 0.2, top=0.88
        )
        ax = fig.add_subplot(111)
        grey = (lambda c: STALE) if stale else (lambda c: c)
        if result.is_multilabel:
            cuts = result.thresholds or [0.5] * len(result.values)
            y = np.arange(len(result.values))[::-1]
            colors = [grey(HIGHLIGHT if v >= t else OTHER) for v, t in zip(result.values, cuts)]
            ax.barh(y, result.values, color=colors)
            for yi, v, t in zip(y, result.values, cuts):
                ax.plot([t, t], [yi - 0.4, yi + 0.4], color="k", linewidth=1)
                ax.text(min(v + 0.02, 0.85), yi, f"{v:.0%}", va="center", fontsize=8)
            ax.set_yticks(y, result.outputs, fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_xlabel("probability per label (black tick: the label's threshold)", fontsize=7)
        elif result.is_classifier:
            top = int(np.argmax(result.values))
            colors = [grey(HIGHLIGHT if i == top else OTHER) for i in range(len(result.values))]
            ax.bar(result.outputs, result.values, color=colors)
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability")
            for i, v in enumerate(result.values):
                ax.text(i, v + 0.02, f"{v:.0%}", ha="center", fontsize=8)
        else:
            per_view = np.asarray(result.per_view)[:, 0]
            names, values, colors = [result.outputs[0]], [result.values[0]], [grey(OTHER)]
            if result.chronological_age is not None:  # brain age beside the age, so the gap is visible
                names.insert(0, "chronological age")
                values.insert(0, result.chronological_age)
                colors.insert(0, grey("#909090"))
            y = np.arange(len(values))
            errors = [0.0] * (len(values) - 1) + [result.spread if len(per_view) > 1 else 0.0]
            ax.barh(y, values, xerr=errors, color=colors)
            ax.set_yticks(y, names, fontsize=7)
            ax.set_xlabel(result.unit)
            ax.set_xlim(0, max(100.0, max(values) * 1.2))
            for yi, v in zip(y, values):
                ax.text(v, yi, f" {v:.1f}", va="center", fontsize=9)
            if result.age_gap is not None:
                label = f"brain-age gap {result.age_gap:+.1f} {result.unit}"
                if result.age_gap_corrected is not None:  # the field's correction for regression to the mean
                    label += f"\n({result.age_gap_corrected:+.1f} after the age-bias correction)"
                ax.set_xlabel(label, fontsize=8)
        title = "SYNTHETIC-data model" + (" - STALE" if stale else "")
        ax.set_title(title, fontsize=8, color="#808080" if stale else "#c07000")
        self.canvas.draw_idle()
