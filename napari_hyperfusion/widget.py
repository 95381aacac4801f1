"""The napari panel: pick a model and a scan, fill in the record, Predict.

A thin view over the UI-free core (``model_file``, ``schema``,
``preprocess``, ``inference``): this module only builds widgets, keeps the
form in step with the model's schema and runs :func:`predict_subject` in a
``thread_worker`` so that the window never freezes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import threading

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .device import available_devices, resolve_device
from .explain import IMAGE_METHODS, Cancelled, attribute_image, attribute_tabular
from .inference import SubjectPrediction, predict_subject
from .model_file import LoadedModel, ModelFileError, load_model, read_info
from .nifti_io import layer_affine
from .overlays import OVERLAY_KEY, overlay_layers
from .preprocess import ImageError, scan_from_array
from .records import RecordError, read_record_table, record_from_row
from .resources import shipped_models
from .schema import Field, SchemaError, TabularSchema
from .whatif import WhatIfSession, field_grid

if TYPE_CHECKING:
    import napari

__all__ = ["HyperFusionPanel", "FieldEditor"]

OPEN_FILE = "Open model file..."
METHOD_LABELS = {
    "saliency": "Saliency (fast)",
    "gradcam": "Grad-CAM (last stage)",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
}
# Integrated Gradients' completeness error, as a share of the attributed change, above which we warn
IG_DELTA_WARNING = 0.05
RESULT_KEY = "hyperfusion_prediction"


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


class FieldEditor(QWidget):
    """One EHR field: a spin box (number, with unit and range) or a choice
    (category), and a "not known" tick where the model can impute it. While
    ticked, the box shows the imputed value, greyed out."""

    def __init__(self, field: Field, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = field
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        if field.kind == "category":
            self.input: QWidget = QComboBox()
            self.input.addItems(list(field.categories))
        else:
            box = QDoubleSpinBox()
            box.setDecimals(0 if field.integer or field.kind == "binary" else 2)
            box.setRange(
                field.minimum if field.minimum is not None else -1e6,
                field.maximum if field.maximum is not None else 1e6,
            )
            if field.kind == "binary":
                box.setRange(0, 1)
            if field.unit:
                box.setSuffix(f" {field.unit}")
            box.setValue(field.fill_value if isinstance(field.fill_value, (int, float)) else field.mean)
            box.setKeyboardTracking(False)
            self.input = box
        self.input.setToolTip(f"{field.display_name}: {field.range_text()}. {field.description}".strip())
        self.input.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        layout.addWidget(self.input)
        self.unknown = QCheckBox("not known")
        self.unknown.setToolTip("the model fills it in from the fields that are known (shown greyed out)")
        self.unknown.setVisible(field.fill != "required")
        self.unknown.toggled.connect(lambda on: self.input.setEnabled(not on))
        layout.addWidget(self.unknown)

    @property
    def changed(self):
        return self.input.currentIndexChanged if isinstance(self.input, QComboBox) else self.input.valueChanged

    def value(self) -> float | str | None:
        if self.unknown.isChecked():
            return None
        if isinstance(self.input, QComboBox):
            return self.input.currentText()
        return float(self.input.value())

    def set_value(self, value: Any) -> None:
        """Set from a parsed value; ``None`` ticks "not known" (or leaves a
        required field as it is)."""
        if value is None:
            if self.field.fill != "required":
                self.unknown.setChecked(True)
            return
        self.unknown.setChecked(False)
        if isinstance(self.input, QComboBox):
            self.input.setCurrentText(str(value))
        else:
            self.input.setValue(float(value))

    def show_imputed(self, value: Any) -> None:
        """Display the value the model will use in place of a missing one."""
        if not self.unknown.isChecked() or value is None:
            return
        blocker = self.input.blockSignals(True)
        if isinstance(self.input, QComboBox):
            self.input.setCurrentText(str(value))
        else:
            self.input.setValue(float(value))
        self.input.blockSignals(blocker)


class _Progress(QObject):
    """Carries ``(done, total)`` from a worker thread to the progress bar."""

    step = Signal(int, int)


class HyperFusionPanel(QWidget):
    """The main dock widget (see the module docstring)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.model: LoadedModel | None = None
        self.editors: dict[str, FieldEditor] = {}
        self.last_result: SubjectPrediction | None = None
        self._worker = None
        self._model_paths: list[Path] = []
        self._building = False

        # the panel is taller than most screens: scroll instead of squashing widgets
        inner = QWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        layout = QVBoxLayout(inner)
        banner = QLabel("Research and teaching use only - not a diagnostic device.")
        banner.setStyleSheet("color: #f0a030; font-weight: bold;")
        banner.setWordWrap(True)
        layout.addWidget(banner)

        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.setObjectName("model_combo")
        model_layout.addWidget(self.model_combo)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextFormat(Qt.TextFormat.RichText)
        model_layout.addWidget(self.model_info)
        layout.addWidget(model_box)

        input_box = QGroupBox("Patient")
        input_layout = QVBoxLayout(input_box)
        image_row = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setObjectName("layer_combo")
        image_row.addRow("Scan (image layer):", self.layer_combo)
        input_layout.addLayout(image_row)
        self.form = QFormLayout()
        input_layout.addLayout(self.form)
        self.load_record_button = QPushButton("Load record from CSV...")
        self.load_record_button.clicked.connect(self._ask_record_file)
        input_layout.addWidget(self.load_record_button)
        layout.addWidget(input_box)

        run_row = QHBoxLayout()
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.device_combo.setToolTip("where the network runs; auto picks CUDA when present")
        run_row.addWidget(QLabel("Device:"))
        run_row.addWidget(self.device_combo)
        self.device_label = QLabel()
        run_row.addWidget(self.device_label)
        layout.addLayout(run_row)

        buttons = QHBoxLayout()
        self.predict_button = QPushButton("Predict")
        self.predict_button.setObjectName("predict_button")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setObjectName("status")
        layout.addWidget(self.status)

        result_box = QGroupBox("Result")
        result_layout = QVBoxLayout(result_box)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        result_layout.addWidget(self.canvas)
        self.result_label = QLabel("No prediction yet.")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        result_layout.addWidget(self.result_label)
        layout.addWidget(result_box)

        explain_box = QGroupBox("Explain (Captum)")
        explain_layout = QVBoxLayout(explain_box)
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
        self.steps_spin.setToolTip("Integrated Gradients: steps of the path integral (more: smaller completeness error)")
        explain_form.addRow("IG steps:", self.steps_spin)
        self.baseline_combo = QComboBox()
        self.baseline_combo.addItems(["zeros", "blurred", "template"])
        self.baseline_combo.setToolTip("Integrated Gradients' reference image: background, the scan blurred (6 mm), "
                                       "or the MNI template")  # fmt: skip
        explain_form.addRow("IG baseline:", self.baseline_combo)
        explain_layout.addLayout(explain_form)
        self.explain_button = QPushButton("Explain")
        self.explain_button.setObjectName("explain_button")
        explain_layout.addWidget(self.explain_button)
        self.ehr_figure = Figure(figsize=(3.2, 2.2), tight_layout=True)
        self.ehr_canvas = FigureCanvasQTAgg(self.ehr_figure)
        self.ehr_canvas.setMinimumHeight(170)
        explain_layout.addWidget(self.ehr_canvas)
        self.explain_label = QLabel("Maps appear as layers on the scan; EHR fields as bars (IG).")
        self.explain_label.setWordWrap(True)
        explain_layout.addWidget(self.explain_label)
        layout.addWidget(explain_box)

        whatif_box = QGroupBox("What if...")
        whatif_layout = QVBoxLayout(whatif_box)
        self.whatif_form = QFormLayout()
        whatif_layout.addLayout(self.whatif_form)
        self.whatif_label = QLabel("Move a slider: the prediction updates live from cached image features.")
        self.whatif_label.setWordWrap(True)
        self.whatif_label.setObjectName("whatif_label")
        whatif_layout.addWidget(self.whatif_label)
        row = QHBoxLayout()
        self.reset_button = QPushButton("Reset to patient values")
        self.curve_field = QComboBox()
        self.curve_field.setToolTip("the field whose whole range the response curve sweeps")
        self.curve_button = QPushButton("Response curve")
        row.addWidget(self.reset_button)
        row.addWidget(self.curve_field)
        row.addWidget(self.curve_button)
        whatif_layout.addLayout(row)
        self.whatif_figure = Figure(figsize=(3.2, 3.6), tight_layout=True)
        self.whatif_canvas = FigureCanvasQTAgg(self.whatif_figure)
        self.whatif_canvas.setMinimumHeight(260)
        whatif_layout.addWidget(self.whatif_canvas)
        row2 = QHBoxLayout()
        self.shift_button = QPushButton("Saliency shift")
        self.shift_button.setToolTip("saliency at the what-if values minus at the patient's, as a signed overlay")
        self.export_button = QPushButton("Export CSV...")
        self.summary_button = QPushButton("Summary figure...")
        for button in (self.shift_button, self.export_button, self.summary_button):
            row2.addWidget(button)
        whatif_layout.addLayout(row2)
        layout.addWidget(whatif_box)
        self.sliders: dict[str, QWidget] = {}
        self.patient_record: dict[str, Any] = {}
        self.explored: list[dict[str, Any]] = []
        self.last_curve = None
        self._session: WhatIfSession | None = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(15)  # ms: coalesces a burst of slider events into one update
        self._debounce.timeout.connect(self.update_whatif)
        self._wi_background = None
        self.whatif_canvas.mpl_connect("draw_event", self._on_whatif_drawn)
        self.reset_button.clicked.connect(self.reset_whatif)
        self.curve_button.clicked.connect(self.show_response_curve)
        self.shift_button.clicked.connect(self.saliency_shift)
        self.export_button.clicked.connect(self._ask_export)
        self.summary_button.clicked.connect(self._ask_summary)
        layout.addStretch(1)
        self.last_explanation = None
        self._stop = threading.Event()
        self._progress = _Progress()
        self._progress.step.connect(self._on_step)
        self.explain_button.clicked.connect(self.explain)

        self.model_combo.activated.connect(self._on_model_chosen)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_chosen)
        self.device_combo.currentTextChanged.connect(self._on_device_chosen)
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)

        self._fill_model_combo()
        self._refresh_layers()
        if self._model_paths:
            self.open_model(self._model_paths[0])
        self._validate()

    # -- models ------------------------------------------------------------
    def _fill_model_combo(self) -> None:
        self.model_combo.clear()
        self._model_paths = []
        # the HyperFusion models first, then the baselines
        for path in sorted(shipped_models(), key=lambda p: ("hyperfusion" not in p.stem, p.stem)):
            try:
                name = read_info(path).name
            except ModelFileError:
                continue
            self._model_paths.append(path)
            self.model_combo.addItem(name)
        self.model_combo.addItem(OPEN_FILE)

    def _on_model_chosen(self, index: int) -> None:
        if self.model_combo.itemText(index) == OPEN_FILE:
            path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", "Model files (*.safetensors)")
            if path:
                self.open_model(path)
            else:
                self._select_current_model()
            return
        self.open_model(self._model_paths[index])

    def _select_current_model(self) -> None:
        if self.model is not None and self.model.path in self._model_paths:
            self.model_combo.setCurrentIndex(self._model_paths.index(self.model.path))

    def open_model(self, path: str | Path) -> bool:
        """Load a model file; on failure keep the previous model and say why."""
        path = Path(path)
        try:
            model = load_model(path, device=self.device_combo.currentText())
        except ModelFileError as err:
            _notify_error(f"Cannot open the model: {err}")
            self._select_current_model()
            return False
        self.model = model
        if path not in self._model_paths:
            self._model_paths.append(path)
            self.model_combo.insertItem(len(self._model_paths) - 1, model.info.name)
        self.model_combo.setCurrentIndex(self._model_paths.index(path))
        self._show_model_info()
        self.target_combo.clear()
        self.target_combo.addItems(list(model.info.outputs))
        self._build_form(model.info.schema)
        self._build_whatif(model.info.schema)
        self.device_label.setText(f"using {model.device}")
        self._validate()
        return True

    def _show_model_info(self) -> None:
        info = self.model.info  # type: ignore[union-attr]
        lines = [f"<b>{info.name}</b>", f"Task: {info.task.replace('_', ' ')}; outputs: {', '.join(info.outputs)}"
                 + (f" ({info.output_unit})" if info.output_unit else "")]  # fmt: skip
        c = info.config
        lines.append(f"Network: {c.fusion} on {c.backbone}" + (f", generated: {', '.join(c.hyper_sites)}" if c.hyper_sites else ""))
        if info.flags_text:
            lines.append(f"<span style='color:#f0a030'>{info.flags_text}</span>")
        test = info.metrics.get("test") or info.metrics.get("validation") or {}
        label = "held-out test" if "test" in info.metrics else "validation"
        shown = {k: v for k, v in test.items() if k in ("balanced_accuracy", "auc_macro_ovr", "mae", "r2")}
        if shown:
            lines.append(f"Training metrics ({label}): " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
        self.model_info.setText("<br>".join(lines))

    # -- the EHR form ------------------------------------------------------
    def _build_form(self, schema: TabularSchema) -> None:
        previous = self.record() if self.editors else {}
        self._building = True
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors = {}
        for field in schema.fields:
            editor = FieldEditor(field)
            editor.changed.connect(self._validate)
            editor.unknown.toggled.connect(self._validate)
            self.form.addRow(f"{field.display_name}:", editor)
            self.editors[field.name] = editor
        self._building = False
        # keep what the user typed when switching models; else the layer's record
        layer = self.current_layer()
        if previous:
            self.set_record({k: v for k, v in previous.items() if k in self.editors})
        elif layer is not None and "ehr_record" in layer.metadata:
            self.set_record(layer.metadata["ehr_record"])

    def record(self) -> dict[str, Any]:
        """The form's values by field name (``None`` for "not known")."""
        return {name: editor.value() for name, editor in self.editors.items()}

    def set_record(self, record: dict[str, Any]) -> list[str]:
        """Fill the form from a raw record (e.g. a CSV row). Values that do
        not parse are left as they were and reported; returns the problems."""
        if self.model is None:
            return []
        problems = []
        self._building = True
        for name, editor in self.editors.items():
            if name not in record:
                continue
            try:
                editor.set_value(editor.field.parse(record[name]))
            except SchemaError as err:
                problems.append(str(err))
        self._building = False
        self._validate()
        if problems:
            _notify_error("Some values were not loaded: " + "; ".join(problems))
        return problems

    def _ask_record_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a record", "", "Tables (*.csv *.tsv);;All files (*)"
        )
        if not path:
            return
        try:
            table = read_record_table(path)
        except RecordError as err:
            _notify_error(str(err))
            return
        ids = table.ids
        subject, ok = QInputDialog.getItem(self, "Choose the subject", "Subject:", ids, 0, False)
        if ok:
            self.load_record(path, subject)

    def load_record(self, path: str | Path, subject: str) -> bool:
        """Fill the form from one subject's row of a CSV/TSV table."""
        try:
            table = read_record_table(path)
            row = record_from_row(table, subject, self.model.info.schema if self.model else None)
        except RecordError as err:
            _notify_error(str(err))
            return False
        return not self.set_record(row)

    # -- image layers ------------------------------------------------------
    def _refresh_layers(self, event: Any = None) -> None:
        from napari.layers import Image

        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image)]
        blocker = self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        elif names:
            # a newly added scan becomes the current one
            self.layer_combo.setCurrentIndex(len(names) - 1)
        self.layer_combo.blockSignals(blocker)
        if self.layer_combo.currentText() != current:
            self._on_layer_chosen()
        self._validate()

    def current_layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _on_layer_chosen(self, *args: Any) -> None:
        layer = self.current_layer()
        if layer is not None and "ehr_record" in layer.metadata and self.editors:
            self.set_record(layer.metadata["ehr_record"])
        if layer is not None and RESULT_KEY in layer.metadata:
            self._show_result(SubjectPrediction(**layer.metadata[RESULT_KEY]), store=False)
        self._validate()

    def _on_device_chosen(self, choice: str) -> None:
        if self.model is None:
            return
        try:
            device = resolve_device(choice)
        except Exception as err:  # DeviceError: say why, keep the current device
            _notify_error(str(err))
            return
        self.model.net.to(device)
        self.model.device = device
        self.device_label.setText(f"using {device}")

    # -- validation and prediction -------------------------------------------
    def _validate(self, *args: Any) -> tuple[bool, str]:
        if self._building:
            return False, ""
        ok, reason = self._check()
        busy = self._worker is not None
        self.predict_button.setEnabled(ok and not busy)
        self.predict_button.setToolTip("" if ok else reason)
        if hasattr(self, "explain_button"):
            self.explain_button.setEnabled(ok and not busy)
        if not busy:
            # show why Predict is off; once fixed, clear only that reason (keep "done", "cancelled", ...)
            if not ok:
                self.status.setText(reason)
            elif self.status.text() == getattr(self, "_shown_reason", None):
                self.status.setText("")
            self._shown_reason = reason if not ok else None
        return ok, reason

    def _check(self) -> tuple[bool, str]:
        if self.model is None:
            return False, "Choose a model."
        if self.model.info.config.uses_image:
            layer = self.current_layer()
            if layer is None:
                return False, "Open a scan (File > Open, or File > Open Sample > HyperFusion explorer)."
            if layer.data.ndim != 3 or getattr(layer, "rgb", False):
                return False, (f"'{layer.name}' is {layer.data.ndim}D; the model needs a 3D brain MRI volume "
                               "(T1-weighted, registered to MNI space).")  # fmt: skip
        try:
            filled, _ = self.model.info.schema.fill(self.record())
        except SchemaError as err:
            return False, str(err)
        for name, editor in self.editors.items():
            editor.show_imputed(filled.get(name))
        return True, ""

    def current_scan(self):
        layer = self.current_layer()
        if layer is None or not self.model or not self.model.info.config.uses_image:
            return None
        meta = {"metadata": layer.metadata, "scale": layer.scale, "translate": layer.translate,
                "affine": layer.affine.affine_matrix}  # fmt: skip
        return scan_from_array(np.asarray(layer.data), layer_affine(3, meta), name=f"'{layer.name}'")

    def predict(self) -> None:
        """Start a prediction in a worker thread (the result arrives in
        :meth:`_show_result`)."""
        ok, reason = self._validate()
        if not ok:
            _notify_error(reason)
            return
        try:
            scan = self.current_scan()
        except ImageError as err:
            _notify_error(f"Cannot use this scan: {err}")
            return
        from napari.qt.threading import thread_worker

        model, record, layer = self.model, self.record(), self.current_layer()

        @thread_worker
        def work():
            yield "resampling the scan onto the model grid"
            try:
                return predict_subject(model, scan, record)
            except (ImageError, SchemaError) as err:
                # bad input is an answer, not a crash: hand the message back
                return f"Cannot predict: {err}"

        worker = work()
        worker.yielded.connect(self.status.setText)
        worker.returned.connect(lambda result: self._on_returned(result, layer))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy
        self.status.setText("starting...")
        worker.start()

    def cancel(self) -> None:
        if self._worker is not None:
            self._stop.set()
            self._worker.quit()
            self.status.setText("cancelling...")

    def _on_returned(self, result: SubjectPrediction | str, layer: Any) -> None:
        if isinstance(result, str):
            _notify_error(result)
            self.status.setText(result)
            return
        self._show_result(result, store=True, layer=layer)

    def _on_errored(self, err: Exception) -> None:
        _notify_error(f"Prediction failed unexpectedly ({type(err).__name__}: {err})")

    def _on_finished(self) -> None:
        self._worker = None
        self._stop.clear()
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if self.last_result else 0)
        self.cancel_button.setEnabled(False)
        self._validate()

    # -- explanations ----------------------------------------------------------
    def explain(self) -> None:
        """Attribute the chosen output to the scan (overlay layers) and to
        the EHR fields (bar chart), in a worker thread with progress and
        Cancel."""
        ok, reason = self._validate()
        if not ok:
            _notify_error(reason)
            return
        try:
            scan = self.current_scan()
        except ImageError as err:
            _notify_error(f"Cannot use this scan: {err}")
            return
        from napari.qt.threading import thread_worker

        model, record, layer = self.model, self.record(), self.current_layer()
        method = self.method_combo.currentData()
        target = self.target_combo.currentText()
        settings = {"method": method, "target": target, "baseline": self.baseline_combo.currentText(),
                    "n_steps": self.steps_spin.value()}  # fmt: skip
        stop, step = self._stop, self._progress.step

        @thread_worker
        def work():
            try:
                image = None
                if model.info.config.uses_image:
                    image = attribute_image(model, scan, record, progress=step.emit, should_stop=stop.is_set,
                                            **settings)  # fmt: skip
                if stop.is_set():
                    raise Cancelled()
                tabular = attribute_tabular(model, scan, record, target=target)
                return image, tabular
            except Cancelled:
                return "Explanation cancelled; nothing was changed."
            except (ImageError, SchemaError, ValueError) as err:
                return f"Cannot explain: {err}"

        worker = work()
        worker.returned.connect(lambda result: self._on_explained(result, layer, model, record))
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._stop.clear()
        self._worker = worker
        self.predict_button.setEnabled(False)
        self.explain_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"explaining with {METHOD_LABELS[method]}...")
        worker.start()

    def _on_step(self, done: int, total: int) -> None:
        if self._worker is not None:
            self.progress.setRange(0, total)
            self.progress.setValue(done)

    def _on_explained(self, result: Any, layer: Any, model: LoadedModel, record: dict[str, Any]) -> None:
        if isinstance(result, str):
            self.status.setText(result)
            if not result.startswith("Explanation cancelled"):
                _notify_error(result)
            return
        image, tabular = result
        self.last_explanation = (image, tabular)
        source = layer.name if layer is not None else ""
        if image is not None:
            for data, kwargs in overlay_layers(image, source, model.info.name, model.sha256, record):
                self._put_overlay(data, kwargs)
            if image.completeness_is_poor(IG_DELTA_WARNING):
                from napari.utils.notifications import show_warning

                show_warning(
                    f"Integrated Gradients' completeness error is {image.relative_delta:.0%} of the attributed "
                    f"change (delta {image.convergence_delta:.2g}); raise 'IG steps' (now "
                    f"{image.params.get('n_steps')}) for a faithful map."
                )
        self._draw_tabular(tabular)
        parts = []
        if image is not None:
            parts.append(f"{METHOD_LABELS[image.method]} for {image.target}: {image.seconds:.1f} s")
            if image.convergence_delta is not None:
                parts.append(f"IG completeness error {image.convergence_delta:.2g}")
        if tabular.image_share is not None:
            parts.append(f"image {tabular.image_share:.0%} / EHR {1 - tabular.image_share:.0%} of the change "
                         "against a blurred scan and the average record")  # fmt: skip
        self.explain_label.setText("; ".join(parts))
        self.status.setText("done")

    def _put_overlay(self, data: np.ndarray, kwargs: dict[str, Any]) -> None:
        """Replace the map of the same scan, view and model; add it otherwise."""
        if isinstance(kwargs["colormap"], dict):
            from napari.utils import Colormap

            kwargs = {**kwargs, "colormap": Colormap(**kwargs["colormap"])}
        key = kwargs["metadata"][OVERLAY_KEY]
        for existing in self.viewer.layers:
            if existing.metadata.get(OVERLAY_KEY) == key:
                existing.data = data
                existing.name = kwargs["name"]
                existing.metadata = kwargs["metadata"]
                existing.colormap = kwargs["colormap"]
                existing.blending = kwargs["blending"]
                existing.opacity = kwargs["opacity"]
                existing.contrast_limits = kwargs["contrast_limits"]
                return
        self.viewer.add_image(data, **kwargs)

    def _draw_tabular(self, tabular: Any) -> None:
        fig = self.ehr_figure
        fig.clear()
        ax = fig.add_subplot(111)
        values = np.asarray(tabular.values)
        colors = ["#4daf4a" if v >= 0 else "#c2a5cf" for v in values]
        ax.barh(tabular.labels[::-1], values[::-1], color=colors[::-1])
        ax.axvline(0, color="#888888", linewidth=0.8)
        ax.tick_params(labelsize=7)
        ax.set_title(f"EHR fields -> {tabular.target} (IG vs. average record)", fontsize=8)
        self.ehr_canvas.draw_idle()

    # -- what if ------------------------------------------------------------------
    _SLIDER_STEPS = 200

    def _build_whatif(self, schema: TabularSchema) -> None:
        while self.whatif_form.rowCount():
            self.whatif_form.removeRow(0)
        self.sliders = {}
        self.curve_field.clear()
        for field in schema.fields:
            if field.kind == "category":
                control: QWidget = QComboBox()
                control.addItems(list(field.categories))
                control.currentIndexChanged.connect(self._debounce.start)
            else:
                control = QSlider(Qt.Orientation.Horizontal)
                values = field_grid(field, self._SLIDER_STEPS + 1)
                control.setRange(0, len(values) - 1)
                control.setProperty("values", values)
                control.valueChanged.connect(self._debounce.start)
            control.setObjectName(f"whatif_{field.name}")
            self.whatif_form.addRow(f"{field.display_name}:", control)
            self.sliders[field.name] = control
            self.curve_field.addItem(field.display_name, field.name)
        self.patient_record = {}
        self._session = None

    def _slider_value(self, name: str) -> Any:
        control = self.sliders[name]
        if isinstance(control, QComboBox):
            return control.currentText()
        return control.property("values")[control.value()]

    def set_whatif_value(self, name: str, value: Any) -> None:
        """Move a slider (or choice) to the nearest available value."""
        control = self.sliders[name]
        if isinstance(control, QComboBox):
            control.setCurrentText(str(value))
        else:
            values = np.asarray(control.property("values"))
            control.setValue(int(np.abs(values - float(value)).argmin()))

    def whatif_record(self) -> dict[str, Any]:
        """The what-if values: the sliders, except where the slider sits on
        the patient's own value's position (so the exact value is kept)."""
        out = {}
        for name in self.sliders:
            value = self._slider_value(name)
            patient = self.patient_record.get(name)
            if patient is not None and not isinstance(patient, str):
                values = np.asarray(self.sliders[name].property("values"))
                if int(np.abs(values - float(patient)).argmin()) == self.sliders[name].value():
                    value = patient
            out[name] = value
        return out

    def reset_whatif(self) -> None:
        """Start the sliders at the patient's values (the form, filled)."""
        if self.model is None:
            return
        try:
            filled, _ = self.model.info.schema.fill(self.record())
        except SchemaError as err:
            _notify_error(f"The record is not complete: {err}")
            return
        self.patient_record = dict(filled)
        for name, value in filled.items():
            control = self.sliders[name]
            blocker = control.blockSignals(True)
            self.set_whatif_value(name, value)
            control.blockSignals(blocker)
        self.update_whatif()

    def whatif_session(self) -> WhatIfSession | None:
        """The cached features for the current model, scan and device,
        rebuilt when any of them changed."""
        if self.model is None:
            return None
        layer = self.current_layer() if self.model.info.config.uses_image else None
        scan_id = f"{layer.name}:{id(layer.data)}" if layer is not None else ""
        if self._session is None or not self._session.matches(self.model, scan_id):
            try:
                scan = self.current_scan()
            except ImageError as err:
                _notify_error(f"Cannot use this scan: {err}")
                return None
            if self.model.info.config.uses_image and scan is None:
                return None
            self._session = WhatIfSession(self.model, scan, scan_id)
        return self._session

    def update_whatif(self) -> dict[str, Any] | None:
        """Recompute the prediction for the sliders' values (decode only)."""
        if not self.patient_record:
            self.reset_whatif()
            return None
        session = self.whatif_session()
        if session is None:
            return None
        import time

        start = time.perf_counter()
        record = self.whatif_record()
        values = session.predict(record)
        base = session.predict(self.patient_record)
        change = session.weight_change(self.patient_record, record)
        compute_ms = (time.perf_counter() - start) * 1e3
        info = self.model.info
        if info.is_classifier:
            parts = [f"{n} {v:.0%} ({v - b:+.0%})" for n, v, b in zip(info.outputs, values, base)]
        else:
            parts = [f"{info.outputs[0]} {values[0]:.1f} {info.output_unit} ({values[0] - base[0]:+.1f})"]
        text = "What if: " + ", ".join(parts) + " vs. the patient's values"
        if change:
            text += "<br>Generated weights moved: " + ", ".join(f"{k} {v:.1%}" for k, v in change.items())
        self.whatif_label.setText(text + f"<br><small>{compute_ms:.1f} ms from cached features</small>")
        entry = {**{f"in_{k}": v for k, v in record.items()},
                 **{f"out_{n}": float(v) for n, v in zip(info.outputs, values)}}  # fmt: skip
        self.explored.append(entry)
        self._draw_whatif(session, record)
        return entry

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

    def _draw_whatif(self, session: WhatIfSession, record: dict[str, Any]) -> None:
        """Redraw the curve and the kernel change; on a slider tick only the
        artists' data change (rebuilding the axes costs more than a frame)."""
        layout = (session.key, id(self.last_curve), id(self.patient_record))
        change = self._kernel_change(session, record)
        curve = self.last_curve
        x_now = None
        if curve is not None and not isinstance(record.get(curve.field), str):
            x_now = float(record[curve.field])
        if getattr(self, "_whatif_layout", None) == layout and self._wi_background is not None:
            if change is not None and self._wi_image is not None:
                limit = float(np.abs(change[1]).max()) or 1e-6
                self._wi_image.set_data(change[1])
                self._wi_image.set_clim(-limit, limit)
            if self._wi_line is not None and x_now is not None:
                self._wi_line.set_xdata([x_now, x_now])
            self._blit_whatif()
            return
        self._whatif_layout = layout
        self._wi_image = self._wi_line = self._wi_background = None
        fig = self.whatif_figure
        fig.clear()
        ax = fig.add_subplot(211)
        if curve is not None:
            numeric = not isinstance(curve.values[0], str)
            x = curve.values if numeric else list(range(len(curve.values)))
            for k, name in enumerate(curve.output_names):
                ax.plot(x, curve.outputs[:, k], label=name)
            if not numeric:
                ax.set_xticks(x, curve.values)
            patient_x = float(curve.patient_value) if numeric else x[curve.values.index(curve.patient_value)]
            ax.axvline(patient_x, color="k", linestyle=":", linewidth=1)
            if x_now is not None:
                self._wi_line = ax.axvline(x_now, color="#f0a030", linewidth=1, animated=True)
            ax.set_xlabel(self.model.info.schema[curve.field].display_name + " (dotted: patient; orange: what if)",
                          fontsize=7)  # fmt: skip
            ax.legend(fontsize=6)
            ax.tick_params(labelsize=6)
        else:
            ax.text(0.5, 0.5, "Response curve: choose a field", ha="center", va="center", fontsize=7)
            ax.set_axis_off()
        ax2 = fig.add_subplot(212)
        if change is not None:
            name, matrix = change
            limit = float(np.abs(matrix).max()) or 1e-6
            self._wi_image = ax2.imshow(matrix, cmap="PiYG", vmin=-limit, vmax=limit, aspect="auto",
                                        interpolation="nearest", animated=True)  # fmt: skip
            ax2.set_title(f"{name}: change from the patient's ({matrix.shape[0]} x {matrix.shape[1]})", fontsize=7)
            ax2.tick_params(labelsize=6)
        else:
            ax2.text(0.5, 0.5, "this model has no generated weights", ha="center", va="center", fontsize=7)
            ax2.set_axis_off()
        # a full draw now; slider ticks then blit only the two changing artists
        self.whatif_canvas.draw()

    def _on_whatif_drawn(self, event: Any = None) -> None:
        """After any full draw (first layout, resize): keep the static
        background and paint the animated artists on it."""
        canvas = self.whatif_canvas
        self._wi_background = canvas.copy_from_bbox(self.whatif_figure.bbox)
        for artist in (getattr(self, "_wi_image", None), getattr(self, "_wi_line", None)):
            if artist is not None:
                self.whatif_figure.draw_artist(artist)
        canvas.blit(self.whatif_figure.bbox)

    def _blit_whatif(self) -> None:
        canvas = self.whatif_canvas
        canvas.restore_region(self._wi_background)
        for artist in (self._wi_image, self._wi_line):
            if artist is not None:
                self.whatif_figure.draw_artist(artist)
        canvas.blit(self.whatif_figure.bbox)

    def show_response_curve(self) -> None:
        """The output over the chosen field's range, in one batched decode."""
        session = self.whatif_session()
        if session is None or not self.curve_field.currentData():
            return
        if not self.patient_record:
            self.reset_whatif()
        field = self.curve_field.currentData()
        # swept at the other fields' what-if values; the dotted mark is the patient's own value
        self.last_curve = session.response_curve(self.whatif_record(), field)
        self.last_curve.patient_value = self.patient_record.get(field, self.last_curve.patient_value)
        self._draw_whatif(session, self.whatif_record())

    def saliency_shift(self) -> None:
        """Saliency at the what-if values minus at the patient's, as a signed overlay."""
        from .explain import attribute_image

        if self.model is None or not self.model.info.config.uses_image or not self.patient_record:
            _notify_error("The saliency shift needs an image model and a patient record")
            return
        try:
            scan = self.current_scan()
            target = self.target_combo.currentText() or None
            before = attribute_image(self.model, scan, self.patient_record, "saliency", target=target)
            after = attribute_image(self.model, scan, self.whatif_record(), "saliency", target=target)
        except (ImageError, SchemaError, ValueError) as err:
            _notify_error(f"Cannot compute the saliency shift: {err}")
            return
        after.maps = after.maps - before.maps
        after.method, after.signed = "saliency_shift", True
        layer = self.current_layer()
        record = {k: v for k, v in self.whatif_record().items()}
        for data, kwargs in overlay_layers(after, layer.name, self.model.info.name, self.model.sha256, record):
            kwargs["metadata"][OVERLAY_KEY]["kind"] = "saliency shift"
            kwargs["metadata"]["attribution"]["patient_values"] = dict(self.patient_record)
            self._put_overlay(data, kwargs)

    def export_exploration(self, path: str | Path) -> Path:
        """The values tried and their predictions (and the last response
        curve, if any) as CSV, written atomically."""
        import pandas as pd

        from .atomic import write_text_atomically

        frame = pd.DataFrame(self.explored).assign(kind="slider")
        if self.last_curve is not None:
            c = self.last_curve
            curve = pd.DataFrame({f"in_{c.field}": c.values,
                                  **{f"out_{n}": c.outputs[:, k] for k, n in enumerate(c.output_names)}})  # fmt: skip
            frame = pd.concat([frame, curve.assign(kind=f"curve {c.field}")], ignore_index=True)
        frame["model"] = self.model.info.name if self.model else ""
        frame["synthetic_model"] = bool(self.model and self.model.info.synthetic_data)
        return write_text_atomically(path, frame.to_csv(index=False, float_format="%.6g"))

    def save_summary(self, path: str | Path) -> Path:
        """A one-page teaching figure (PNG or PDF by suffix)."""
        from matplotlib.figure import Figure

        session = self.whatif_session()
        if session is None:
            raise ValueError("no model and scan to summarise")
        info = self.model.info
        record = self.whatif_record()
        fig = Figure(figsize=(8.27, 11.69))
        fig.suptitle(f"What if? {info.name}\nSYNTHETIC-data model - research and teaching only, not for diagnosis",
                     fontsize=10)  # fmt: skip
        ax = fig.add_subplot(311)
        patient, whatif = session.predict(self.patient_record), session.predict(record)
        x = np.arange(len(info.outputs))
        ax.bar(x - 0.2, patient, 0.4, label="patient")
        ax.bar(x + 0.2, whatif, 0.4, label="what if")
        ax.set_xticks(x, info.outputs)
        ax.legend()
        changed = {k: v for k, v in record.items() if v != self.patient_record.get(k)}
        ax.set_title("changed: " + (", ".join(f"{k} {_short(self.patient_record.get(k))} -> {_short(v)}"
                                              for k, v in changed.items()) or "nothing"), fontsize=8)  # fmt: skip
        if self.last_curve is not None:
            ax2 = fig.add_subplot(312)
            c = self.last_curve
            xs = c.values if not isinstance(c.values[0], str) else list(range(len(c.values)))
            for k, n in enumerate(c.output_names):
                ax2.plot(xs, c.outputs[:, k], label=n)
            ax2.set_xlabel(info.schema[c.field].display_name)
            ax2.legend()
        change = session.weight_change(self.patient_record, record)
        ax3 = fig.add_subplot(313)
        ax3.axis("off")
        ax3.text(0, 1, "Generated weights, relative change from the patient's:\n"
                 + ("\n".join(f"  {k}: {v:.1%}" for k, v in change.items()) or "  (none in this model)"),
                 va="top", fontsize=9)  # fmt: skip
        from .atomic import atomic_write

        suffix = Path(path).suffix.lower() or ".png"
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=suffix.lstrip(".")))
        return Path(path)

    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export the exploration", "whatif.csv", "CSV (*.csv)")
        if path:
            self.export_exploration(path)

    def _ask_summary(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save a summary figure", "whatif.pdf", "PDF (*.pdf);;PNG (*.png)")
        if path:
            try:
                self.save_summary(path)
            except ValueError as err:
                _notify_error(str(err))

    def _show_result(self, result: SubjectPrediction, store: bool, layer: Any = None) -> None:
        self.last_result = result
        ax_fig = self.figure
        ax_fig.clear()
        ax = ax_fig.add_subplot(111)
        if result.is_classifier:
            colors = ["#4c9be8" if i != int(np.argmax(result.values)) else "#f0a030" for i in range(len(result.values))]
            ax.bar(result.outputs, result.values, color=colors)
            ax.set_ylim(0, 1)
            ax.set_ylabel("probability")
            for i, v in enumerate(result.values):
                ax.text(i, v + 0.02, f"{v:.0%}", ha="center", fontsize=8)
        else:
            per_view = np.asarray(result.per_view)[:, 0]
            ax.barh([result.outputs[0]], [result.values[0]], xerr=[result.spread] if len(per_view) > 1 else None,
                    color="#4c9be8")  # fmt: skip
            ax.set_xlabel(result.unit)
            ax.set_xlim(0, max(100.0, result.values[0] * 1.2))
            ax.text(result.values[0], 0, f" {result.values[0]:.1f}", va="center", fontsize=9)
        ax.set_title("SYNTHETIC-data model", fontsize=8, color="#c07000")
        self.canvas.draw_idle()
        imputed = f"; filled in: {', '.join(result.imputed)}" if result.imputed else ""
        inputs = ", ".join(f"{k}={_fmt(v)}" for k, v in result.record.items())
        self.result_label.setText(
            f"<b>{result.summary()}</b><br>{result.model_name} ({result.model_sha256[:12]}) on {result.device}, "
            f"{result.seconds * 1000:.0f} ms<br>Inputs: {inputs}{imputed}"
        )
        self.status.setText("done")
        if result.is_classifier:
            self.target_combo.setCurrentText(result.predicted)
        if store and layer is not None:
            layer.metadata[RESULT_KEY] = result.to_metadata()
            self.reset_whatif()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else "?"
    return str(value)
