"""Reading conventions for the canvas: the plane, neurological or
radiological left-right, window/level presets, and a line on the canvas
that says what the screen shows (plane, slice in mm, which side is the
patient's right, the cursor's MNI millimetres).

Scans are placed in world space by the reader with RAS+ axes (napari world
axis 0 = x, left -> right; 1 = y, posterior -> anterior; 2 = z, inferior ->
superior, in mm), so a plane is a choice of ``viewer.dims.order`` and the
conventions are the camera's axis directions (``camera.orientation2d``):
anterior and superior point up; in the neurological convention the
patient's right is on the screen's right, in the radiological one on the
left (as if facing the patient).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QWidget

__all__ = ["ViewControls", "PLANES", "WINDOWS"]

AXIS_LABELS = ("x (mm, +R)", "y (mm, +A)", "z (mm, +S)")
# plane -> (dims.order, the sliced world axis, (vertical axis, horizontal axis))
PLANES = {
    "axial": ((2, 1, 0), 2, (1, 0)),
    "coronal": ((1, 2, 0), 1, (2, 0)),
    "sagittal": ((0, 2, 1), 0, (2, 1)),
}
# window/level presets for a T1 scan: percentiles of the voxels inside the head
WINDOWS = {
    "T1 brain (1-99 %)": (1.0, 99.0),
    "T1 contrast (5-95 %)": (5.0, 95.0),
    "full range": (0.0, 100.0),
}


class ViewControls(QWidget):
    """Plane, convention and window for the viewer's scan layers."""

    def __init__(self, viewer: Any, scan_layer=lambda: None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.scan_layer = scan_layer  # the scan on screen (the patient form's choice)
        layout = QFormLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.plane = QComboBox()
        self.plane.addItems(list(PLANES))
        self.plane.setObjectName("view_plane")
        self.convention = QComboBox()
        self.convention.addItems(["neurological (R on the right)", "radiological (R on the left)"])
        self.convention.setObjectName("view_convention")
        self.window = QComboBox()
        self.window.addItems(list(WINDOWS))
        self.window.setObjectName("view_window")
        layout.addRow("Plane:", self.plane)
        layout.addRow("Left-right:", self.convention)
        layout.addRow("Window:", self.window)
        self.cursor_mm: np.ndarray | None = None
        self.plane.currentTextChanged.connect(self.apply)
        self.convention.currentIndexChanged.connect(self.apply)
        self.window.currentTextChanged.connect(self.apply_window)
        viewer.dims.events.current_step.connect(self._describe)
        viewer.mouse_move_callbacks.append(self._on_mouse_move)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.canvas.overlays.text.visible = True
        viewer.canvas.overlays.text.position = "top_left"
        viewer.canvas.overlays.text.font_size = 10
        viewer.canvas.overlays.text.color = "white"
        self.apply()  # a scan already open starts in the chosen plane and convention

    def _on_inserted(self, event: Any) -> None:
        """The first volume opened starts in the chosen view (later ones keep the user's)."""
        volumes = [layer for layer in self.viewer.layers if getattr(layer, "ndim", 0) >= 3]
        if len(volumes) == 1 and volumes[0] is event.value:
            self.apply()

    @property
    def radiological(self) -> bool:
        return self.convention.currentIndex() == 1

    def apply(self, *args: Any) -> None:
        """Show the chosen plane with anterior / superior up and left-right
        by the chosen convention."""
        viewer = self.viewer
        if viewer.dims.ndim < 3:
            return
        order, _, (vertical, horizontal) = PLANES[self.plane.currentText()]
        lead = tuple(range(viewer.dims.ndim - 3))  # any axes before x, y, z (none for one scan)
        viewer.dims.order = lead + tuple(len(lead) + a for a in order)
        viewer.dims.ndisplay = 2
        labels = list(viewer.dims.axis_labels)
        labels[-3:] = AXIS_LABELS
        viewer.dims.axis_labels = labels
        if horizontal == 0:  # x: the patient's right on the screen's right (neurological) or left
            along = "left" if self.radiological else "right"
        else:  # sagittal: anterior on the left, as radiology shows it
            along = "left"
        viewer.scene.camera.orientation2d = ("up", along)
        viewer.reset_view()
        self._describe()

    def apply_window(self, *args: Any) -> None:
        """Set the scan layer's contrast limits to the chosen percentiles of its head voxels."""
        layer = self.scan_layer()
        if layer is None:
            return
        low, high = WINDOWS[self.window.currentText()]
        data = np.asarray(layer.data, dtype=np.float32)
        inside = data[data > np.percentile(data, 20)] if data.size else data  # the head, not the air around it
        inside = inside if inside.size else data.ravel()
        lo, hi = (float(np.percentile(inside, q)) for q in (low, high))
        if low == 0.0 and high == 100.0:
            lo, hi = float(data.min()), float(data.max())
        layer.contrast_limits = (lo, hi if hi > lo else lo + 1.0)

    def describe(self) -> str:
        """The canvas line: plane, slice position, sides, cursor."""
        viewer = self.viewer
        plane = self.plane.currentText()
        _, sliced, (vertical, horizontal) = PLANES[plane]
        text = plane.upper()
        if viewer.dims.ndim >= 3:
            axis = viewer.dims.ndim - 3 + sliced
            text += f"  {'xyz'[sliced]} = {viewer.dims.point[axis]:.1f} mm"
        if horizontal == 0:
            text += "   patient's R on the " + ("LEFT (radiological)" if self.radiological else "RIGHT (neurological)")
        else:
            text += "   anterior on the left"
        text += "   up: " + ("anterior" if vertical == 1 else "superior")
        if self.cursor_mm is not None:
            x, y, z = self.cursor_mm
            text += f"\ncursor x {x:+.1f}  y {y:+.1f}  z {z:+.1f} mm (world = MNI for prepared scans)"
        return text

    def _describe(self, *args: Any) -> None:
        self.viewer.canvas.overlays.text.text = self.describe()

    def _on_mouse_move(self, viewer: Any, event: Any) -> None:
        position = np.asarray(viewer.cursor.position, dtype=float)
        if position.size >= 3:
            self.cursor_mm = position[-3:]
            self._describe()
