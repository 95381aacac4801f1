"""One EHR field of the form: a number box (with unit and range) or a
choice, a "not known" tick where the model can impute the field, and the
field's state in words: where its value came from (the record, typed,
filled in by the model), or why it was refused. A refused value is never
replaced by whatever the field held before (another patient's value)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from ..data.schema import Field, split_censored
from ..errors import SchemaError
from .plain import plain_tooltip

__all__ = ["FieldEditor", "STATES"]

# state -> how it reads next to the field
STATES = {
    "record": "from the record",
    "typed": "typed",
    "default": "default value: check it",
    "imputed": "not known: filled in by the model",
    "censored": "censored",
    "refused": "refused",
    "missing": "missing: required",
    "unusual": "unusual for the training data",
}


class FieldEditor(QWidget):
    """One EHR field: a spin box (number, with unit and range) or a choice
    (category), and a "not known" tick where the model can impute it. While
    ticked, the box shows the imputed value, greyed out."""

    def __init__(self, field: Field, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.field = field
        self.state = "default"
        self.detail = ""
        self._setting = False
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        layout = QHBoxLayout()
        outer.addLayout(layout)
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
        self.input.setToolTip(plain_tooltip(f"{field.display_name}: {field.range_text()}. {field.description}".strip()))
        self.input.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        layout.addWidget(self.input)
        self.unknown = QCheckBox("not known")
        self.unknown.setToolTip("the model fills it in from the fields that are known (shown greyed out)")
        self.unknown.setVisible(field.fill != "required")
        self.unknown.toggled.connect(lambda on: self.input.setEnabled(not on))
        layout.addWidget(self.unknown)
        self.state_label = QLabel()
        self.state_label.setObjectName(f"state_{field.name}")
        self.state_label.setTextFormat(Qt.TextFormat.PlainText)
        self.state_label.setWordWrap(True)
        self.state_label.setStyleSheet("color: #a0a0a0; font-size: 10px;")
        outer.addWidget(self.state_label)
        self.changed.connect(self._on_edited)
        self.unknown.toggled.connect(self._on_edited)
        self.set_state("default")

    def set_state(self, state: str, detail: str = "") -> None:
        """Show where the value came from or why it was refused."""
        self.state, self.detail = state, detail
        text = STATES[state] + (f": {detail}" if detail else "")
        self.state_label.setText(text)
        alarming = state in ("refused", "missing", "unusual", "default")
        self.state_label.setStyleSheet(f"color: {'#f0a030' if alarming else '#a0a0a0'}; font-size: 10px;")

    def _on_edited(self, *args: Any) -> None:
        if self._setting:
            return
        if self.unknown.isChecked():
            self.set_state("imputed")
        elif self._unusual(self.value()):
            self.set_state("unusual", f"typed; more than 3 SD from the training mean {self.field.mean:.3g}")
        else:
            self.set_state("typed")

    def _unusual(self, value: Any) -> bool:
        """Far outside what the model was trained on (flagged before Predict)."""
        return (
            self.field.kind == "number"
            and value is not None
            and abs(float(value) - self.field.mean) > 3 * self.field.std
        )

    @property
    def changed(self):
        return self.input.currentIndexChanged if isinstance(self.input, QComboBox) else self.input.valueChanged

    def value(self) -> float | str | None:
        """The value, or ``None`` when not known (or a required field's value
        was refused or missing: then the record is incomplete)."""
        if self.unknown.isChecked() or self.state in ("refused", "missing") and self.field.fill == "required":
            return None
        if isinstance(self.input, QComboBox):
            return self.input.currentText()
        return float(self.input.value())

    def set_value(self, value: Any) -> None:
        """Set from a parsed value (as if typed); ``None`` ticks "not known"
        (a required field is marked missing)."""
        self._setting = True
        try:
            if value is None:
                if self.field.fill != "required":
                    self.unknown.setChecked(True)
                    self.set_state("imputed")
                else:
                    self.set_state("missing")
                return
            self.unknown.setChecked(False)
            if isinstance(self.input, QComboBox):
                self.input.setCurrentText(str(value))
            else:
                self.input.setValue(float(value))
            self.set_state("typed")
        finally:
            self._setting = False

    def load(self, raw: Any) -> str | None:
        """Set from a raw record value (e.g. a CSV cell) and mark its state:
        from the record, censored (ADNIMERGE's ``>1700`` read as 1700), not
        known, or refused. A refused value is cleared (not known), never
        kept from before; returns the problem, if any."""
        try:
            value = self.field.parse(raw)
        except SchemaError as err:
            self.set_value(None)
            self.set_state("refused", str(err))
            return str(err)
        self.set_value(value)
        if value is None:
            return None
        _, marker = split_censored(raw)
        if marker:
            self.set_state("censored", f"the record says {str(raw).strip()}; the model reads {value:g}")
        elif self._unusual(value):
            self.set_state("unusual", f"more than 3 SD from the training mean {self.field.mean:.3g}")
        else:
            self.set_state("record")
        return None

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
