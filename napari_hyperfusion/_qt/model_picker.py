"""The model picker: the shipped models, "Open model file...", and what the
chosen model is (task, network, generated layers, flags, metrics).

Everything shown comes from the model file's metadata, so it is shown as
plain text: a name cannot inject markup or push the research-use flag out
of view.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QLabel, QVBoxLayout, QWidget

from ..analysis.case import Case
from ..data.notes import encoder_available, encoder_loaded, warm_encoder
from ..errors import HyperFusionError
from ..io.model_file import LoadedModel, ModelFileError, load_model, read_info
from ..resources import shipped_models
from . import notify

__all__ = ["ModelPicker", "OPEN_FILE", "describe_model"]

OPEN_FILE = "Open model file..."


def describe_model(model: LoadedModel) -> str:
    """What the model is, in a few plain-text lines."""
    info = model.info
    unit = f" ({info.output_unit})" if info.output_unit else ""
    lines = [info.name, f"Task: {info.task.replace('_', ' ')}; outputs: {', '.join(info.outputs)}{unit}"]
    if info.flags_text:
        lines.insert(1, info.flags_text)  # second line: never pushed out of view
    c = info.config
    generated = f", generated: {', '.join(c.hyper_sites)}" if c.hyper_sites else ""
    lines.append(f"Network: {c.fusion} on {c.backbone}{generated}")
    selection = info.risk_selection()
    if selection is not None:
        read = selection.fields(info.schema)
        lines.append(
            f"Stage 1 kept {len(read)} of {len(info.schema.names)} EHR fields: {', '.join(read) or 'none'}"
            " (the others are in the form but the network does not read them)"
        )
    if c.uses_note:
        lines.append("Reads a clinical note (all-MiniLM-L6-v2, offline)")
    test = info.metrics.get("test") or info.metrics.get("validation") or {}
    label = "held-out test" if "test" in info.metrics else "validation"
    keys = ("balanced_accuracy", "auc_macro_ovr", "mae", "r2", "auc_macro", "ap_macro", "f1_macro")
    shown = {k: v for k, v in test.items() if k in keys and isinstance(v, (int, float))}
    if shown:
        lines.append(f"Training metrics ({label}): " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    return "\n".join(lines)


class ModelPicker(QWidget):
    """Chooses the case's model. A model that cannot be opened is reported
    and the previous one stays."""

    def __init__(self, case: Case, device: str = "auto", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.case = case
        self.device = device
        self._paths: list[Path] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.combo.setObjectName("model_combo")
        layout.addWidget(self.combo)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.PlainText)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.info)
        self._fill()
        self.combo.activated.connect(self._on_chosen)

    def _fill(self) -> None:
        self.combo.clear()
        self._paths = []
        # the HyperFusion models first, then the baselines
        for path in sorted(shipped_models(), key=lambda p: ("hyperfusion" not in p.stem, p.stem)):
            try:
                name = read_info(path).name
            except ModelFileError:
                continue
            self._paths.append(path)
            self.combo.addItem(name)
        self.combo.addItem(OPEN_FILE)

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def _on_chosen(self, index: int) -> None:
        if self.combo.itemText(index) == OPEN_FILE:
            path, _ = QFileDialog.getOpenFileName(self, "Open a model file", "", "Model files (*.safetensors)")
            if path:
                self.open(path)
            else:
                self._show_current()
            return
        self.open(self._paths[index])

    def _show_current(self) -> None:
        model = self.case.model
        if model is not None and model.path in self._paths:
            self.combo.setCurrentIndex(self._paths.index(model.path))

    def open(self, path: str | Path) -> bool:
        """Load a model file into the case; on failure keep the previous model and say why."""
        path = Path(path)
        try:
            model = load_model(path, device=self.device)
        except HyperFusionError as err:  # a bad file, or a device this machine lacks
            notify.error(f"Cannot open the model: {err}")
            self._show_current()
            return False
        if path not in self._paths:
            self._paths.append(path)
            self.combo.insertItem(len(self._paths) - 1, model.info.name)
        self.combo.setCurrentIndex(self._paths.index(path))
        self.info.setText(describe_model(model))
        self.case.set_model(model)
        if model.info.config.uses_note and encoder_available() and not encoder_loaded():
            # the encoder takes seconds to load: start now, so the first Predict does not wait for it
            # (Predict's worker waits on the same lock if it is still loading)
            threading.Thread(target=warm_encoder, name="note-encoder", daemon=True).start()
        return True
