"""One EHR field of the form: a number box (with unit and range) or a
choice, and a "not known" tick where the model can impute the field."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QSizePolicy, QWidget

from ..data.schema import Field

__all__ = ["FieldEditor"]


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
