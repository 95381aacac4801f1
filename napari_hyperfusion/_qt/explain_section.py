"""The panel's "Explain (Captum)" section: image maps as overlay layers,
EHR-field attributions as a bar chart and, for a model that reads notes,
the note's sentences as a second chart. A view of the :class:`Case`; the
work is :mod:`napari_hyperfusion.analysis.explain`, run through the panel's
:class:`JobRunner`. An explanation is stored for the case it was computed
for and is dropped if the case changed while it ran."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from ..analysis.case import Case
from ..analysis.explain import (
    IMAGE_METHODS,
    Cancelled,
    attribute_image,
    attribute_note,
    attribute_tabular,
    blank_map_text,
)
from ..analysis.overlays import OVERLAY_KEY, overlay_layers, overlay_legend
from ..data.input_qc import require_input
from ..io.model_file import LoadedModel
from . import notify
from .jobs import JobRunner
from .layers import SOURCE_KEY, layer_named, put_overlay
from .plain import PlainCanvas

__all__ = ["ExplainSection", "METHOD_LABELS"]

STALE_PREFIX = "[STALE] "  # an overlay computed for another record, note, model or device

METHOD_LABELS = {
    "saliency": "Saliency (fast)",
    "gradcam": "Grad-CAM (last stage)",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
}
# Integrated Gradients' completeness error, as a share of the attributed change, above which we warn
IG_DELTA_WARNING = 0.05


EXPLANATION = "explanation"


OVERLAY_WAIT_S = 1.0  # the longest the EHR attribution waits for the overlay to be drawn


class ExplainSection(QWidget):
    """Explain controls for the case; runs its work through ``jobs`` once
    ``ready()`` says the case can be computed."""

    def __init__(
        self, case: Case, jobs: JobRunner, viewer: Any, ready: Callable[[], tuple[bool, str]], parent=None
    ) -> None:
        super().__init__(parent)
        self.case, self.jobs, self.viewer, self.ready = case, jobs, viewer, ready
        explain_layout = QVBoxLayout(self)
        explain_layout.setContentsMargins(0, 0, 0, 0)
        explain_form = QFormLayout()
        self.method_combo = QComboBox()
        for method in IMAGE_METHODS:
            self.method_combo.addItem(METHOD_LABELS[method], method)
        explain_form.addRow("Method:", self.method_combo)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("the output to explain: a class probability, or the predicted age")
        explain_form.addRow("Explain output:", self.target_combo)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(4, 512)
        self.steps_spin.setValue(32)
        self.steps_spin.setToolTip(
            "Integrated Gradients: steps of the path integral (more: smaller completeness error)"
        )
        explain_form.addRow("IG steps:", self.steps_spin)
        self.baseline_combo = QComboBox()
        self.baseline_combo.addItems(["zeros", "blurred", "template"])
        self.baseline_combo.setToolTip(
            "Integrated Gradients' reference image: background, the scan blurred (6 mm), or the MNI template"
        )
        explain_form.addRow("IG baseline:", self.baseline_combo)
        self.logit_check = QCheckBox("Explain the logit (for saturated probabilities)")
        self.logit_check.setObjectName("logit_check")
        self.logit_check.setToolTip(
            "Attribute the class's log-odds log(p / (1 - p)) instead of its probability. A confident "
            "prediction (p > 0.99) barely moves, so the probability's map is mostly noise; the log-odds do not "
            "saturate. Applies to classifiers only (the predicted age has no logit)."
        )
        explain_form.addRow(self.logit_check)
        explain_layout.addLayout(explain_form)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setObjectName("explain_button")
        explain_layout.addWidget(self.explain_button)
        self.ehr_figure = Figure(figsize=(3.2, 2.2))
        self.ehr_canvas = PlainCanvas(self.ehr_figure)
        self.ehr_canvas.setMinimumHeight(170)
        explain_layout.addWidget(self.ehr_canvas)
        self.note_figure = Figure(figsize=(3.2, 1.8))
        self.note_canvas = PlainCanvas(self.note_figure)
        self.note_canvas.setMinimumHeight(140)
        self.note_canvas.setVisible(False)
        explain_layout.addWidget(self.note_canvas)
        self.explain_label = QLabel("Maps appear as layers on the scan; EHR fields as bars (IG).")
        self.explain_label.setWordWrap(True)
        self.explain_label.setTextFormat(Qt.TextFormat.PlainText)
        explain_layout.addWidget(self.explain_label)

        self._outputs: tuple[str, ...] = ()
        self._shown_image = None
        self._image_seconds = 0.0
        self._drawn_for = None  # the case the charts show
        self._marking = self._mark_again = False
        self._explained_text: dict[Any, str] = {}
        self.explain_button.clicked.connect(self.explain)
        case.changed.connect(self._on_case_changed)
        case.results_changed.connect(self._on_results_changed)
        self._on_case_changed()

    @property
    def last_explanation(self) -> Any:
        """(image, tabular, sentences) computed for the current case, or None."""
        return self.case.result(EXPLANATION)

    def _on_case_changed(self, *args: Any) -> None:
        model = self.case.model
        outputs = tuple(model.info.outputs) if model is not None else ()
        if outputs != self._outputs:
            self._outputs = outputs
            self.target_combo.clear()
            self.target_combo.addItems(list(outputs))
        has_logit = model is not None and model.info.kind != "regression"
        self.logit_check.setEnabled(has_logit)
        if not has_logit:
            self.logit_check.setChecked(False)
        self._show_current()

    def _show_current(self) -> None:
        """Charts and overlays of the case's explanation; anything computed
        for another case is cleared from the charts and its overlays are
        named STALE (a result never looks like it belongs to this case)."""
        identity = self.case.identity
        current = self.case.result(EXPLANATION)
        if current is not None and self._drawn_for != identity:
            _, tabular, sentences = current
            self._draw_tabular(tabular, self.case.model)
            self._draw_note(sentences, self.case.model)
            self._drawn_for = identity
            self.explain_label.setText(self._explained_text.get(identity, f"For {identity.describe()}"))
        elif current is None and self._drawn_for is not None:
            for figure, canvas in ((self.ehr_figure, self.ehr_canvas), (self.note_figure, self.note_canvas)):
                figure.clear()
                canvas.draw_idle()
            self._drawn_for = None
            self.explain_label.setText("The case changed since the last explanation: click Explain.")
        self._mark_stale_overlays()

    def _mark_stale_overlays(self) -> None:
        """Name every overlay not computed for the case on screen (its scan
        layer, record, note, model and device) ``[STALE]``, and only those.
        Renaming a layer can change the case (a scan renamed elsewhere, napari
        making names unique): then mark again, never recursively."""
        if self._marking:
            self._mark_again = True
            return
        self._marking = True
        try:
            self._mark_again = True
            while self._mark_again:
                self._mark_again = False
                described = self.case.identity.describe()
                scan_layer = layer_named(self.viewer, self.case.identity.scan_name)
                current = str(scan_layer.unique_id) if scan_layer is not None else None
                for layer in list(self.viewer.layers):
                    case = layer.metadata.get("case")
                    if OVERLAY_KEY not in layer.metadata or not case:
                        continue
                    source = layer.metadata.get(SOURCE_KEY)
                    stale = case != described or (source is not None and source != current)
                    if stale and not layer.name.startswith(STALE_PREFIX):
                        layer.name = STALE_PREFIX + layer.name
                    elif not stale and layer.name.startswith(STALE_PREFIX):
                        layer.name = layer.name[len(STALE_PREFIX) :]
        finally:
            self._marking = False

    def _on_results_changed(self, kind: str) -> None:
        if kind != "prediction":
            return
        result = self.case.result("prediction")
        if result is None:
            return
        if result.is_classifier:
            self.target_combo.setCurrentText(result.predicted)
        elif result.is_multilabel:
            self.target_combo.setCurrentText(result.outputs[int(np.argmax(result.values))])

    # -- explanations ----------------------------------------------------------
    def explain(self) -> None:
        """Attribute the chosen output to the scan (overlay layers) and to
        the EHR fields (bar chart), in a worker thread with progress and
        Cancel."""
        ok, reason = self.ready()
        if not ok:
            notify.error(reason)
            return
        identity, model, scan, record, note = self.case.snapshot()
        method = self.method_combo.currentData()
        target = self.target_combo.currentText()
        output = "logit" if self.logit_check.isChecked() and model.info.kind != "regression" else "probability"
        settings = {"method": method, "target": target, "baseline": self.baseline_combo.currentText(),
                    "n_steps": self.steps_spin.value(), "output": output}  # fmt: skip
        jobs = self.jobs
        overlay_shown = threading.Event()

        def job():
            image = None
            if model.info.config.uses_image and scan is not None:
                # the gate before any explanation too: a map of a scan the model cannot read explains nothing
                require_input(scan, model.info.input_stats.get("scan"), f"'{identity.scan_name}'")
            if model.info.config.uses_image:
                image = attribute_image(model, scan, record, progress=jobs.report, should_stop=jobs.should_stop,
                                        note=note, **settings)  # fmt: skip
                yield image  # the overlay is shown now; the EHR attribution follows
                # once the overlay is on screen: the attribution's threads would take the cores the
                # window needs to draw it (the map is what the user waits for)
                for _ in range(int(OVERLAY_WAIT_S / 0.02)):
                    if overlay_shown.wait(0.02) or jobs.should_stop():
                        break
                yield "attributing the EHR fields"
            if jobs.should_stop():
                raise Cancelled()
            tabular = None  # an imaging-only model reads no EHR field: nothing to attribute to them
            if model.info.config.uses_tabular:
                tabular = attribute_tabular(model, scan, record, target=target, note=note, output=output)
            sentences = None
            if model.info.config.uses_note and note:
                yield "attributing the note's sentences"
                sentences = attribute_note(model, scan, record, note, target=target, should_stop=jobs.should_stop,
                                           output=output)  # fmt: skip
            return image, tabular, sentences

        self.jobs.start(
            job,
            lambda result: self._on_explained(result, identity, model, record),
            f"explaining with {METHOD_LABELS[method]}...",
            "Cannot explain",
            on_partial=lambda image: self._show_partial(image, identity, model, record, overlay_shown),
        )

    def _show_partial(
        self, image: Any, identity: Any, model: LoadedModel, record: dict[str, Any], shown: threading.Event
    ) -> None:
        try:
            self._show_image(image, identity, model, record)
        finally:  # after the paint the overlay's layers asked for (posted events come before timers)
            QTimer.singleShot(0, shown.set)

    def _show_image(self, image: Any, identity: Any, model: LoadedModel, record: dict[str, Any]) -> None:
        """The image maps as overlays, if the case is still the one they were computed for."""
        if identity != self.case.identity:
            return
        self._shown_image = image
        self._image_seconds = self.jobs.elapsed()
        for data, kwargs in overlay_layers(
            image, identity.scan_name, model.info.name, model.sha256, record,
            scan_fingerprint=identity.scan_fingerprint, case=identity.describe(),
        ):  # fmt: skip
            put_overlay(self.viewer, data, kwargs, source=layer_named(self.viewer, identity.scan_name))
        if image.is_blank:
            name = METHOD_LABELS[image.method].split(" (")[0]  # "Saliency", not "Saliency (fast)"
            notify.warning(blank_map_text(image.method, name, image.target))
        elif image.completeness_is_poor(IG_DELTA_WARNING):
            fix = (
                "tick 'Explain the logit'"
                if image.saturated and image.output_kind == "probability"
                else f"raise 'IG steps' (now {image.params.get('n_steps')})"
            )
            notify.warning(
                f"Integrated Gradients' completeness error is {image.completeness_error:.0%} of the attributed "
                f"change {abs(image.attributed_change or 0.0):.2g} (delta {image.convergence_delta:.2g}); "
                f"{fix} for a faithful map."
            )
        elif image.saturated and image.output_kind == "probability":
            notify.warning(self._saturation_text(image))

    @staticmethod
    def _saturation_text(image: Any) -> str:
        return (
            f"p({image.target}) = {image.probability:.4f} is saturated: the probability barely moves, so its map "
            "is mostly noise; tick 'Explain the logit (for saturated probabilities)' and explain again."
        )

    def _on_explained(self, result: Any, identity: Any, model: LoadedModel, record: dict[str, Any]) -> None:
        if not self.case.store(EXPLANATION, identity, result):
            self.jobs.status.setText("The case changed while explaining; that explanation was dropped.")
            return
        image, tabular, sentences = result
        if image is not None and image is not self._shown_image:
            self._show_image(image, identity, model, record)
        self._draw_tabular(tabular, model)
        self._draw_note(sentences, model)
        parts = [f"For {identity.describe()}"]
        if image is not None:
            what = f"the logit (log-odds) of {image.target}" if image.output_kind == "logit" else image.target
            ehr = (
                f"EHR attribution {self.jobs.elapsed():.1f} s from the click"
                if tabular is not None
                else "no EHR attribution (the model reads no EHR field)"
            )
            parts.append(f"{METHOD_LABELS[image.method]} for {what}: map {self._image_seconds:.1f} s, {ehr}")
            if image.convergence_delta is not None:
                parts.append(
                    f"IG completeness error {image.convergence_delta:.2g} "
                    f"({image.completeness_error:.0%} of the change f(x) - f(baseline))"
                )
            if image.is_blank:
                parts.append("the map is zero everywhere (see the warning)")
            if image.saturated and image.output_kind == "probability":
                parts.append(self._saturation_text(image))
            kind = "value" if image.output_kind == "probability" and image.probability is None else image.output_kind
            legend = overlay_legend(image.method.replace("_", " "), image.target, image.signed, kind)
            parts.append("colours: " + legend.split(": ", 1)[1])
        if tabular is not None and tabular.image_share is not None:
            parts.append(f"image {tabular.image_share:.0%} / EHR {1 - tabular.image_share:.0%} of the change "
                         "against a blurred scan and the average record")  # fmt: skip
        self.explain_label.setText("; ".join(parts))
        self._explained_text = {identity: "; ".join(parts)}
        self._drawn_for = identity
        self.jobs.status.setText("done")

    def _draw_tabular(self, tabular: Any, model: LoadedModel | None = None) -> None:
        fig = self.ehr_figure
        fig.clear()
        fig.subplots_adjust(left=0.36, right=0.97, bottom=0.12, top=0.82)  # fixed: tight layout is slow
        ax = fig.add_subplot(111)
        if tabular is None:
            ax.set_axis_off()
            fig.text(0.5, 0.5, "this model reads no EHR field: nothing to attribute", ha="center", va="center",
                     fontsize=7)  # fmt: skip
            self.ehr_canvas.draw_idle()
            return
        values = np.asarray(tabular.values)
        colors = ["#4daf4a" if v >= 0 else "#c2a5cf" for v in values]
        labels = list(tabular.labels)
        selection = model.info.risk_selection() if model is not None else None
        if selection is not None:  # say which fields stage 1 dropped: their 0 is by design
            kept = set(selection.fields(model.info.schema))
            labels = [f"{lab} (not read)" if name in model.info.schema.names and name not in kept else lab
                      for name, lab in zip(tabular.fields, labels)]  # fmt: skip
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.axvline(0, color="#888888", linewidth=0.8)
        ax.tick_params(labelsize=7)
        # centred on the figure, on two lines: a long label name fits the dock
        fig.suptitle(f"EHR fields -> {tabular.target}\n(IG vs. average record)", fontsize=8)
        self.ehr_canvas.draw_idle()

    def _draw_note(self, sentences: Any, model: LoadedModel) -> None:
        """Shapley values of the note's sentences (hidden for models
        without notes)."""
        reads_note = model.info.config.uses_note
        self.note_canvas.setVisible(reads_note)
        if not reads_note:
            return
        fig = self.note_figure
        fig.clear()
        fig.subplots_adjust(left=0.5, right=0.97, bottom=0.15, top=0.8)
        ax = fig.add_subplot(111)
        if sentences is None:
            ax.text(0.5, 0.5, "no note was given: nothing to attribute", ha="center", va="center", fontsize=7)
            ax.set_axis_off()
        else:
            values = np.asarray(sentences.values)
            names = [s if len(s) <= 38 else s[:36] + "..." for s in sentences.sentences]
            colors = ["#4daf4a" if v >= 0 else "#c2a5cf" for v in values]
            ax.barh(names[::-1], values[::-1], color=colors[::-1])
            ax.axvline(0, color="#888888", linewidth=0.8)
            ax.tick_params(labelsize=6)
            how = "exact Shapley" if sentences.exact else "sampled Shapley"
            fig.suptitle(f"note sentences -> {sentences.target}\n({how} vs. no note)", fontsize=8)
        self.note_canvas.draw_idle()
