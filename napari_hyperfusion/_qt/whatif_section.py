"""The panel's "What if..." section: live EHR sliders over cached image
features, response curves, the generated weights, saliency shift, export.

A view of the :class:`Case`: the cached image features belong to the
case's model, scan and device and are rebuilt when any of them changes;
the "patient" values are the record the last prediction was made with.
The work is :mod:`napari_hyperfusion.analysis.whatif`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from ..analysis.case import Case
from ..analysis.narration import change_bar, change_words, narrate
from ..analysis.overlays import OVERLAY_KEY, overlay_layers
from ..analysis.slider_trust import slider_trust
from ..analysis.support import curve_outside
from ..analysis.whatif import WhatIfSession, field_grid
from ..data.notes import encoder_loaded
from ..data.schema import TabularSchema
from ..errors import HyperFusionError, NoteEncoderError, SchemaError
from ..synth.coverage import seen_volumes
from ..synth.truth import EHR_FIELDS, ad_truth_curve, brain_age_estimate, has_ground_truth, truth_task
from . import notify
from .layers import layer_named, put_overlay
from .plain import PlainCanvas, plain_label, without_math
from .weight_map_view import CLASS_COLOURS, WeightMapView, draw_weight_map

__all__ = ["WhatIfSection"]

MAX_EXPLORED = 20_000  # rows kept for export (a long lecture's worth of slider moves)


def _short(value: Any) -> str:
    if value is None:
        return "not known"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _input_error(err: HyperFusionError) -> str:
    """The message for a what-if input the model refused, naming its cause."""
    if isinstance(err, SchemaError):
        return f"Cannot use the what-if values: {err}"
    if isinstance(err, NoteEncoderError):
        return f"Cannot use the note: {err}"
    return f"Cannot compute the what-if: {err}"


STARTED_FROM_FORM = (
    "The record or note changed since Predict: the sliders start from the form's values; "
    "the result above is STALE until you click Predict."
)
NOTHING_TO_EXPORT = "Nothing to export yet: click Predict, then move a slider or draw a response curve."
NOTHING_TO_SUMMARISE = "Nothing to summarise yet: click Predict, then explore with the sliders."


class WhatIfSection(QWidget):
    """What-if controls for the case. ``target()`` names the output the
    saliency shift explains (the Explain section's choice)."""

    def __init__(
        self, case: Case, viewer: Any, target: Callable[[], str | None], parent=None,
        view: Callable[[], tuple[str, bool]] = lambda: ("axial", False), scan_layer: Callable[[], Any] = lambda: None,
    ) -> None:  # fmt: skip
        super().__init__(parent)
        self.case, self.viewer, self.target = case, viewer, target
        self.view, self.scan_layer = view, scan_layer  # the plane and convention on screen; the scan's layer
        self.twin = None  # the TwinView, once shown
        self._twin_dock = None
        whatif_layout = QVBoxLayout(self)
        whatif_layout.setContentsMargins(0, 0, 0, 0)
        self.stale_label = QLabel(STARTED_FROM_FORM)  # shown while the form differs from the last Predict
        self.stale_label.setObjectName("whatif_stale")
        self.stale_label.setWordWrap(True)
        self.stale_label.setStyleSheet("color: #f0a030;")
        self.stale_label.setVisible(False)
        whatif_layout.addWidget(self.stale_label)
        self.whatif_form = QFormLayout()
        whatif_layout.addLayout(self.whatif_form)
        self.whatif_label = QLabel("Move a slider: the prediction updates live from cached image features.")
        self.whatif_label.setWordWrap(True)
        self.whatif_label.setObjectName("whatif_label")
        self.whatif_label.setTextFormat(Qt.TextFormat.PlainText)  # output names come from the model file
        whatif_layout.addWidget(self.whatif_label)
        # two buttons a row at most: the panel fits a laptop's dock (about 380 px)
        self.reset_button = QPushButton("Reset to patient values")
        whatif_layout.addWidget(self.reset_button)
        row = QHBoxLayout()
        self.curve_field = QComboBox()
        self.curve_field.setToolTip("the field whose whole range the response curve sweeps")
        self.curve_button = QPushButton("Response curve")
        row.addWidget(self.curve_field, 1)
        row.addWidget(self.curve_button)
        whatif_layout.addLayout(row)
        # how far the slider in focus (the curve's field, or the one last moved) shows what the data hold
        self.trust_label = plain_label("", wrap=True)
        self.trust_label.setObjectName("slider_trust")
        self.trust_label.setToolTip(
            "Measured once for this model file on SYNTHETIC subjects (the shipped files: subjects they never "
            "trained on; hyperfusion whatif-fidelity --write): the field's effect on the output beside the effect in the "
            "process that made the data, and how often the model's curve slopes the other way."
        )
        whatif_layout.addWidget(self.trust_label)
        self.truth_box = QCheckBox("Show the ground truth")
        self.truth_box.setObjectName("truth_box")
        self.truth_box.setToolTip(
            "Only for a SYNTHETIC subject of our generator (greyed out otherwise): the dashed curves are the exact Bayes answer "
            "of the process that made the data (the true volumes of the regions the model's views hold, "
            "the others unknown to it as to the model; the EHR field swept; equal class priors). Where the model's curve departs from it, the model learned "
            "something the data do not say. For brain age: the posterior median age given sex and the true volumes."
        )
        whatif_layout.addWidget(self.truth_box)
        self.whatif_figure = Figure(figsize=(3.2, 3.6))
        self.whatif_canvas = PlainCanvas(self.whatif_figure)
        self.whatif_canvas.setMinimumHeight(260)
        whatif_layout.addWidget(self.whatif_canvas)
        self.weight_map_view = WeightMapView()
        self.weight_map_view.setToolTip(
            "Each dot is one training subject's personalised network: the parameters the hypernetwork "
            "generated from that subject's EHR values, projected onto their two main directions of variation. "
            "The black dot is the patient's network, the star the network at the sliders' values."
        )
        whatif_layout.addWidget(self.weight_map_view)
        self._map_session_key = None
        row2 = QHBoxLayout()
        self.shift_button = QPushButton("Saliency shift")
        self.shift_button.setToolTip("saliency at the what-if values minus at the patient's, as a signed overlay")
        self.twin_button = QPushButton("Twin view")
        self.twin_button.setObjectName("twin_button")
        self.twin_button.setToolTip(
            "the patient and the what-if twin side by side: both saliency maps, their difference and both "
            "predictions, with linked cameras (a dock below the canvas)"
        )
        self.export_button = QPushButton("Export CSV...")
        self.summary_button = QPushButton("Summary figure...")
        for button in (self.shift_button, self.twin_button):
            row2.addWidget(button)
        whatif_layout.addLayout(row2)
        row3 = QHBoxLayout()
        for button in (self.export_button, self.summary_button):
            row3.addWidget(button)
        whatif_layout.addLayout(row3)
        self.sliders: dict[str, QWidget] = {}
        self.slider_values: dict[str, QLabel] = {}
        self._exact: dict[str, tuple[int, float]] = {}  # slider -> (step, the exact value set there)
        # the values the patient's prediction was made with: None where the record does not know a
        # field (the model fills it and sets its "was missing" indicator); patient_filled holds what
        # the model filled in, where an unknown field's slider rests until it is moved
        self.patient_record: dict[str, Any] = {}
        self.patient_filled: dict[str, Any] = {}
        self.patient_missing: set[str] = set()
        self._unknown: set[str] = set()  # fields the what-if leaves "not known" (their slider not moved)
        self.explored: list[dict[str, Any]] = []
        self._patient_from = ""  # the record fingerprint the patient values were taken from
        self.last_curve = None
        self.last_story: list[str] = []  # the narration of the last what-if state
        self.last_truth: np.ndarray | None = None  # the ground-truth curve beside last_curve
        self._session: WhatIfSession | None = None
        self._schema: TabularSchema | None = None
        self._whatif_layout = None
        self._wi_image = self._wi_line = self._wi_points = None
        self._wi_order = np.arange(0)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        # 0 ms: the update runs once the event loop has handled every pending slider event, so a burst
        # (a drag, a key held down) is one update, and a single move waits for nothing
        self._debounce.setInterval(0)
        self._debounce.timeout.connect(self.update_whatif)
        self._wi_background = None
        self.whatif_canvas.mpl_connect("draw_event", self._on_whatif_drawn)
        self.reset_button.clicked.connect(self.reset_whatif)
        self.curve_field.currentIndexChanged.connect(lambda _=0: self.show_slider_trust(self.curve_field.currentData()))
        self.curve_button.clicked.connect(self.show_response_curve)
        self.truth_box.toggled.connect(self._on_truth_toggled)
        self.shift_button.clicked.connect(self.saliency_shift)
        self.twin_button.clicked.connect(self.twin_view)
        self.export_button.clicked.connect(self._ask_export)
        self.summary_button.clicked.connect(self._ask_summary)
        case.changed.connect(self._on_case_changed)
        case.results_changed.connect(self._on_results_changed)
        self._on_case_changed()

    @property
    def model(self):
        return self.case.model

    def _on_case_changed(self, *args: Any) -> None:
        model = self.case.model
        schema = model.info.schema if model is not None else None
        rebuilt = schema is not self._schema
        if rebuilt:
            self._schema = schema
            self._build_whatif(schema)
        if rebuilt or (self._session is not None and not self._session_matches()):
            # another model, scan or device: the cached features, the patient values, the
            # curve and the plot belong to the old case (explored rows stay: each names its case)
            self._session = None
            self.patient_record, self.patient_filled, self._unknown = {}, {}, set()
            self.last_curve = self.last_truth = None
            self._whatif_layout = None
            self._wi_image = self._wi_line = self._wi_points = self._wi_background = None
            self.whatif_figure.clear()
            self.whatif_canvas.draw_idle()
            self._map_session_key = None
            self.weight_map_view.set_map(None, "Click Predict: the map shows the patient's network among the cohort's")
            self.whatif_label.setText("The case changed: click Predict, then move a slider.")
        elif self.patient_record and self._patient_from != self.case.identity.record_fingerprint:
            # the record or the note was edited after Predict: the sliders start from the form's values
            # (the cached image features still hold), never from the values the last result was for
            self.reset_whatif(quiet=True)
        self._show_staleness()
        available = self.ground_truth() is not None
        self.truth_box.setEnabled(available)
        if not available:
            self.truth_box.setChecked(False)

    def _on_results_changed(self, kind: str) -> None:
        if kind == "prediction" and self.case.result("prediction") is not None:
            self.reset_whatif()
        self._show_staleness()

    def _show_staleness(self) -> None:
        """Say when the sliders start from values no Predict was run for."""
        self.stale_label.setVisible(bool(self.patient_record) and self.case.result("prediction") is None)

    def _session_key(self) -> tuple[str, str, str]:
        identity = self.case.identity
        return identity.model_sha256, identity.scan_key, identity.device

    def _session_matches(self) -> bool:
        model = self.case.model
        return self._session is not None and model is not None and self._session.matches(model, self._session_key()[1])

    # -- what if ------------------------------------------------------------------
    _SLIDER_STEPS = 200

    def _restart_debounce(self, *_: Any) -> None:
        # not connected to QTimer.start directly: the signal's value (the slider's index) would become
        # the interval in ms
        self._debounce.start()

    def _build_whatif(self, schema: TabularSchema | None) -> None:
        while self.whatif_form.rowCount():
            self.whatif_form.removeRow(0)
        self.sliders = {}
        self.slider_values: dict[str, QLabel] = {}
        self.curve_field.clear()
        for field in schema.fields if schema is not None else ():
            if field.kind == "category":
                control: QWidget = QComboBox()
                control.addItems(list(field.categories))
                control.currentIndexChanged.connect(self._restart_debounce)
            else:
                control = QSlider(Qt.Orientation.Horizontal)
                values = field_grid(field, self._SLIDER_STEPS + 1)
                control.setRange(0, len(values) - 1)
                control.setProperty("values", values)
                control.valueChanged.connect(self._restart_debounce)
            control.setObjectName(f"whatif_{field.name}")
            value_label = plain_label("")
            value_label.setObjectName(f"whatif_value_{field.name}")
            value_label.setMinimumWidth(110)
            changed = control.valueChanged if isinstance(control, QSlider) else control.currentIndexChanged
            # moving a slider makes its field known at the slider's value (before the label shows it)
            changed.connect(lambda _=0, name=field.name: self._unknown.discard(name))
            changed.connect(lambda _=0, name=field.name: self._show_slider_value(name))
            changed.connect(lambda _=0, name=field.name: self.show_slider_trust(name))
            row = QHBoxLayout()
            row.addWidget(control, 1)
            row.addWidget(value_label)
            self.whatif_form.addRow(plain_label(f"{field.display_name}:"), row)
            self.sliders[field.name] = control
            self.slider_values[field.name] = value_label
            self.curve_field.addItem(field.display_name, field.name)
        self.patient_record = {}
        self.patient_filled = {}
        self._unknown = set()
        self._exact = {}
        self._session = None
        self.show_slider_trust(self.curve_field.currentData())

    def show_slider_trust(self, name: str | None) -> None:
        """Say whether ``name``'s slider shows what the data hold, from the
        check the model file carries (:mod:`~napari_hyperfusion.analysis.slider_trust`)."""
        model = self.model
        text, caution = "", False
        if model is not None and name and name in model.info.schema.names:
            field = model.info.schema[name]
            trust = slider_trust(model.info.input_stats, name)
            checked = (model.info.input_stats.get("whatif_fidelity") or {}).get("fields") or {}
            if trust is None:
                why = "this file's check against the truth did not cover it" if checked else "it was not checked"
                text = (
                    f"{field.display_name}: {why}; this slider shows what the model does, which need not be what "
                    "the data hold."
                )
            else:
                text, caution = trust.text(field.display_name), not trust.agrees
        if text != self.trust_label.text():  # a slider drag must not relayout the panel on every step
            self.trust_label.setText(text)
            self.trust_label.setStyleSheet("color: #f0a030;" if caution else "")  # the panel's warning colour
        self.trust_label.setProperty("caution", caution)

    def _slider_value(self, name: str) -> Any:
        control = self.sliders[name]
        if isinstance(control, QComboBox):
            return control.currentText()
        return control.property("values")[control.value()]

    def _show_slider_value(self, name: str) -> None:
        """The value a slider is at, its unit, and the patient's value beside it."""
        field = self.model.info.schema[name] if self.model is not None else None
        if field is None or name not in self.slider_values:
            return
        unit = f" {field.unit}" if field.unit else ""
        value = self.whatif_record().get(name) if self.patient_record else self._slider_value(name)
        if value is None:  # not known: the slider rests at what the model fills in
            text = f"not known (filled: {_short(self.patient_filled.get(name))}{unit})"
            if name in self.patient_missing:
                text += " (patient's)"
            self.slider_values[name].setWordWrap(True)  # too long for one line beside the slider
            self.slider_values[name].setText(text)
            return
        self.slider_values[name].setWordWrap(False)
        text = f"{_short(value)}{unit}"
        if self.patient_record:
            patient = self.patient_record.get(name)
            same = patient is not None and (
                str(patient) == str(value)
                or (
                    not isinstance(patient, str)
                    and not isinstance(value, str)
                    and abs(float(patient) - float(value)) < 1e-9
                )
            )
            text += " (patient's)" if same else f" (patient: {_short(patient)})"
        self.slider_values[name].setText(text)

    def set_whatif_value(self, name: str, value: Any) -> None:
        """Move a slider (or choice) to the nearest available value; ``None``
        makes the field "not known" (the slider rests where the model fills it)."""
        control = self.sliders[name]
        unknown = value is None
        if unknown:
            value = self.patient_filled.get(name)
            if value is None:
                field = self.model.info.schema[name]
                value = field.categories[0] if field.kind == "category" else field.mean
        if isinstance(control, QComboBox):
            control.setCurrentText(str(value))
        else:
            values = np.asarray(control.property("values"))
            index = int(np.abs(values - float(value)).argmin())
            # the value asked for is kept exactly while the slider stays on its nearest step
            self._exact[name] = (index, float(value))
            control.setValue(index)
        if unknown:
            self._unknown.add(name)
            self._exact.pop(name, None)
        else:
            self._unknown.discard(name)
        self._show_slider_value(name)

    def whatif_record(self) -> dict[str, Any]:
        """The what-if values: the sliders, except where the slider sits on
        the patient's own value's position (so the exact value is kept)."""
        out = {}
        for name in self.sliders:
            if name in self._unknown:
                out[name] = None
                continue
            value = self._slider_value(name)
            exact = self._exact.get(name)
            patient = self.patient_record.get(name)
            if exact is not None and exact[0] == self.sliders[name].value():
                value = exact[1]  # set by value (a lecture step, Reset): kept as given
            elif patient is not None and not isinstance(patient, str):
                values = np.asarray(self.sliders[name].property("values"))
                if int(np.abs(values - float(patient)).argmin()) == self.sliders[name].value():
                    value = patient
            out[name] = value
        return out

    def reset_whatif(self, quiet: bool = False) -> None:
        """Start the sliders at the patient's values. A field the record does
        not know starts "not known", as the patient was predicted (the model
        fills it and its missing indicator says so); its slider rests at the
        filled value's nearest step and makes the field known once moved."""
        if self.model is None:
            return
        try:
            filled, missing = self.model.info.schema.fill(self.case.record)
        except HyperFusionError as err:
            if quiet:  # the form says why beside Predict; the sliders wait for a usable record
                self.patient_record, self.patient_filled, self._unknown = {}, {}, set()
                self.whatif_label.setText(f"The form's record cannot be used yet: {err}")
                return
            notify.error(f"The record is not complete: {err}")
            return
        self.patient_filled = dict(filled)
        self._patient_from = self.case.identity.record_fingerprint  # the record (and note) they start from
        self.patient_missing = set(missing)  # filled in by the model, not measured
        self.patient_record = {name: (None if name in missing else value) for name, value in filled.items()}
        self._exact = {}
        self._unknown = set()
        for name, value in self.patient_record.items():
            control = self.sliders[name]
            blocker = control.blockSignals(True)
            self.set_whatif_value(name, value)
            control.blockSignals(blocker)
        self._show_staleness()
        self.update_whatif()

    def whatif_session(self) -> WhatIfSession | None:
        """The cached features for the case's model, scan and device, built
        on the calling thread when missing (for scripts and tests; the panel
        itself uses :meth:`cached_session`, which Predict fills)."""
        model = self.case.model
        if model is None:
            return None
        if not self._session_matches():
            if model.info.config.uses_image and self.case.scan is None:
                return None
            self._session = WhatIfSession(model, self.case.scan, self._session_key()[1], note=self.case.note)
        self._session.set_note(self.case.note)  # the note is held fixed while the sliders move
        return self._session

    def cached_session(self) -> WhatIfSession | None:
        """The features Predict cached for the case's model, scan and device,
        or None (and the label says to click Predict). The panel never
        encodes a scan on the UI thread: a 512 x 512 x 400 volume takes
        seconds."""
        if self._session_matches():
            self._session.set_note(self.case.note)
            return self._session
        self.whatif_label.setText("Click Predict first: it caches this scan's image features off the UI thread.")
        return None

    def adopt_session(self, session: WhatIfSession) -> bool:
        """Use features cached off the UI thread (by Predict's worker), if
        they belong to the case's model, scan and device."""
        model = self.case.model
        if model is None or not session.matches(model, self._session_key()[1]):
            return False
        self._session = session
        return True

    @notify.guarded("Cannot update the what-if")
    def update_whatif(self) -> dict[str, Any] | None:
        """Recompute the prediction for the sliders' values (decode only)."""
        if not self.patient_record:
            self.reset_whatif()
            return None
        if self.case.note and not encoder_loaded():
            # loading the encoder takes seconds: it happens in Predict's worker, never on a slider tick
            self.whatif_label.setText("Click Predict first: it loads the note encoder off the UI thread.")
            return None
        session = self.cached_session()
        if session is None:
            return None
        import time

        start = time.perf_counter()
        record = self.whatif_record()
        try:
            values = session.predict(record)
            base = session.predict(self.patient_record)
        except HyperFusionError as err:  # e.g. an over-long note typed after Predict: say so, keep it
            notify.error(_input_error(err))
            return None
        change = session.weight_change(self.patient_record, record)
        compute_ms = (time.perf_counter() - start) * 1e3
        info = self.model.info
        if info.kind != "regression":
            parts = [f"{n} {v:.0%} ({v - b:+.0%})" for n, v, b in zip(info.outputs, values, base)]
        else:
            parts = [f"{info.outputs[0]} {values[0]:.1f} {info.output_unit} ({values[0] - base[0]:+.1f})"]
        ratio = self._place_on_map(session, record)
        story = narrate(info.schema, info.outputs, self.patient_record, record, base, values, kind=info.kind,
                        unit=info.output_unit, map_ratio=ratio, ranges=info.input_stats.get("ehr"))  # fmt: skip
        text = "\n".join(story) + "\nWhat if: " + ", ".join(parts) + " vs. the patient's values"
        for layer_name, relative in change.items():  # one bar per generated layer, full at 100 %
            text += (f"\nGenerated {layer_name}: {change_bar(relative)} {relative:.1%} of its size, "
                     f"{change_words(relative)}")  # fmt: skip
        self.last_story = story
        self.whatif_label.setText(text + f"\n{compute_ms:.1f} ms from cached features")
        entry = {**self._case_columns(), **{f"in_{k}": v for k, v in record.items()},
                 **{f"out_{n}": float(v) for n, v in zip(info.outputs, values)}}  # fmt: skip
        self.explored.append(entry)
        del self.explored[:-MAX_EXPLORED]
        self._draw_whatif(session, record, values)
        return entry

    def _place_on_map(self, session: WhatIfSession, record: dict[str, Any]) -> float | None:
        """The weight-space map: drawn once per session, then the two markers
        move. Returns how far the what-if network moved, in typical distances
        between two training subjects (None without a map)."""
        if self._map_session_key != session.key:
            self._map_session_key = session.key
            why = ""
            if session.weight_map is None:
                why = (
                    "No weight-space map: this model generates no weights"
                    if not self.model.net.hyper_layers()
                    else "No weight-space map in this model file (run scripts/add_weight_map.py)"
                )
            self.weight_map_view.set_map(session.weight_map, why, classes=self.model.info.outputs)
        if session.weight_map is None:
            return None
        patient, whatif = session.map_points([self.patient_record, record])
        self.weight_map_view.set_points(patient, whatif)
        scale = self.weight_map_view.scale
        return float(np.linalg.norm(whatif - patient) / scale) if scale else None

    def _case_columns(self) -> dict[str, str]:
        """The columns that name the case a row was computed for."""
        identity = self.case.identity
        return {"scan": identity.scan_name, "scan_fingerprint": identity.scan_fingerprint,
                "record_fingerprint": identity.record_fingerprint,
                "model": identity.model_name, "model_sha256": identity.model_sha256}  # fmt: skip

    def _kernel_change(self, session: WhatIfSession, record: dict[str, Any]):
        """The first external layer's generated parameters minus the
        patient's, as a 2D matrix: ``(name, matrix)`` or ``None``."""
        generated = session.generated(record)
        if not generated:
            return None
        name, params = next(iter(generated.items()))
        key = "weight" if "weight" in params else "scale"
        delta = params[key] - session.generated(self.patient_record)[name][key]
        return f"{name}.{key}", (delta.reshape(delta.shape[0], -1) if delta.ndim > 1 else delta[None])

    def _held_text(self, curve) -> str:
        """What the response curve holds fixed, in words."""
        schema = self.model.info.schema
        moved = [
            f"{schema[k].display_name} {_short(v)}" for k, v in curve.held.items()
            if k in self.patient_record and str(v) != str(self.patient_record[k])
        ]  # fmt: skip
        if not moved:
            return "Response curve; the other fields held at the patient's values"
        return "Response curve; the other fields at the patient's values except " + ", ".join(moved)

    def _draw_whatif(self, session: WhatIfSession, record: dict[str, Any], values: np.ndarray | None = None) -> None:
        """Redraw the curve and the kernel change; on a slider tick only the
        artists' data change (rebuilding the axes costs more than a frame)."""
        # a full redraw only when what the axes show changes (not for the same patient predicted again)
        layout = (
            session.key, id(self.last_curve), id(self.last_truth), tuple(sorted(self.patient_record.items(), key=str))
        )  # fmt: skip
        change = self._kernel_change(session, record)
        curve = self.last_curve
        x_now = None  # where the what-if star sits on the curve (none while the field is not known)
        if curve is not None and isinstance(record.get(curve.field), (int, float)):
            x_now = float(record[curve.field])
        if self._whatif_layout == layout and self._wi_background is not None:
            if change is not None and self._wi_image is not None:
                self._wi_image.set_data(change[1][self._wi_order])  # the scale stays: colours compare across moves
            if self._wi_line is not None and x_now is not None:
                self._wi_line.set_xdata([x_now, x_now])
            if self._wi_points is not None and x_now is not None and values is not None:
                self._wi_points.set_data([x_now] * len(values), values)
            self._blit_whatif()
            return
        self._whatif_layout = layout
        self._wi_image = self._wi_line = self._wi_points = self._wi_background = None
        fig = self.whatif_figure
        fig.clear()
        fig.subplots_adjust(left=0.16, right=0.85, top=0.94, bottom=0.1, hspace=0.6)  # room for the colour bar's label
        ax = fig.add_subplot(211)
        if curve is not None:
            field_schema = self.model.info.schema
            field = field_schema[curve.field]
            numeric = not isinstance(curve.values[0], str)
            x = curve.values if numeric else list(range(len(curve.values)))
            # a field with a few levels (APOE4: 0, 1, 2; sex) has no values between them: points, not a line
            discrete = not numeric or (field.integer and len(curve.values) <= 5)
            style = {"linestyle": "none", "marker": "o", "markersize": 4} if discrete else {"linewidth": 1.5}
            lines = [ax.plot(x, curve.outputs[:, k], label=name, color=CLASS_COLOURS[k % len(CLASS_COLOURS)],
                             **style)[0] for k, name in enumerate(curve.output_names)]  # fmt: skip
            if self.last_truth is not None:
                for k, name in enumerate(curve.output_names):
                    ax.plot(x, self.last_truth[:, k], linestyle="--", linewidth=1, color=lines[k].get_color(),
                            label=f"{name}, ground truth")  # fmt: skip
            if numeric:
                # the record the curve was swept at (a slider may have moved since)
                self._shade_outside(
                    ax, np.asarray(x, dtype=float), curve_outside(field_schema, curve.held, curve.field, x)
                )
            if not numeric:
                ax.set_xticks(x, curve.values)
            if curve.patient_value is not None:  # the record does not know it: no patient mark
                patient_x = float(curve.patient_value) if numeric else x[curve.values.index(curve.patient_value)]
                ax.axvline(patient_x, color="k", linestyle=":", linewidth=1)
            if x_now is not None and values is not None:
                self._wi_line = ax.axvline(x_now, color="k", linestyle="--", linewidth=1, animated=True)
                # the what-if prediction on each curve: it moves along the curve as the slider moves
                self._wi_points = ax.plot([x_now] * len(values), values, linestyle="none", marker="*", markersize=8,
                                          color="k", markerfacecolor="white", animated=True)[0]  # fmt: skip
            unit = f" ({field.unit})" if field.unit else ""
            ax.set_xlabel(f"{field.display_name}{unit}; dotted: patient's value, dashed and stars: what if",
                          fontsize=6)  # fmt: skip
            ax.set_ylabel(self.model.info.output_unit or "probability", fontsize=6)
            ax.set_title(self._held_text(curve), fontsize=6)
            ax.legend(fontsize=6)
            ax.tick_params(labelsize=6)
        else:
            ax.text(0.5, 0.5, "Response curve: choose a field", ha="center", va="center", fontsize=7)
            ax.set_axis_off()
        ax2 = fig.add_subplot(212)
        if change is not None:
            name, matrix = change
            layer = name.rsplit(".", 1)[0]
            reference = session.generated(self.patient_record)[layer][name.rsplit(".", 1)[1]]
            # one fixed scale: the patient's largest generated value, so a colour means the same on every move
            limit = float(np.abs(reference).max()) or 1e-6
            # rows: output channels, the ones the EHR values can move most on top (fixed for the session)
            sensitivity = session.channel_sensitivity(layer)
            self._wi_order = np.argsort(-sensitivity) if sensitivity is not None else np.arange(len(matrix))
            self._wi_image = ax2.imshow(matrix[self._wi_order], cmap="PiYG", vmin=-limit, vmax=limit, aspect="auto",
                                        interpolation="nearest", animated=True)  # fmt: skip
            bar = fig.colorbar(self._wi_image, ax=ax2, fraction=0.05, pad=0.02)
            bar.set_label("change (scale: the patient's\nlargest generated value)", fontsize=5)
            bar.ax.tick_params(labelsize=5)
            ax2.set_title(f"Generated layer {layer}: change from the patient's own weights", fontsize=6)
            ax2.set_ylabel("output channels\n(most EHR-sensitive on top)", fontsize=5)
            ax2.set_xlabel(f"inputs x kernel ({matrix.shape[1]} values per channel)", fontsize=5)
            ax2.tick_params(labelsize=5)
        else:
            why = (
                "MedFusionNet generates no weights: the EHR and the note\nenter its label decoder as tokens"
                if self.model.info.config.backbone == "medfusion"
                else "this model has no generated weights"
            )
            ax2.text(0.5, 0.5, why, ha="center", va="center", fontsize=7)
            ax2.set_axis_off()
        # a full draw now; slider ticks then blit only the two changing artists
        self.whatif_canvas.draw_idle()

    @staticmethod
    def _shade_outside(ax, x: np.ndarray, outside: np.ndarray) -> None:
        """Grey bands where the curve leaves the training data given the
        other fields (:mod:`~napari_hyperfusion.analysis.support`).

        Args:
            ax: the curve's matplotlib axes.
            x: the curve's values of the swept field, ``[n]`` (evenly spaced).
            outside: ``bool [n]``, from :func:`~napari_hyperfusion.analysis.support.curve_outside`.
        """
        if not outside.any():
            return
        step = (x[1] - x[0]) / 2 if len(x) > 1 else 0.0
        edges = np.flatnonzero(np.diff(np.r_[0, outside.astype(int), 0]))  # starts and ends of the runs
        for n, (start, stop) in enumerate(zip(edges[::2], edges[1::2])):
            label = "outside the training data" if n == 0 else None  # given the other fields: the docs say how
            ax.axvspan(x[start] - step, x[stop - 1] + step, color="0.85", zorder=0, linewidth=0, label=label)

    def _on_whatif_drawn(self, event: Any = None) -> None:
        """After any full draw (first layout, resize): keep the static
        background and paint the animated artists on it."""
        canvas = self.whatif_canvas
        self._wi_background = canvas.copy_from_bbox(self.whatif_figure.bbox)
        for artist in (self._wi_image, self._wi_line, self._wi_points):
            if artist is not None:
                self.whatif_figure.draw_artist(artist)
        canvas.blit(self.whatif_figure.bbox)

    def _blit_whatif(self) -> None:
        canvas = self.whatif_canvas
        canvas.restore_region(self._wi_background)
        for artist in (self._wi_image, self._wi_line, self._wi_points):
            if artist is not None:
                self.whatif_figure.draw_artist(artist)
        canvas.blit(self.whatif_figure.bbox)

    def ground_truth(self) -> dict[str, Any] | None:
        """The scan's ground truth, for the dashed curves.

        Returns:
            The scan layer's record with the generator's ``*_PERMILLE``
            columns when the layer is a SYNTHETIC sample subject and the
            model answers one of the generator's tasks (CN / MCI / AD, or
            brain age); else None.
        """
        task = self._truth_task()
        if task is None or not self.case.scan_name:
            return None
        layer = next((lyr for lyr in self.viewer.layers if lyr.name == self.case.scan_name), None)
        if layer is None or not layer.metadata.get("synthetic"):
            return None
        record = layer.metadata.get("ehr_record") or {}
        return dict(record) if has_ground_truth(record, task) else None

    def _truth_task(self) -> str | None:
        """The generator's task the model answers ("ad" or "brain_age"), or None."""
        return truth_task(self.model.info) if self.model is not None else None

    def _on_truth_toggled(self, checked: bool) -> None:
        if self.last_curve is not None:
            self.show_response_curve()

    def _truth_curve(self, record: dict[str, Any], field: str, values: list) -> np.ndarray | None:
        """The generator's answer over ``values`` of ``field``. A value the
        model filled in is not a measurement: unless the slider moved it, it
        stays missing for the truth (which missing values are is evidence)."""
        truth = self.ground_truth() if self.truth_box.isChecked() else None
        if truth is not None and self._truth_task() == "brain_age":
            # the posterior median age given sex and the true volumes (the whole brain is in view)
            rows = pd.DataFrame([{**truth, field: value} for value in values])
            return brain_age_estimate(rows)[:, None].astype(float)
        if truth is None or field not in EHR_FIELDS:
            return None
        known = {name: (np.nan if value is None else value) for name, value in record.items()}
        info = self.model.info
        # the truth this model can reach: the volumes outside its views are unknown to both
        seen = seen_volumes(info.image if info.config.uses_image else None)
        return ad_truth_curve({**truth, **known}, field, values, seen)

    def clear_curve(self) -> None:
        """No response curve (the plot shows the what-if alone)."""
        if self.last_curve is None:
            return
        self.last_curve = self.last_truth = None
        if self.patient_record:
            self.update_whatif()

    @notify.guarded("Cannot draw the response curve")
    def show_response_curve(self) -> None:
        """The output over the chosen field's range, in one batched decode."""
        session = self.cached_session()
        if session is None or not self.curve_field.currentData():
            return
        if not self.patient_record:
            self.reset_whatif()
        field = self.curve_field.currentData()
        # swept at the other fields' what-if values; the dotted mark is the patient's own value
        try:
            self.last_curve = session.response_curve(self.whatif_record(), field)
        except HyperFusionError as err:
            notify.error(_input_error(err))
            return
        self.last_curve.patient_value = self.patient_record.get(field)
        self.last_truth = self._truth_curve(self.whatif_record(), field, self.last_curve.values)
        self._draw_whatif(session, self.whatif_record(), session.predict(self.whatif_record()))

    def _saliency_pair(self, what: str):
        """Saliency at the patient's values and at the what-if values, or None (said)."""
        from ..analysis.explain import attribute_image

        case = self.case
        if self.model is None or not self.model.info.config.uses_image or not self.patient_record or case.scan is None:
            notify.error(f"The {what} needs an image model, a scan and a prediction (click Predict)")
            return None
        try:
            target = self.target() or None
            before = attribute_image(
                self.model, case.scan, self.patient_record, "saliency", target=target, note=case.note
            )
            after = attribute_image(
                self.model, case.scan, self.whatif_record(), "saliency", target=target, note=case.note
            )
        except HyperFusionError as err:
            notify.error(f"Cannot compute the {what}: {err}")
            return None
        return before, after

    def _overlay(self, attribution, record: dict[str, Any]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        identity = self.case.identity
        return overlay_layers(
            attribution, self.case.scan_name, self.model.info.name, self.model.sha256, dict(record),
            scan_fingerprint=identity.scan_fingerprint, case=identity.describe(),
        )  # fmt: skip

    @notify.guarded("Cannot show the saliency shift")
    def saliency_shift(self) -> None:
        """Saliency at the what-if values minus at the patient's, as a signed overlay."""
        pair = self._saliency_pair("saliency shift")
        if pair is None:
            return
        before, after = pair
        after.maps = after.maps - before.maps
        after.method, after.signed = "saliency_shift", True
        for data, kwargs in self._overlay(after, self.whatif_record()):
            kwargs["metadata"][OVERLAY_KEY]["kind"] = "saliency shift"
            kwargs["metadata"]["attribution"]["patient_values"] = dict(self.patient_record)
            put_overlay(self.viewer, data, kwargs, source=layer_named(self.viewer, self.case.scan_name))

    def _prediction_words(self, values: np.ndarray) -> str:
        info = self.model.info
        if info.kind == "regression":
            return f"{info.outputs[0]} {values[0]:.1f} {info.output_unit}"
        return ", ".join(f"P({n}) {v:.0%}" for n, v in zip(info.outputs, values))

    @notify.guarded("Cannot show the twin view", default=False)
    def twin_view(self) -> bool:
        """Show the patient and the what-if twin side by side: both
        saliency maps on one scale, their difference, both predictions.
        Returns whether it was shown."""
        from .linked_views import TwinView, close_with_window

        layer = self.scan_layer()
        session = self.cached_session()
        pair = self._saliency_pair("twin view") if session is not None else None
        if pair is None or layer is None:
            if pair is not None:
                notify.error("The twin view needs the scan's layer in the viewer")
            return False
        before, after = pair
        whatif = self.whatif_record()
        patient_out, twin_out = session.predict(self.patient_record), session.predict(whatif)
        difference = replace(after, maps=after.maps - before.maps, method="saliency_difference", signed=True)
        maps = [self._overlay(before, self.patient_record)[0], self._overlay(after, whatif)[0],
                self._overlay(difference, whatif)[0]]  # fmt: skip
        # patient and twin on one colour scale, so brighter means more salient in both canvases:
        # each map is in percent of its own magnitude; bring both to percent of the larger one
        raws = [kwargs["metadata"]["attribution"]["raw_per_100_percent"] for _, kwargs in maps[:2]]
        top = max(raws)
        for i, (data, kwargs) in enumerate(maps[:2]):
            maps[i] = (data * np.float32(raws[i] / top), kwargs)
            kwargs["metadata"]["attribution"]["raw_per_100_percent"] = top
            kwargs["contrast_limits"] = (0.0, 100.0)
        # the difference in the same unit (so it is twin minus patient, voxel by voxel), at its own contrast
        data, kwargs = maps[2]
        raw = kwargs["metadata"]["attribution"]["raw_per_100_percent"]
        maps[2] = (data * np.float32(raw / top), kwargs)
        kwargs["metadata"]["attribution"]["raw_per_100_percent"] = top
        kwargs["contrast_limits"] = (-100.0 * raw / top, 100.0 * raw / top)
        schema = self.model.info.schema
        moved = [
            f"{schema[k].display_name} {_short(whatif[k])} (patient {_short(v)})"
            for k, v in self.patient_record.items() if k in whatif and str(whatif[k]) != str(v)
        ]  # fmt: skip
        target = before.target
        titles = [
            f"Patient: {self._prediction_words(patient_out)}\nsaliency for {target}",
            f"What-if twin: {', '.join(moved) or 'the same values'}\n{self._prediction_words(twin_out)}",
            f"Difference, twin minus patient\n{maps[2][1]['metadata']['attribution']['legend']}",
        ]
        header = f"Twin view of {self.case.identity.describe()}"
        if self.model.info.synthetic_data:
            header += " - SYNTHETIC data and demo model, not for diagnosis"
        if self.twin is None:
            self.twin = TwinView(self.viewer)
            self.case.changed.connect(lambda *a: self.twin is not None and self.twin.mark_stale("the case changed"))
            window = getattr(self.viewer, "window", None)
            if window is not None and hasattr(window, "add_dock_widget"):
                self._twin_dock = window.add_dock_widget(self.twin, area="bottom", name="Twin view")
                close_with_window(self.twin)
        if self._twin_dock is not None:
            self._twin_dock.setVisible(True)  # closed with its X earlier: shown again
        plane, radiological = self.view()
        self.twin.show_case(layer, maps, titles, header, plane, radiological)
        return True

    def export_exploration(self, path: str | Path) -> Path:
        """The values tried and their predictions (and the last response
        curve, if any) as CSV, written atomically."""
        import pandas as pd

        from ..io.atomic import write_text_atomically
        from ..io.csv_text import to_csv_text

        if not self.explored and self.last_curve is None:
            raise HyperFusionError(NOTHING_TO_EXPORT)
        frame = pd.DataFrame(self.explored).assign(kind="slider")
        if self.last_curve is not None:
            c = self.last_curve
            curve = pd.DataFrame({**self._case_columns(), f"in_{c.field}": c.values,
                                  **{f"out_{n}": c.outputs[:, k] for k, n in enumerate(c.output_names)}})  # fmt: skip
            if self.last_truth is not None:  # the generator's exact answer beside the model's
                for k, n in enumerate(c.output_names):
                    curve[f"truth_{n}"] = self.last_truth[:, k]
            frame = pd.concat([frame, curve.assign(kind=f"curve {c.field}")], ignore_index=True)
        frame["synthetic_model"] = bool(self.model and self.model.info.synthetic_data)
        return write_text_atomically(path, to_csv_text(frame))

    def save_summary(self, path: str | Path) -> Path:
        """A standalone 16:9 slide of the exploration (PNG or PDF by suffix):
        the case, both predictions, the response curve, the weight-space map,
        the narration and the synthetic-data label."""
        from matplotlib.figure import Figure

        session = self.cached_session()
        if session is None or not self.patient_record:
            raise HyperFusionError(NOTHING_TO_SUMMARISE)
        info = self.model.info
        record = self.whatif_record()
        identity = self.case.identity
        fig = Figure(figsize=(13.33, 7.5))
        label = "SYNTHETIC-data model - " if info.synthetic_data else ""
        fig.suptitle(f"What if? {identity.scan_name}  |  {info.name}", fontsize=14, x=0.02, ha="left", y=0.975)
        fig.text(0.02, 0.915, f"{label}research and teaching only, not for diagnosis.  {identity.describe()}",
                 fontsize=8, color="#a05000")  # fmt: skip
        grid = fig.add_gridspec(2, 2, left=0.06, right=0.97, top=0.86, bottom=0.2, wspace=0.22, hspace=0.45)
        patient, whatif = session.predict(self.patient_record), session.predict(record)
        ax = fig.add_subplot(grid[0, 0])
        x = np.arange(len(info.outputs))
        colours = [CLASS_COLOURS[k % len(CLASS_COLOURS)] for k in x]
        ax.bar(x - 0.2, patient, 0.4, color=colours, edgecolor="black", label="patient")
        ax.bar(x + 0.2, whatif, 0.4, color=colours, edgecolor="black", hatch="//", alpha=0.6, label="what if")
        for xi, a, b in zip(x, patient, whatif):
            fmt = (lambda v: f"{v:.1f}") if info.kind == "regression" else (lambda v: f"{v:.0%}")
            ax.text(xi - 0.2, a, fmt(a), ha="center", va="bottom", fontsize=8)
            ax.text(xi + 0.2, b, fmt(b), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, info.outputs)
        ax.set_ylabel(info.output_unit or "probability")
        if info.kind != "regression":
            ax.set_ylim(0, 1.1)
        ax.legend(fontsize=8)
        ax.set_title("Prediction: the patient's values (plain) and the what-if values (hatched)", fontsize=9)
        ax2 = fig.add_subplot(grid[1, 0])
        if self.last_curve is not None:
            c = self.last_curve
            numeric = not isinstance(c.values[0], str)
            xs = c.values if numeric else list(range(len(c.values)))
            spec = info.schema[c.field]
            discrete = not numeric or (spec.integer and len(c.values) <= 5)
            style = {"linestyle": "none", "marker": "o"} if discrete else {}
            for k, n in enumerate(c.output_names):
                line = ax2.plot(xs, c.outputs[:, k], label=n, color=CLASS_COLOURS[k % len(CLASS_COLOURS)], **style)[0]
                if self.last_truth is not None:
                    ax2.plot(xs, self.last_truth[:, k], "--", color=line.get_color(), label=f"{n}, ground truth")
            if numeric:
                self._shade_outside(ax2, np.asarray(xs, dtype=float), curve_outside(info.schema, c.held, c.field, xs))
            if numeric and isinstance(c.patient_value, (int, float)):
                ax2.axvline(float(c.patient_value), color="k", linestyle=":", label="patient's value")
            if numeric and isinstance(record.get(c.field), (int, float)):
                ax2.axvline(float(record[c.field]), color="k", linestyle="--", label="what-if value")
            if not numeric:
                ax2.set_xticks(xs, c.values)
            ax2.set_xlabel(spec.display_name + (f" ({spec.unit})" if spec.unit else ""))
            ax2.set_ylabel(info.output_unit or "probability")
            ax2.set_title(self._held_text(c), fontsize=9)
            ax2.legend(fontsize=7)
        else:
            ax2.axis("off")
            ax2.text(0.5, 0.5, "No response curve was computed\n(choose a field and click Response curve)",
                     ha="center", va="center", fontsize=9, color="#808080")  # fmt: skip
        ax3 = fig.add_subplot(grid[:, 1])
        if session.weight_map is not None:
            p_line, w_line, move = draw_weight_map(ax3, session.weight_map, size=8, classes=self.model.info.outputs)
            p, w = (np.r_[v, 0.0][:2] for v in session.map_points([self.patient_record, record]))
            p_line.set_data([p[0]], [p[1]])
            w_line.set_data([w[0]], [w[1]])
            move.set_data([p[0], w[0]], [p[1], w[1]])
        else:
            ax3.axis("off")
            ax3.text(0.5, 0.5, "This model generates no weights: no weight-space map", ha="center", va="center",
                     fontsize=9, color="#808080")  # fmt: skip
        base = session.predict(self.patient_record)
        ratio = self._place_on_map(session, record)
        story = narrate(info.schema, info.outputs, self.patient_record, record, base, whatif, kind=info.kind,
                        unit=info.output_unit, map_ratio=ratio, ranges=info.input_stats.get("ehr"))  # fmt: skip
        fig.text(0.02, 0.03, "\n".join(story), fontsize=10, va="bottom", wrap=True)
        from ..io.atomic import atomic_write

        suffix = Path(path).suffix.lower() or ".png"
        without_math(fig)  # names come from the model file

        def save(tmp) -> None:
            with rc_context({"text.parse_math": False}):
                fig.savefig(tmp, format=suffix.lstrip("."))

        atomic_write(path, save)
        return Path(path)

    def _ask_export(self) -> None:
        if not self.explored and self.last_curve is None:  # said before a file dialog asks for a name
            notify.error(NOTHING_TO_EXPORT)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export the exploration", "whatif.csv", "CSV (*.csv)")
        if path:
            try:
                self.export_exploration(path)
            except OSError as err:
                notify.error(f"Cannot write {path}: {err}")
            except HyperFusionError as err:
                notify.error(str(err))

    def _ask_summary(self) -> None:
        if not self._session_matches() or not self.patient_record:
            notify.error(NOTHING_TO_SUMMARISE)
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save a summary figure", "whatif.pdf", "PDF (*.pdf);;PNG (*.png)")
        if path:
            try:
                self.save_summary(path)
            except (ValueError, OSError, HyperFusionError) as err:
                notify.error(str(err))
