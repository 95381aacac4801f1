"""The napari panel: pick a model and a scan, fill in the record, Predict,
Explain, and ask "what if?".

The panel is a composition of small widgets around one plain model, the
:class:`~napari_hyperfusion.analysis.case.Case` (scan, record, note, model,
device, and the results computed for them):

    ModelPicker    -> case.model            (model_picker.py)
    PatientForm    -> case.scan/record/note (patient_form.py)
    PrepareSection    registers the scan to MNI, adds it with QC (prepare_section.py)
    ViewControls      plane, neurological / radiological, window, side letters, the canvas line,
                      three linked planes and lecture size (view_controls.py, linked_views.py)
    ScenarioPlayer    lecture scenarios stepped with PageDown / PageUp, through ScenarioActions (scenario_player.py)
    JobRunner         progress, status, Cancel for every long job (jobs.py)
    ResultView     <- case's prediction, or the last one marked stale
    ExplainSection <- case; overlays and EHR / note attributions
    WhatIfSection  <- case; sliders over cached image features; the twin view (linked_views.py)

Each widget receives the case (and the job runner where it starts work);
none reaches into another. Long work runs in ``thread_worker`` threads; a
result is stored for the case it was computed for and is dropped if the
case changed meanwhile.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDockWidget,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..analysis.case import Case
from ..analysis.scenario import ScenarioError
from ..analysis.whatif import WhatIfSession
from ..data.notes import embed_notes, encoder_loaded
from ..errors import HyperFusionError
from ..infer.subject import SubjectPrediction, predict_subject_and_features
from ..nn.devices import available_devices, resolve_device
from . import notify
from .explain_section import ExplainSection
from .jobs import JobRunner
from .layers import overlays_of
from .model_picker import ModelPicker
from .patient_form import PatientForm
from .plain import PlainCanvas
from .prepare_section import PrepareSection
from .result_view import PREDICTION, ResultView
from .scenario_player import ScenarioActions, ScenarioPlayer
from .view_controls import LECTURE_SCALE, ViewControls
from .whatif_section import WhatIfSection

if TYPE_CHECKING:
    import napari

__all__ = ["HyperFusionPanel", "RESULT_KEY"]

RESULT_KEY = "hyperfusion_prediction"
PANEL_WIDTH = 440  # px: the dock's width when napari first shows it
PLUGIN_NAME = "napari-hyperfusion"  # the manifest's name, for File > Open Sample


def fit_width(root: QWidget, chars: int = 12) -> None:
    """Let every drop-down shrink to about ``chars`` characters (long model and
    layer names elide; the full text is the tooltip), so the panel fits a
    laptop's dock without sideways scrolling."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)
        combo.currentTextChanged.connect(combo.setToolTip)
        combo.setToolTip(combo.currentText())


def _section(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.addWidget(widget)
    return box


class HyperFusionPanel(QWidget):
    """The main dock widget (see the module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.case = Case()
        self.jobs = JobRunner()
        self._shown_reason: str | None = None  # the "why Predict is off" text on the status line
        self._after_predict: list = []  # callbacks (a lecture step) for when the next prediction is in
        self.model_picker = ModelPicker(self.case)
        self.patient = PatientForm(self.case, napari_viewer)
        self.preparer = PrepareSection(self.case, self.jobs, napari_viewer, self.patient.current_layer)
        self.result_view = ResultView(self.case)
        self.explainer = ExplainSection(self.case, self.jobs, napari_viewer, self.check)
        self.whatif = WhatIfSection(
            self.case, napari_viewer, lambda: self.explainer.target_combo.currentText(),
            view=lambda: (self.view_controls.plane.currentText(), self.view_controls.radiological),
            scan_layer=self.patient.current_layer,
        )  # fmt: skip
        self.view_controls = ViewControls(napari_viewer, self.patient.current_layer)

        # a fixed bar: the safety line, Predict, Cancel, progress, status and the answer stay in view
        # while everything below scrolls (the panel is taller than a laptop screen)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(2)
        bar = self.action_bar = QWidget()
        bar.setObjectName("action_bar")
        bar_layout = QVBoxLayout(bar)
        bar_layout.setContentsMargins(6, 4, 6, 4)
        banner = QLabel("Research and teaching use only - not a diagnostic device.")
        banner.setStyleSheet("color: #f0a030; font-weight: bold;")
        banner.setWordWrap(True)
        bar_layout.addWidget(banner)
        self.predict_button = QPushButton("Predict")
        self.predict_button.setObjectName("predict_button")
        bar_layout.addWidget(self.predict_button)
        bar_layout.addWidget(self.jobs)
        bar_layout.addWidget(self.result_view.headline)
        # a lecture step's text, in view on whichever tab the step shows
        self.lecture_caption = QLabel()
        self.lecture_caption.setObjectName("lecture_caption")
        self.lecture_caption.setTextFormat(Qt.TextFormat.PlainText)  # a scenario file's text, as written
        self.lecture_caption.setWordWrap(True)
        self.lecture_caption.setStyleSheet("font-size: 13pt; color: #8fd0ff;")
        self.lecture_caption.setVisible(False)
        bar_layout.addWidget(self.lecture_caption)
        outer.addWidget(bar)
        inner = QWidget()
        scroll = self.scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer.addWidget(scroll, 1)
        layout = QVBoxLayout(inner)
        layout.addWidget(_section("Model", self.model_picker))
        layout.addWidget(_section("Patient", self.patient))

        run_row = QHBoxLayout()
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.device_combo.setToolTip("where the network runs; auto picks CUDA when present")
        run_row.addWidget(QLabel("Device:"))
        run_row.addWidget(self.device_combo)
        self.device_label = QLabel()
        run_row.addWidget(self.device_label)
        layout.addLayout(run_row)
        layout.addWidget(_section("Result", self.result_view))
        # the tools after a prediction share one place: What if is a click away, not three screens down
        self.tabs = QTabWidget()
        self.tabs.setObjectName("tools_tabs")
        self.tabs.addTab(self.whatif, "What if...")
        self.tabs.addTab(self.explainer, "Explain (Captum)")
        self.tabs.addTab(self.preparer, "Prepare")
        self.tabs.addTab(self.view_controls, "View")
        self.lecture = ScenarioPlayer(self._scenario_actions(), napari_viewer)
        self.tabs.addTab(self.lecture, "Lecture")
        layout.addWidget(self.tabs)
        layout.addStretch(1)

        self.device_combo.currentTextChanged.connect(self._on_device_chosen)
        self.predict_button.clicked.connect(self.predict)
        self.case.changed.connect(self._on_case_changed)
        self.jobs.busy_changed.connect(self._validate)
        self.jobs.refused.connect(self._on_refused)
        self.view_controls.lecture_changed.connect(self.set_lecture_size)

        fit_width(self)
        if self.model_picker.paths:
            self.open_model(self.model_picker.paths[0])
        self._validate()

    def sizeHint(self) -> QSize:  # noqa: N802  (Qt's name)
        """Wide enough for the charts' labels; narrow enough to leave a
        1366 x 768 screen's canvas most of the window."""
        hint = super().sizeHint()
        return QSize(PANEL_WIDTH, hint.height())

    # -- the parts, by the names scripts and tests use -------------------------
    @property
    def model(self):
        return self.case.model

    @property
    def last_result(self) -> SubjectPrediction | None:
        """The prediction for the case on screen (None if there is none, or it is stale)."""
        return self.case.result(PREDICTION)

    @property
    def status(self) -> QLabel:
        return self.jobs.status

    @property
    def busy(self) -> bool:
        return self.jobs.busy

    def open_model(self, path: str | Path) -> bool:
        """Load a model file; on failure keep the previous model and say why."""
        self.model_picker.device = self.device_combo.currentText()
        return self.model_picker.open(path)

    def show_section(self, widget: QWidget) -> None:
        """Bring ``widget`` (e.g. ``panel.explainer``) into view: its tab, then scroll to it."""
        from qtpy.QtCore import QPoint

        if self.tabs.indexOf(widget) >= 0:
            self.tabs.setCurrentWidget(widget)
        top = widget.mapTo(self.scroll.widget(), QPoint(0, 0)).y()
        self.scroll.verticalScrollBar().setValue(max(top - 40, 0))  # the section's title stays in view

    def cancel(self) -> None:
        self.jobs.cancel()

    def explain(self) -> None:
        self.explainer.explain()

    # -- lecture scenarios: what a scenario may do to the panel ---------------------
    def _scenario_actions(self) -> ScenarioActions:
        def open_subject(key: str) -> bool:
            before = self.case.identity.scan_key
            layer = next((la for la in self.viewer.layers if la.metadata.get("subject_id") == key), None)
            if layer is None:
                try:
                    self.viewer.open_sample(PLUGIN_NAME, key)
                except (KeyError, ValueError):
                    raise ScenarioError(f"{key!r} is not one of this plugin's sample subjects") from None
                layer = next(la for la in self.viewer.layers if la.metadata.get("subject_id") == key)
            combo = self.patient.layer_combo
            combo.setCurrentIndex(combo.findData(id(layer)))
            return self.case.identity.scan_key != before

        def open_model(name: str) -> bool:
            from ..resources import models_dir

            path = (
                models_dir() / f"{name}.safetensors"
                if "/" not in name and not name.endswith(".safetensors")
                else Path(name)
            )
            if self.model is not None and self.model.path.resolve() == path.resolve():
                return False
            if not self.open_model(path):
                raise ScenarioError(f"the model {name!r} cannot be opened (see the message before)")
            return True

        def predict(then) -> None:
            self._after_predict.append(then)
            self.predict()

        def set_whatif(values: dict) -> None:
            self.show_section(self.whatif)
            self.whatif.reset_whatif()
            for name, value in values.items():
                self.whatif.set_whatif_value(name, value)
            self.whatif.update_whatif()

        def curve(name: str | None) -> None:
            if name is None:
                self.whatif.clear_curve()
                return
            self.whatif.curve_field.setCurrentIndex(self.whatif.curve_field.findData(name))
            self.whatif.show_response_curve()

        def overlay(method: str | None) -> None:
            if method is None:  # this step shows no map: remove those of the case's scan
                for layer in overlays_of(self.viewer, self.case.identity.scan_fingerprint):
                    self.viewer.layers.remove(layer)
                return
            combo = self.explainer.method_combo
            combo.setCurrentIndex(combo.findData(method))
            self.explain()

        def caption(text: str) -> None:
            self.lecture_caption.setText(text)
            self.lecture_caption.setVisible(bool(text))

        return ScenarioActions(
            open_subject=open_subject, open_model=open_model, predict=predict,
            schema=lambda: self.model.info.schema, set_whatif=set_whatif, curve=curve,
            truth=lambda on: self.whatif.truth_box.setChecked(on and self.whatif.truth_box.isEnabled()),
            plane=lambda name: self.view_controls.plane.setCurrentText(name), overlay=overlay, caption=caption,
        )  # fmt: skip

    # -- state ------------------------------------------------------------------
    def set_lecture_size(self, on: bool) -> None:
        """Text and figures large enough for the back of a lecture hall (the
        View tab's "Lecture size"); the canvas text is the View tab's."""
        scale = LECTURE_SCALE if on else 1.0
        for part in (self.scroll.widget(), self.action_bar):  # the fixed bar's answer too
            part.setStyleSheet(f"font-size: {round(10 * scale)}pt;" if on else "")
        for canvas in self.findChildren(PlainCanvas):
            canvas.scale_text(scale)
        # larger text needs a wider dock, or lines run off its right edge
        dock = self.parentWidget()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        if dock is not None and isinstance(dock.parentWidget(), QMainWindow):
            if on:
                self._normal_width = dock.width()
            width = getattr(self, "_normal_width", dock.width())
            dock.parentWidget().resizeDocks([dock], [int(width * scale)], Qt.Orientation.Horizontal)

    def _on_refused(self, message: str) -> None:
        """A scan the input gate sends to Prepare: show the Prepare tab."""
        self._after_predict = []  # a lecture step waiting for this prediction does not run
        if "Prepare it first" in message:
            self.tabs.setCurrentWidget(self.preparer)

    def _on_case_changed(self, *args: Any) -> None:
        model = self.case.model
        self.device_label.setText(f"using {model.device}" if model is not None else "")
        self._validate()

    def _on_device_chosen(self, choice: str) -> None:
        model = self.case.model
        if model is None:
            return
        try:
            device = resolve_device(choice)
        except HyperFusionError as err:  # say why, keep the current device
            notify.error(str(err))
            return
        previous = model.device
        try:
            model.net.to(device)
        except RuntimeError as err:  # e.g. out of GPU memory: stay where it was
            model.net.to(previous)
            notify.error(f"Cannot move the model to {device}: {err}")
            self.device_combo.setCurrentText("auto" if previous.type == "cpu" else str(previous))
            return
        model.device = device
        self.model_picker.device = choice  # the next model opens where this one runs
        self.case.device_changed()

    def check(self) -> tuple[bool, str]:
        """Whether the case can be computed, and if not, why."""
        model = self.case.model
        if model is None:
            return False, "Choose a model."
        if model.info.config.uses_image and self.case.scan is None:
            return False, self.patient.scan_error or "Open a scan."
        try:
            filled, _ = model.info.schema.fill(self.case.record)
        except HyperFusionError as err:
            return False, str(err)
        self.patient.show_imputed(filled)
        return True, ""

    def _validate(self, *args: Any) -> tuple[bool, str]:
        ok, reason = self.check()
        busy = self.jobs.busy
        self.predict_button.setEnabled(ok and not busy)
        self.device_combo.setEnabled(not busy)  # the worker uses the network: do not move it mid-job
        self.predict_button.setToolTip("" if ok else reason)
        self.explainer.explain_button.setEnabled(ok and not busy)
        if not busy:
            # show why Predict is off; once fixed, clear only that reason (keep "done", "cancelled", ...)
            if not ok:
                self.status.setText(reason)
            elif self.status.text() == self._shown_reason:
                self.status.setText("")
            self._shown_reason = reason if not ok else None
        return ok, reason

    # -- prediction -------------------------------------------------------------
    def predict(self) -> None:
        """Start a prediction in a worker thread; the result is stored for
        the case it was computed for and shown by the result view."""
        ok, reason = self._validate()
        if not ok:
            notify.error(reason)
            return
        identity, model, scan, record, note = self.case.snapshot()
        layer = self.patient.current_layer()

        def job():
            if note and not encoder_loaded():
                yield "loading the note encoder (first use: a few seconds)"
                embed_notes([note])
            yield "checking the scan, resampling it onto the model grid"
            age = record.get("AGE") if model.info.task == "brain_age" else None  # the form's "for the gap" field
            result, features = predict_subject_and_features(
                model, scan, record, note=note, chronological_age=age, scan_name=f"'{identity.scan_name}'"
            )
            # the sliders decode from the prediction's own image features: no second pass of the encoder
            session = WhatIfSession(model, scan, identity.scan_key, note=note, features=features)
            return result, session

        self.jobs.start(job, lambda out: self._on_predicted(out, identity, layer), "starting...", "Cannot predict")

    def _on_predicted(self, out: tuple[SubjectPrediction, WhatIfSession], identity: Any, layer: Any) -> None:
        result, session = out
        result.extra["click_to_result_s"] = self.jobs.elapsed()  # until its chart is drawn: see ResultView
        result.extra["clicked_at"] = self.jobs.started_at
        result.extra["case"] = identity.describe()
        self.whatif.adopt_session(session)
        if not self.case.store(PREDICTION, identity, result):
            self.status.setText("The case changed while predicting; that result was dropped. Click Predict again.")
            return
        if layer is not None and layer in self.viewer.layers:
            layer.metadata[RESULT_KEY] = {**result.to_metadata(), "case": identity.__dict__}
        self.status.setText("done")
        waiting, self._after_predict = self._after_predict, []
        for then in waiting:  # a lecture step's what-if values, curve, map
            then()
