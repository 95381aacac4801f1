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
from qtpy.QtCore import Qt
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
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..data.notes import NoteEncoderError, embed_notes, encoder_loaded
from ..data.preprocess import ImageError, scan_from_array
from ..data.records import RecordError, read_record_table, record_from_row
from ..data.schema import Field, SchemaError, TabularSchema
from ..infer.subject import SubjectPrediction, predict_subject
from ..io.model_file import LoadedModel, ModelFileError, load_model, read_info
from ..io.nifti import layer_affine
from ..nn.devices import available_devices, resolve_device
from ..resources import shipped_models
from .explain_section import ExplainSection
from .whatif_section import WhatIfSection

if TYPE_CHECKING:
    import napari

__all__ = ["HyperFusionPanel", "FieldEditor"]

OPEN_FILE = "Open model file..."

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


class HyperFusionPanel(ExplainSection, WhatIfSection, QWidget):
    """The main dock widget (see the module docstring); the explain and
    what-if sections are mixins in their own modules."""

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
        self.note_label = QLabel("Clinical note (free text, optional; the model embeds it offline):")
        self.note_label.setWordWrap(True)
        self.note_edit = QPlainTextEdit()
        self.note_edit.setObjectName("note_edit")
        self.note_edit.setPlaceholderText(
            "e.g. Reports forgetting recent conversations. Mother had Alzheimer's disease."
        )
        self.note_edit.setMaximumHeight(80)
        input_layout.addWidget(self.note_label)
        input_layout.addWidget(self.note_edit)
        self.note_label.setVisible(False)
        self.note_edit.setVisible(False)
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

        self._build_explain_section(layout)
        self._build_whatif_section(layout)
        layout.addStretch(1)

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

    def notify_error(self, message: str) -> None:
        _notify_error(message)

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
        self.note_label.setVisible(model.info.config.uses_note)
        self.note_edit.setVisible(model.info.config.uses_note)
        self._build_whatif(model.info.schema)
        self.device_label.setText(f"using {model.device}")
        self._validate()
        return True

    def _show_model_info(self) -> None:
        info = self.model.info  # type: ignore[union-attr]
        lines = [f"<b>{info.name}</b>", f"Task: {info.task.replace('_', ' ')}; outputs: {', '.join(info.outputs)}"
                 + (f" ({info.output_unit})" if info.output_unit else "")]  # fmt: skip
        c = info.config
        lines.append(
            f"Network: {c.fusion} on {c.backbone}"
            + (f", generated: {', '.join(c.hyper_sites)}" if c.hyper_sites else "")
        )
        selection = info.risk_selection()
        if selection is not None:
            read = selection.fields(info.schema)
            lines.append(f"Stage 1 kept {len(read)} of {len(info.schema.names)} EHR fields: {', '.join(read) or 'none'}"
                         " (the others are in the form but the network does not read them)")  # fmt: skip
        if c.uses_note:
            lines.append("Reads a clinical note (all-MiniLM-L6-v2, offline)")
        if info.flags_text:
            lines.append(f"<span style='color:#f0a030'>{info.flags_text}</span>")
        test = info.metrics.get("test") or info.metrics.get("validation") or {}
        label = "held-out test" if "test" in info.metrics else "validation"
        keys = ("balanced_accuracy", "auc_macro_ovr", "mae", "r2", "auc_macro", "ap_macro", "f1_macro")
        shown = {k: v for k, v in test.items() if k in keys}
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

    def note_text(self) -> str:
        """The clinical note as typed ("" for a model that reads none)."""
        if self.model is None or not self.model.info.config.uses_note:
            return ""
        return self.note_edit.toPlainText().strip()

    def set_record(self, record: dict[str, Any]) -> list[str]:
        """Fill the form from a raw record (e.g. a CSV row). Values that do
        not parse are left as they were and reported; returns the problems."""
        if self.model is None:
            return []
        problems = []
        self._building = True
        note = record.get("NOTE")
        if note is not None and not (isinstance(note, float) and math.isnan(note)):
            self.note_edit.setPlainText(str(note))
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
        path, _ = QFileDialog.getOpenFileName(self, "Load a record", "", "Tables (*.csv *.tsv);;All files (*)")
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

        model, record, layer, note = self.model, self.record(), self.current_layer(), self.note_text()

        @thread_worker
        def work():
            try:
                if note and not encoder_loaded():
                    yield "loading the note encoder (first use: a few seconds)"
                    embed_notes([note])
                yield "resampling the scan onto the model grid"
                return predict_subject(model, scan, record, note=note)
            except (ImageError, SchemaError, NoteEncoderError) as err:
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

    def _show_result(self, result: SubjectPrediction, store: bool, layer: Any = None) -> None:
        self.last_result = result
        ax_fig = self.figure
        ax_fig.clear()
        ax = ax_fig.add_subplot(111)
        if result.is_multilabel:
            cuts = result.thresholds or [0.5] * len(result.values)
            y = np.arange(len(result.values))[::-1]
            colors = ["#f0a030" if v >= t else "#4c9be8" for v, t in zip(result.values, cuts)]
            ax.barh(y, result.values, color=colors)
            for yi, v, t in zip(y, result.values, cuts):
                ax.plot([t, t], [yi - 0.4, yi + 0.4], color="k", linewidth=1)
                ax.text(min(v + 0.02, 0.85), yi, f"{v:.0%}", va="center", fontsize=8)
            ax.set_yticks(y, result.outputs, fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_xlabel("probability per label (black tick: the label's threshold)", fontsize=7)
        elif result.is_classifier:
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
        attention = result.extra.get("label_attention")
        if attention:  # MedFusionNet: which tokens each label's query read (not an attribution)
            imputed += "<br>Label decoder attention (not attribution): " + "; ".join(
                f"{label}: " + ", ".join(f"{t} {w:.0%}" for t, w in sorted(row.items(), key=lambda x: -x[1])[:2])
                for label, row in attention.items()
            )
        inputs = ", ".join(f"{k}={_fmt(v)}" for k, v in result.record.items())
        self.result_label.setText(
            f"<b>{result.summary()}</b><br>{result.model_name} ({result.model_sha256[:12]}) on {result.device}, "
            f"{result.seconds * 1000:.0f} ms<br>Inputs: {inputs}{imputed}"
        )
        self.status.setText("done")
        if result.is_classifier:
            self.target_combo.setCurrentText(result.predicted)
        elif result.is_multilabel:
            self.target_combo.setCurrentText(result.outputs[int(np.argmax(result.values))])
        if store and layer is not None:
            layer.metadata[RESULT_KEY] = result.to_metadata()
            self.reset_whatif()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else "?"
    return str(value)
