"""Reading conventions for the canvas: the plane, neurological or
radiological left-right, window/level presets, the patient's sides as
letters on the canvas edges (R/L, A/P, S/I), a millimetre scale bar, a line
that says what the screen shows (plane, slice in mm, which side is the
patient's right, the cursor's MNI millimetres), the three planes at once
with a linked crosshair (:mod:`.linked_views`), and a lecture size.

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
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QWidget

from .orientation import PLANES, orient, show_side_letters

__all__ = ["ViewControls", "WINDOWS", "LECTURE_SCALE"]

# window/level presets for a T1 scan: percentiles of the voxels inside the head
WINDOWS = {
    "T1 brain (1-99 %)": (1.0, 99.0),
    "T1 contrast (5-95 %)": (5.0, 95.0),
    "full range": (0.0, 100.0),
}
LECTURE_SCALE = 1.6  # text size in lecture mode, relative to the normal size


class ViewControls(QWidget):
    """Plane, convention and window for the viewer's scan layers, the three
    planes at once, and the lecture size. ``lecture_changed(bool)`` asks
    the panel to scale its own text."""

    lecture_changed = Signal(bool)

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
        self.three_planes = QCheckBox("Three planes, linked crosshair (click to move it)")
        self.three_planes.setObjectName("view_three_planes")
        self.three_planes.setToolTip("the other two planes in a dock below the canvas; a click in any plane moves all")
        self.lecture = QCheckBox(f"Lecture size (text x{LECTURE_SCALE:g}, for a projector)")
        self.lecture.setObjectName("view_lecture")
        layout.addRow(self.three_planes)
        layout.addRow(self.lecture)
        self.ortho = None  # the OrthoViews, while shown
        self._ortho_dock = None
        self.cursor_mm: np.ndarray | None = None
        self.plane.currentTextChanged.connect(self.apply)
        self.convention.currentIndexChanged.connect(self.apply)
        self.window.currentTextChanged.connect(self.apply_window)
        self.three_planes.toggled.connect(self.show_three_planes)
        self.lecture.toggled.connect(self._on_lecture)
        viewer.dims.events.current_step.connect(self._describe)
        viewer.mouse_move_callbacks.append(self._on_mouse_move)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.canvas.overlays.text.visible = True
        viewer.canvas.overlays.text.position = "top_left"
        viewer.canvas.overlays.text.font_size = 10
        viewer.canvas.overlays.text.color = "white"
        viewer.canvas.overlays.scale_bar.visible = True  # in mm: the reader gives the layers mm units
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
        by the chosen convention, the side letters on the edges."""
        viewer = self.viewer
        if viewer.dims.ndim < 3:
            return
        plane = self.plane.currentText()
        orient(viewer, plane, self.radiological)
        show_side_letters(viewer, plane, self.radiological, self._font(16))
        viewer.reset_view()
        if self.ortho is not None:
            self.ortho.follow_plane(plane, self.radiological)
        self._describe()

    def _font(self, size: float) -> float:
        return size * (LECTURE_SCALE if self.lecture.isChecked() else 1.0)

    def _on_lecture(self, on: bool) -> None:
        self.viewer.canvas.overlays.text.font_size = self._font(10)
        show_side_letters(self.viewer, self.plane.currentText(), self.radiological, self._font(16))
        if self.ortho is not None:
            self.ortho.set_font_scale(LECTURE_SCALE if on else 1.0)
        self.lecture_changed.emit(on)

    def show_three_planes(self, on: bool) -> None:
        """Dock (or close) the other two planes below the canvas."""
        from .linked_views import OrthoViews, close_with_window

        if on and self.ortho is None:
            self.ortho = OrthoViews(self.viewer)
            self.ortho.follow_plane(self.plane.currentText(), self.radiological)
            self.ortho.set_font_scale(LECTURE_SCALE if self.lecture.isChecked() else 1.0)
            window = getattr(self.viewer, "window", None)
            if window is not None and hasattr(window, "add_dock_widget"):
                self._ortho_dock = window.add_dock_widget(self.ortho, area="bottom", name="Three planes")
                close_with_window(self.ortho)
        elif not on and self.ortho is not None:
            self.ortho.close_views()
            if self._ortho_dock is not None:
                self.viewer.window.remove_dock_widget(self._ortho_dock)
            self.ortho, self._ortho_dock = None, None

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
        # short lines: the top edge's side letter sits at the centre of the canvas
        text = plane.upper()
        if viewer.dims.ndim >= 3:
            axis = viewer.dims.ndim - 3 + sliced
            text += f"  {'xyz'[sliced]} = {viewer.dims.point[axis]:.1f} mm"
        if horizontal == 0:  # the letters on the edges say it too; this names the convention
            text += "\nR on the " + ("LEFT (radiological)" if self.radiological else "RIGHT (neurological)")
        else:
            text += "\nanterior on the LEFT"
        if self.cursor_mm is not None:
            x, y, z = self.cursor_mm
            text += f"\ncursor x {x:+.1f}  y {y:+.1f}  z {z:+.1f} mm\n(world = MNI for prepared scans)"
        return text

    def _describe(self, *args: Any) -> None:
        self.viewer.canvas.overlays.text.text = self.describe()

    def _on_mouse_move(self, viewer: Any, event: Any) -> None:
        position = np.asarray(viewer.cursor.position, dtype=float)
        if position.size >= 3:
            self.cursor_mm = position[-3:]
            self._describe()
