"""The patient: which scan (an image layer), the EHR form the model's schema
asks for, the clinical note, and "Load record from CSV...".

Keeps the case's scan, record and note in step with what is on screen:
the scan picker follows layers being added, removed and renamed, lists
scans only (overlays the plugin made are tagged and left out), and selects
a newly opened scan; a sample subject's record (in its layer's metadata)
fills the form when the scan is first chosen; values typed for a scan are
kept for that scan when switching to another and back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..analysis.case import Case, scan_fingerprint
from ..analysis.overlays import OVERLAY_KEY
from ..data.preprocess import scan_from_array
from ..data.records import read_record_table, record_from_row
from ..data.schema import Field, TabularSchema
from ..errors import HyperFusionError
from ..io.dicom import describe_series
from ..io.nifti import layer_affine
from . import notify
from .field_editor import FieldEditor
from .layers import overlays_of
from .plain import plain_label, plain_tooltip

if TYPE_CHECKING:
    import napari

__all__ = ["PatientForm", "is_scan_layer", "layer_scan", "RECORD_KEY", "CHRONOLOGICAL_AGE"]

RECORD_KEY = "ehr_record"
# brain-age models do not read the age (they predict it); the form asks for it to show the gap
CHRONOLOGICAL_AGE = Field(
    "AGE", "number", label="Chronological age (for the gap)", unit="years", minimum=0, maximum=120, mean=50.0, std=1000.0,
    description="not a model input: the result shows the predicted brain age minus this (the brain-age gap)",
)  # fmt: skip


def is_scan_layer(layer: Any) -> bool:
    """An image layer that is a scan, not an overlay this plugin made."""
    from napari.layers import Image

    return isinstance(layer, Image) and OVERLAY_KEY not in layer.metadata


def layer_scan(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """A 3D image layer's voxels and voxel -> world affine (scale,
    translate and affine composed), as the case sees them."""
    meta = {"metadata": layer.metadata, "scale": layer.scale, "translate": layer.translate,
            "affine": layer.affine.affine_matrix}  # fmt: skip
    data = np.asarray(layer.data)
    return data, layer_affine(3, meta) if data.ndim == 3 else np.eye(4)


class PatientForm(QWidget):
    """Scan picker, EHR form, note and record loading for the case."""

    def __init__(self, case: Case, viewer: napari.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.case = case
        self.viewer = viewer
        self.editors: dict[str, FieldEditor] = {}
        self.scan_error = ""  # why the chosen layer cannot be used ("" if it can)
        self._typed: dict[int, tuple[dict[str, Any], str]] = {}  # layer id -> its form values and note
        self._layer_id: int | None = None
        self._fingerprints: dict[int, str] = {}  # layer id -> scan fingerprint, for the layers shown
        self._prepared: dict[int, tuple[Any, str]] = {}  # layer id -> (Scan or None, why not)
        self._schema: TabularSchema | None = None
        self._building = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        top = QFormLayout()
        self.layer_combo = QComboBox()
        self.layer_combo.setObjectName("layer_combo")
        top.addRow("Scan (image layer):", self.layer_combo)
        layout.addLayout(top)
        self.form = QFormLayout()
        layout.addLayout(self.form)
        self.note_label = QLabel("Clinical note (free text, optional; the model embeds it offline):")
        self.note_label.setWordWrap(True)
        self.note_edit = QPlainTextEdit()
        self.note_edit.setObjectName("note_edit")
        self.note_edit.setPlaceholderText(
            "e.g. Reports forgetting recent conversations. Mother had Alzheimer's disease."
        )
        self.note_edit.setMaximumHeight(80)
        layout.addWidget(self.note_label)
        layout.addWidget(self.note_edit)
        self.note_label.setVisible(False)
        self.note_edit.setVisible(False)
        self.load_record_button = QPushButton("Load record from CSV...")
        self.load_record_button.clicked.connect(self._ask_record_file)
        layout.addWidget(self.load_record_button)

        self.layer_combo.currentIndexChanged.connect(self._on_layer_chosen)
        self.note_edit.textChanged.connect(self._push_note)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.layers.events.moved.connect(self.refresh_layers)
        for layer in viewer.layers:
            self._watch(layer)
        case.changed.connect(self._on_case_changed)
        self.refresh_layers()

    # -- scans ------------------------------------------------------------------
    def _watch(self, layer: Any) -> None:
        layer.events.name.connect(self.refresh_layers)
        for name in ("data", "scale", "translate", "affine"):  # the scan itself changed: a new case
            getattr(layer.events, name).connect(lambda event, layer=layer: self._on_scan_changed(layer))

    def _on_scan_changed(self, layer: Any) -> None:
        self._fingerprints.pop(id(layer), None)
        self._prepared.pop(id(layer), None)
        if layer is self.current_layer():
            self._push_scan(layer)

    def _on_inserted(self, event: Any) -> None:
        self._watch(event.value)
        self.refresh_layers(select=event.value if is_scan_layer(event.value) else None)

    def _on_removed(self, event: Any) -> None:
        """A scan's overlays go with it (an overlay must not outlive its scan)."""
        removed = event.value
        fingerprint = self._fingerprints.pop(id(removed), "")
        self._prepared.pop(id(removed), None)
        self._typed.pop(id(removed), None)
        if id(removed) == self._layer_id:
            self._layer_id = None  # its values must not be saved under an id Python may reuse
        others = {fp for lid, fp in self._fingerprints.items() if lid != id(removed)}
        if is_scan_layer(removed) and fingerprint and fingerprint not in others:
            for overlay in overlays_of(self.viewer, fingerprint):
                self.viewer.layers.remove(overlay)
        self.refresh_layers()

    def scan_layers(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if is_scan_layer(layer)]

    def refresh_layers(self, event: Any = None, select: Any = None) -> None:
        """Re-list the scans; keep the chosen one (by identity, so a rename
        follows it), or choose ``select`` (a newly opened scan)."""
        layers = self.scan_layers()
        current = select if select is not None else self.current_layer()
        blocker = self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for i, layer in enumerate(layers):
            self.layer_combo.addItem(layer.name, id(layer))
            # a DICOM folder of several series opens each as a layer: the tooltip tells them apart
            tip = describe_series(layer.metadata) if "dicom" in layer.metadata else layer.name
            self.layer_combo.setItemData(i, plain_tooltip(tip), Qt.ItemDataRole.ToolTipRole)
        if current is not None and current in layers:
            self.layer_combo.setCurrentIndex(layers.index(current))
        elif layers:
            self.layer_combo.setCurrentIndex(len(layers) - 1)
        self.layer_combo.blockSignals(blocker)
        self._on_layer_chosen()

    def current_layer(self) -> Any:
        """The chosen scan layer, or None."""
        wanted = self.layer_combo.currentData()
        return next((layer for layer in self.viewer.layers if id(layer) == wanted), None)

    def _on_layer_chosen(self, *args: Any) -> None:
        layer = self.current_layer()
        layer_id = id(layer) if layer is not None else None
        if layer_id != self._layer_id:
            if self._layer_id is not None and self.editors:
                self._typed[self._layer_id] = (self.snapshot(), self.note_edit.toPlainText())
            self._layer_id = layer_id
            if layer is not None:
                if layer_id in self._typed:
                    self.restore(*self._typed[layer_id])
                elif RECORD_KEY in layer.metadata:
                    self.set_record(layer.metadata[RECORD_KEY])
        self._push_scan(layer)

    def _push_scan(self, layer: Any) -> None:
        if layer is None:
            self.scan_error = "Open a scan (File > Open, or File > Open Sample > HyperFusion explorer)."
            self.case.set_scan("", None, "")
            return
        if id(layer) not in self._prepared:  # prepared once per layer content, not on every layer event
            self._prepared[id(layer)] = self._prepare(layer)
        scan, self.scan_error = self._prepared[id(layer)]
        self.case.set_scan(layer.name, scan, self._fingerprints[id(layer)])

    def _prepare(self, layer: Any) -> tuple[Any, str]:
        """The layer as a :class:`Scan` (or None) and why not; records its fingerprint."""
        if getattr(layer, "multiscale", False):
            self._fingerprints[id(layer)] = f"multiscale:{id(layer)}"
            return None, f"'{layer.name}' is a multiscale image; open the scan as one 3D volume."
        data, affine = layer_scan(layer)
        self._fingerprints[id(layer)] = scan_fingerprint(data, affine)
        if getattr(layer, "rgb", False) or data.ndim != 3:
            return None, (f"'{layer.name}' is {data.ndim}D; the model needs a 3D brain MRI volume "
                          "(T1-weighted, registered to MNI space).")  # fmt: skip
        try:
            return scan_from_array(data, affine, name=f"'{layer.name}'"), ""
        except HyperFusionError as err:
            return None, f"Cannot use this scan: {err}"

    # -- the form ---------------------------------------------------------------
    def _on_case_changed(self, identity: Any) -> None:
        model = self.case.model
        schema = model.info.schema if model is not None else None
        if schema is not self._schema and not getattr(self, "_building", False):
            self._schema = schema
            self._build_form(schema)
            uses_note = bool(model is not None and model.info.config.uses_note)
            self.note_label.setVisible(uses_note)
            self.note_edit.setVisible(uses_note)
            self._push_note()

    def _build_form(self, schema: TabularSchema | None) -> None:
        previous = self.snapshot() if self.editors else {}
        self._building = True
        while self.form.rowCount():
            self.form.removeRow(0)
        self.editors = {}
        fields = list(schema.fields) if schema is not None else []
        model = self.case.model
        if model is not None and model.info.task == "brain_age" and "AGE" not in schema.names:
            fields.append(CHRONOLOGICAL_AGE)
        for field in fields:
            editor = FieldEditor(field)
            editor.changed.connect(self._push_record)
            editor.unknown.toggled.connect(self._push_record)
            self.form.addRow(plain_label(f"{field.display_name}:", wrap=True), editor)
            self.editors[field.name] = editor
        self._building = False
        # keep what was typed when switching models; else the scan's own record
        layer = self.current_layer()
        if previous:
            self.restore({k: v for k, v in previous.items() if k in self.editors}, self.note_edit.toPlainText())
        elif layer is not None and RECORD_KEY in layer.metadata:
            self.set_record(layer.metadata[RECORD_KEY])
        else:
            self._push_record()

    def record(self) -> dict[str, Any]:
        """The form's values by field name (``None`` for "not known")."""
        return {name: editor.value() for name, editor in self.editors.items()}

    def note_text(self) -> str:
        """The clinical note as typed ("" for a model that reads none)."""
        model = self.case.model
        if model is None or not model.info.config.uses_note:
            return ""
        return self.note_edit.toPlainText().strip()

    def show_imputed(self, filled: dict[str, Any]) -> None:
        for name, editor in self.editors.items():
            editor.show_imputed(filled.get(name))

    def _push_record(self, *args: Any) -> None:
        if not self._building:
            self.case.set_record(self.record())

    def _push_note(self) -> None:
        self.case.set_note(self.note_text())

    def set_record(self, record: dict[str, Any], note: str | None = None) -> list[str]:
        """Fill the whole form from a raw record (a CSV row, a sample's
        metadata, values kept for a scan). Every field takes the record's
        value or is marked: a field the record lacks is not known (filled in
        by the model) or, if required, missing; a value that does not parse
        is refused and cleared, never kept from the previous patient.
        Returns the problems (also shown as one notification)."""
        if not self.editors:
            return []
        problems = []
        self._building = True
        if note is None:
            note = record.get("NOTE")
        if note is None or (isinstance(note, float) and math.isnan(note)):
            note = ""
        self.note_edit.setPlainText(str(note))
        for name, editor in self.editors.items():
            problem = editor.load(record.get(name))
            if problem:
                problems.append(problem)
            elif editor.state == "missing":
                problems.append(f"{editor.field.display_name} is required and the record has no value")
        self._building = False
        self._push_record()
        if problems:
            notify.error("Some values were not loaded (cleared and marked in the form): " + "; ".join(problems))
        return problems

    def restore(self, values: dict[str, Any], note: str) -> None:
        """Put back the form as it was for a scan (values already parsed, states kept)."""
        self._building = True
        self.note_edit.setPlainText(note)
        for name, (value, state, detail) in values.items():
            if name in self.editors:
                self.editors[name].set_value(value)
                self.editors[name].set_state(state, detail)
        self._building = False
        self._push_record()

    def snapshot(self) -> dict[str, Any]:
        """The form's values with their states, to restore later."""
        return {name: (e.value(), e.state, e.detail) for name, e in self.editors.items()}

    def _ask_record_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a record", "", "Tables (*.csv *.tsv);;All files (*)")
        if not path:
            return
        try:
            table = read_record_table(path)
        except HyperFusionError as err:
            notify.error(str(err))
            return
        subject, ok = QInputDialog.getItem(self, "Choose the subject", "Subject:", table.ids, 0, False)
        if ok:
            self.load_record(path, subject)

    def load_record(self, path: str | Path, subject: str) -> bool:
        """Fill the form from one subject's row of a CSV/TSV table."""
        model = self.case.model
        try:
            table = read_record_table(path)
            row = record_from_row(table, subject, model.info.schema if model else None)
        except HyperFusionError as err:
            notify.error(str(err))
            return False
        return not self.set_record(row)
