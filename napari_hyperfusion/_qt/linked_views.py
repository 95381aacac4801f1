"""Canvases linked to the main viewer: the three planes at once, and the
patient beside a what-if twin.

Each extra canvas is a napari ``ViewerModel`` drawn by its own ``QtViewer``
(napari's way to have several canvases in one window). Layers are mirrored
with the same arrays, not copies, so a 256**3 scan costs nothing twice.

- :class:`OrthoViews`: the two planes the main canvas does not show, with
  the main viewer's scan and overlays; one point (``dims.point``, world mm)
  is shared by all three, drawn as a crosshair in each, and a click in any
  plane moves it, so the other planes' slices follow.
- :class:`TwinView`: the patient's saliency, the what-if twin's and their
  difference side by side; the three cameras move together and the slice
  follows the main viewer. Each canvas is titled with its prediction.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from .orientation import PLANES, orient, show_side_letters
from .plain import plain_label

__all__ = [
    "LinkedCanvas",
    "OrthoViews",
    "TwinView",
    "CROSSHAIR_KEY",
    "CROSSHAIR_NAME",
    "is_crosshair",
    "CROSSHAIR_PX",
    "crosshair_lines",
    "crosshair_vectors",
    "crosshair_width",
    "close_with_window",
]

CROSSHAIR_NAME = "crosshair (three planes)"
CROSSHAIR_KEY = "hyperfusion_crosshair"  # in the layer's metadata: found again after the user renames it
MIRRORED_EVENTS = ("data", "contrast_limits", "colormap", "visible", "opacity", "blending", "name")


def is_crosshair(layer: Any) -> bool:
    """Whether ``layer`` is the three planes' crosshair (by its metadata, not its name)."""
    return bool(getattr(layer, "metadata", {}).get(CROSSHAIR_KEY))


def crosshair_lines(point: Sequence[float], extent: np.ndarray) -> np.ndarray:
    """Three lines through ``point`` along x, y and z, across the data.

    Args:
        point: world coordinates ``[3]`` (mm).
        extent: ``[2, 3]`` world minimum and maximum (``layers.extent.world``).

    Returns:
        ``[3, 2, 3]`` line end points; in any of the three planes, the two
        lines lying in it draw the cross.
    """
    point = np.asarray(point, dtype=float)[-3:]
    lines = np.repeat(point[None, None, :], 3, axis=0).repeat(2, axis=1)
    for axis in range(3):
        lines[axis, 0, axis], lines[axis, 1, axis] = extent[0, axis], extent[1, axis]
    return lines


def crosshair_vectors(point: Sequence[float], extent: np.ndarray) -> np.ndarray:
    """:func:`crosshair_lines` as napari vectors (start, then the step to
    the end), ``[3, 2, 3]``. A Vectors layer redraws in a fraction of a
    Shapes layer's time (no polygon triangulation: 27 ms per Shapes update,
    four per move of the point), and a 2D slice shows the two lines that
    start in it."""
    lines = crosshair_lines(point, extent)
    return np.stack([lines[:, 0], lines[:, 1] - lines[:, 0]], axis=1)


_CROSSHAIR_STYLE = {
    "edge_color": "#ffdd00",
    "name": CROSSHAIR_NAME,
    "metadata": {CROSSHAIR_KEY: True},
    "opacity": 0.8,
    "units": ("mm",) * 3,
    "vector_style": "line",
}  # rectangles: napari draws vectors as tapering triangles by default
CROSSHAIR_PX = 1.5  # the crosshair's width on screen: a width in mm goes below a pixel in a small canvas and vanishes


def crosshair_width(zoom: float) -> float:
    """The crosshair's width in mm for a camera showing ``zoom`` screen
    pixels per mm (a constant :data:`CROSSHAIR_PX` pixels on screen)."""
    return CROSSHAIR_PX / max(float(zoom), 1e-6)


def _mirror(layer: Any) -> Any:
    """A layer drawing the same array with the same look (no copy)."""
    from napari.layers import Layer

    data, state, kind = layer.as_layer_data_tuple()
    return Layer.create(data, state, kind)


@contextmanager
def _without_full_collection(qt_viewer: Any) -> Iterator[None]:
    """Remove layers from a linked canvas without napari's full garbage
    collection after each one.

    napari's canvas runs ``gc.collect()`` after each removed layer, a guard
    for an OpenGL driver bug on Windows. With torch and napari loaded that
    walks about 600,000 objects: 0.26 s of frozen window per linked canvas
    on 2 CPU cores, on top of the main canvas's own. Elsewhere the linked
    canvases update their scene graph once at the end and leave the removed
    layers' cycles to Python's collector (see :class:`_LateCollection` for
    large scans). On Windows, or where napari's canvas has no pause flag,
    napari's own path runs.
    """
    canvas = getattr(qt_viewer, "canvas", None)
    if sys.platform == "win32" or not all(
        hasattr(canvas, name) for name in ("_pause_scene_graph", "_update_scenegraph")
    ):
        yield
        return
    if canvas._pause_scene_graph:  # already paused (a napari batch): its end updates the scene
        yield
        return
    canvas._pause_scene_graph = True
    try:
        yield
    finally:
        canvas._pause_scene_graph = False
        canvas._update_scenegraph()


class _LateCollection(QObject):
    """One full garbage collection a second after large mirrors were removed.

    A removed layer and its mirrors are reference cycles: without napari's
    collection per side canvas their arrays wait for Python's own full
    collection, which may be many actions away. For the small demo scans
    that does not matter; a clinical scan (256**3 float32 is 64 MiB) should
    be given back soon, so one collection runs when the hand has stopped,
    not while it acts."""

    THRESHOLD_BYTES = 16 * 2**20
    DELAY_MS = 1000

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pending_bytes = 0
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(self.DELAY_MS)
        self.timer.timeout.connect(self._collect)

    def removed(self, layers: Sequence[Any]) -> None:
        self.pending_bytes += sum(int(getattr(getattr(layer, "data", None), "nbytes", 0) or 0) for layer in layers)
        if self.pending_bytes >= self.THRESHOLD_BYTES:
            self.timer.start()

    def _collect(self) -> None:
        self.pending_bytes = 0
        gc.collect()


_late_collection: _LateCollection | None = None


def late_collection() -> _LateCollection:
    """The one :class:`_LateCollection` of the process (all linked canvases
    add to the same count, so they share one collection)."""
    global _late_collection
    if _late_collection is None:
        _late_collection = _LateCollection(None)
    return _late_collection


def _on_click(move_to: Callable[[np.ndarray], None]):
    """A napari drag callback: a click that does not drag moves the point
    there (a drag still pans)."""

    def callback(viewer: Any, event: Any):
        start = np.asarray(event.position, dtype=float)
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if not dragged:
            move_to(start)

    return callback


class _CloseWatcher(QObject):
    """Calls ``close_views`` on its widget when the top-level window closes."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self.parent().close_views()
        return False


def close_with_window(widget: QWidget) -> None:
    """Close ``widget``'s canvases with the window it is docked in (each
    canvas is a napari QtViewer: it must go when the viewer goes)."""
    window = widget.window()
    if window is not widget:
        window.installEventFilter(_CloseWatcher(widget))


class LinkedCanvas(QWidget):
    """One extra napari canvas with a plain-text title above it."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        from napari.components import ViewerModel
        from napari.qt import QtViewer

        super().__init__(parent)
        self.model = ViewerModel(title=title)
        self.qt_viewer = QtViewer(self.model)
        self.title = plain_label(title, wrap=True)
        self.title.setObjectName("linked_title")
        self._mirrors: list[tuple[Any, Any]] = []  # (the main viewer's layer, its mirror here)
        self.late_collection = late_collection()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.title)
        layout.addWidget(self.qt_viewer, 1)
        self.setMinimumSize(220, 220)

    def mirror_of(self, source: Any) -> Any:
        """The layer mirroring ``source`` here, or ``None``."""
        return next((mirror for layer, mirror in self._mirrors if layer is source), None)

    def mirror(self, sources: Sequence[Any]) -> None:
        """Hold a mirror of exactly ``sources``, in their order, below any
        other layer: existing mirrors are kept, only the missing are made."""
        keep = [(layer, mirror) for layer, mirror in self._mirrors if any(layer is s for s in sources)]
        self.remove_layers([mirror for layer, mirror in self._mirrors if not any(layer is s for s in sources)])
        self._mirrors = []
        for source in sources:
            mirror = next((m for layer, m in keep if layer is source), None)
            if mirror is None:
                mirror = _mirror(source)
                self.model.layers.insert(len(self._mirrors), mirror)
            self._mirrors.append((source, mirror))
        for index, (_, mirror) in enumerate(self._mirrors):  # the main viewer's order
            at = self.model.layers.index(mirror)
            if at != index:
                self.model.layers.move(at, index)
        # nothing is selected in a linked canvas; napari's selection would keep
        # its last inserted layer as "current" after removal, and the scan with it
        self.model.layers.selection.clear()

    def remove_layers(self, layers: Sequence[Any]) -> None:
        """Remove ``layers`` from this canvas without napari's full garbage
        collection per layer (:func:`_without_full_collection`); large ones
        are collected a second later (:class:`_LateCollection`)."""
        if not layers:
            return
        with _without_full_collection(self.qt_viewer):
            for layer in layers:
                if layer in self.model.layers:
                    self.model.layers.remove(layer)
        self.model.layers.selection.clear()  # napari keeps the last inserted layer as "current"
        self.late_collection.removed(layers)

    def clear_layers(self) -> None:
        """Remove every layer, one by one (napari's ``clear`` is a batch whose
        end runs the full garbage collection regardless)."""
        self._mirrors = []
        self.remove_layers(list(self.model.layers))

    def set_point(self, point: Sequence[float]) -> None:
        if len(point) == self.model.dims.ndim and tuple(self.model.dims.point) != tuple(point):
            self.model.dims.point = tuple(point)

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not getattr(self, "_shown", False):  # fit the scan once the dock has its size
            self._shown = True
            QTimer.singleShot(200, self.model.reset_view)

    def close_canvas(self) -> None:
        if self.qt_viewer is None:
            return
        self.clear_layers()
        self.qt_viewer.close()
        self.qt_viewer.deleteLater()
        self.qt_viewer = None  # nothing keeps the QtViewer alive after its window


class OrthoViews(QWidget):
    """The two planes the main canvas does not show, linked by one point."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.canvases = [LinkedCanvas("coronal"), LinkedCanvas("sagittal")]
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for canvas in self.canvases:
            layout.addWidget(canvas)
            canvas.model.mouse_drag_callbacks.append(_on_click(self.move_point))
            canvas.model.dims.events.point.connect(self._from_canvas)
            canvas.model.camera.events.zoom.connect(self._fit_crosshair_widths)
        self._click = _on_click(self.move_point)
        viewer.mouse_drag_callbacks.append(self._click)
        self.plane, self.radiological, self.font_scale = "axial", False, 1.0
        self._watched: list[Any] = []
        self._drawn: dict[str, tuple] = {}  # (point, extent) the crosshairs show: "main", "sides"
        self._syncing = False  # True while the main viewer's point is passed on
        # a burst of layer events is one rebuild, 30 ms after the last; it then
        # takes one canvas per pass of the event loop, so the window (the
        # main canvas first) paints in between instead of freezing for all
        self._rebuild_timer = QTimer(self)
        self._rebuild_timer.setSingleShot(True)
        self._rebuild_timer.timeout.connect(self._rebuild_step)
        self._pending: list[LinkedCanvas] = []  # canvases the running rebuild has still to do
        # the main viewer's point is followed on the next pass of the event
        # loop: the main canvas's repaint is queued without waiting for the
        # side canvases, and a drag's burst of points is one update of theirs
        self._point_timer = QTimer(self)
        self._point_timer.setSingleShot(True)
        self._point_timer.setInterval(0)
        self._point_timer.timeout.connect(self._from_main)
        viewer.layers.events.inserted.connect(self._schedule)
        viewer.layers.events.removed.connect(self._schedule)
        viewer.layers.events.moved.connect(self._schedule)
        viewer.dims.events.point.connect(self._schedule_point)
        viewer.camera.events.zoom.connect(self._fit_crosshair_widths)
        self.rebuild()

    # -- which planes ---------------------------------------------------------
    def follow_plane(self, plane: str, radiological: bool) -> None:
        """Show the two planes other than the main canvas's ``plane``."""
        self.plane, self.radiological = plane, radiological
        others = [name for name in PLANES if name != plane]
        for canvas, name in zip(self.canvases, others):
            canvas.title.setText(f"{name} (click to move the crosshair)")
            canvas.model.title = name
            orient(canvas.model, name, radiological)
            show_side_letters(canvas.model, name, radiological, 12 * self.font_scale)
            canvas.model.reset_view()

    def set_font_scale(self, scale: float) -> None:
        self.font_scale = scale
        for canvas in self.canvases:
            show_side_letters(canvas.model, canvas.model.title, self.radiological, 12 * scale)
            font = canvas.title.font()
            font.setPointSizeF(9 * scale)
            canvas.title.setFont(font)

    @property
    def planes(self) -> list[str]:
        return [canvas.model.title for canvas in self.canvases]

    # -- layers -----------------------------------------------------------------
    def _volumes(self) -> list[Any]:
        from napari.layers import Image

        return [
            layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3
        ]  # fmt: skip

    @property
    def busy(self) -> bool:
        """True while a rebuild or a move of the point is still to be drawn."""
        return self._rebuild_timer.isActive() or self._point_timer.isActive()

    def _schedule(self, *args: Any) -> None:
        self._pending = []  # the layers changed again: start over
        self._rebuild_timer.start(30)

    def _schedule_point(self, *args: Any) -> None:
        """The main viewer's point moved: its own crosshair now (one layer,
        painted with the new slice), the side canvases on the next pass."""
        if self._syncing:
            return
        self._syncing = True
        try:
            self._draw_crosshairs(where=("main",))
        finally:
            self._syncing = False
        self._point_timer.start()

    def _watch(self, layers: list[Any]) -> None:
        """Follow the look and data of exactly ``layers``."""
        for layer in self._watched:
            if layer not in layers:
                for name in MIRRORED_EVENTS:
                    getattr(layer.events, name).disconnect(self._on_layer_event)
        for layer in layers:
            if layer not in self._watched:
                for name in MIRRORED_EVENTS:
                    getattr(layer.events, name).connect(self._on_layer_event)
        self._watched = layers

    def _on_layer_event(self, event: Any) -> None:
        """A watched layer's look or data changed: pass it on to its mirrors
        at once (cheap), instead of rebuilding every canvas."""
        source, name = event.source, event.type
        for canvas in self.canvases:
            mirror = canvas.mirror_of(source)
            if mirror is not None:
                setattr(mirror, name, getattr(source, name))
        if name == "data":  # the volumes' extent, and so the crosshair's, may have changed
            self._schedule()

    def rebuild(self) -> None:
        """Mirror the main viewer's 3D images and draw the crosshair in all
        three, now. Only what changed is added or removed: a new mirror
        costs a canvas layer (slicing, a GL texture), so the others are
        kept."""
        self._rebuild_timer.stop()
        self._pending = []
        self._watch(self._volumes())
        for canvas in self.canvases:
            self._rebuild_canvas(canvas)
        self._finish_rebuild()

    def _rebuild_step(self) -> None:
        """One canvas of a scheduled rebuild; the next on the next pass."""
        if not self._pending:
            self._watch(self._volumes())
            self._pending = list(self.canvases)
        self._rebuild_canvas(self._pending.pop(0))
        if self._pending:
            self._rebuild_timer.start(0)
        else:
            self._finish_rebuild()

    def _rebuild_canvas(self, canvas: LinkedCanvas) -> None:
        self._syncing = True  # rebuilding moves the canvas's dims: nothing goes back to the main viewer
        try:
            first = not len(canvas.model.layers)
            canvas.mirror(self._watched)
            extent = self._extent()
            crosshair = self._crosshair(canvas.model.layers)
            if extent is None and crosshair is not None:
                canvas.remove_layers([crosshair])
            if extent is not None:
                if crosshair is None:
                    canvas.model.add_vectors(
                        crosshair_vectors(self.viewer.dims.point, extent),
                        edge_width=crosshair_width(canvas.model.camera.zoom),
                        **_CROSSHAIR_STYLE,
                    )
                    canvas.model.layers.selection.clear()
                else:  # on top of the mirrors
                    canvas.model.layers.move(canvas.model.layers.index(crosshair), len(canvas.model.layers))
                orient(canvas.model, canvas.model.title, self.radiological)
                if first:
                    canvas.model.reset_view()
                canvas.set_point(self.viewer.dims.point)
        finally:
            self._syncing = False

    def _finish_rebuild(self) -> None:
        self._syncing = True
        try:
            self._draw_crosshairs(add=True)  # redrawn only where the point or the volumes moved
        finally:
            self._syncing = False
        self._from_main()  # the crosshair's own extent may have moved the point meanwhile

    def _extent(self) -> np.ndarray | None:
        """World extent (mm) of the mirrored volumes still in the viewer
        (not of the crosshair itself: it must not size itself)."""
        volumes = [layer for layer in self._watched if layer in self.viewer.layers]
        if not volumes:
            return None
        extents = np.stack([np.asarray(layer.extent.world, dtype=float)[:, -3:] for layer in volumes])
        return np.stack([extents[:, 0].min(axis=0), extents[:, 1].max(axis=0)])

    def _crosshair(self, layers: Any) -> Any:
        return next((layer for layer in layers if is_crosshair(layer)), None)

    def _draw_crosshairs(self, add: bool = False, where: tuple[str, ...] = ("main", "sides")) -> None:
        """The crosshair at the shared point in the main viewer and/or the
        side canvases (``where``), each only when the point or the volumes
        moved since it was drawn: setting a layer's data moves the dims,
        which would call this again. The main viewer's is added only when
        ``add`` (by a rebuild): while layers are being removed (a viewer
        closing clears them one by one) it must not come back."""
        extent = self._extent()
        main = self._crosshair(self.viewer.layers)
        if extent is None:
            if main is not None:
                self.viewer.layers.remove(main)
            self._drawn = {}
            return
        point = tuple(self.viewer.dims.point[-3:])
        key = (point, extent.tobytes())
        vectors = crosshair_vectors(point, extent)
        if "sides" in where and self._drawn.get("sides") != key:
            self._drawn["sides"] = key
            for canvas in self.canvases:
                layer = self._crosshair(canvas.model.layers)
                if layer is not None:
                    layer.data = vectors
        if "main" not in where or (self._drawn.get("main") == key and main is not None):
            return
        if main is None and add:
            self._drawn["main"] = key
            selected = set(self.viewer.layers.selection)
            active = self.viewer.layers.selection.active
            self.viewer.add_vectors(vectors, edge_width=crosshair_width(self.viewer.camera.zoom), **_CROSSHAIR_STYLE)
            # the crosshair is not what the user works on: the selection stays theirs
            self.viewer.layers.selection.clear()
            self.viewer.layers.selection.update(selected)
            self.viewer.layers.selection.active = active
        elif main is not None:
            self._drawn["main"] = key
            main.data = vectors

    def _fit_crosshair_widths(self, *args: Any) -> None:
        """Keep every crosshair :data:`CROSSHAIR_PX` wide on screen as its camera zooms."""
        for model in [self.viewer, *(canvas.model for canvas in self.canvases)]:
            layer = self._crosshair(model.layers)
            width = crosshair_width(model.camera.zoom)
            if layer is not None and not np.isclose(layer.edge_width, width, rtol=0.05):
                layer.edge_width = width

    # -- the shared point -----------------------------------------------------
    def move_point(self, position: np.ndarray) -> None:
        """Put the shared point (world mm) at ``position``."""
        if len(position) == self.viewer.dims.ndim:
            self.viewer.dims.point = tuple(float(v) for v in position)

    def _from_main(self, *args: Any) -> None:
        # the main viewer leads: what the canvases do meanwhile (their own
        # snapping to a slice, a range change) is not sent back, or two
        # grids that snap differently would pass the point back and forth
        if self._syncing:
            return
        self._syncing = True
        try:
            for canvas in self.canvases:
                canvas.set_point(self.viewer.dims.point)
            self._draw_crosshairs()
        finally:
            self._syncing = False

    def _from_canvas(self, event: Any) -> None:
        if self._syncing:
            return
        point = tuple(event.value)
        if len(point) == self.viewer.dims.ndim and tuple(self.viewer.dims.point) != point:
            self.viewer.dims.point = point

    def close_views(self) -> None:
        """Stop following the viewer and take the crosshair away."""
        if not self.canvases:
            return
        if self._click in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._click)
        for name in ("inserted", "removed", "moved"):
            getattr(self.viewer.layers.events, name).disconnect(self._schedule)
        self.viewer.dims.events.point.disconnect(self._schedule_point)
        self.viewer.camera.events.zoom.disconnect(self._fit_crosshair_widths)
        self._watch([])
        self._rebuild_timer.stop()
        self._point_timer.stop()
        self._pending = []
        self._syncing = True  # the side canvases' dims move as they empty: nothing goes to the main viewer
        crosshair = self._crosshair(self.viewer.layers)
        if crosshair is not None:
            self.viewer.layers.remove(crosshair)
        for canvas in self.canvases:
            canvas.close_canvas()
        self.canvases = []


class TwinView(QWidget):
    """Patient, what-if twin and difference side by side, cameras linked."""

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.header = plain_label("", wrap=True)
        self.header.setObjectName("twin_header")
        outer.addWidget(self.header)
        row = QHBoxLayout()
        outer.addLayout(row, 1)
        self.canvases = [LinkedCanvas("patient"), LinkedCanvas("what-if twin"), LinkedCanvas("difference")]
        for canvas in self.canvases:
            row.addWidget(canvas)
            canvas.model.scene.camera.events.center.connect(self._link_cameras)
            canvas.model.scene.camera.events.zoom.connect(self._link_cameras)
        self.stale = False
        self._linking = False
        viewer.dims.events.point.connect(self._follow_slice)

    def show_case(self, scan_layer: Any, maps: Sequence[tuple[np.ndarray, dict[str, Any]]], titles: Sequence[str],
                  header: str, plane: str, radiological: bool) -> None:  # fmt: skip
        """Show ``maps[i]`` (overlay data and layer kwargs) over the scan in canvas ``i``."""
        from napari.utils import Colormap

        self.stale = False
        self.header.setText(header)
        self.header.setStyleSheet("")
        for canvas, (data, kwargs), title in zip(self.canvases, maps, titles):
            canvas.title.setText(title)
            canvas.clear_layers()
            canvas.model.add_layer(_mirror(scan_layer))
            kwargs = dict(kwargs)
            if isinstance(kwargs.get("colormap"), dict):
                kwargs["colormap"] = Colormap(**kwargs["colormap"])
            layer = canvas.model.add_image(data, **kwargs)
            layer.colorbar.visible = True
            orient(canvas.model, plane, radiological)
            show_side_letters(canvas.model, plane, radiological, 12)
            canvas.model.reset_view()
            canvas.set_point(self.viewer.dims.point)

    def mark_stale(self, why: str) -> None:
        """The case changed: say so on top (the maps are the old case's)."""
        if self.stale or not len(self.canvases[0].model.layers):
            return
        self.stale = True
        self.header.setText(f"STALE - {why}; click Twin view again. " + self.header.text())
        self.header.setStyleSheet("color: #f0a030; font-weight: bold;")

    def _link_cameras(self, event: Any) -> None:
        if self._linking:
            return
        self._linking = True
        try:
            source = next(c.model.scene.camera for c in self.canvases if c.model.scene.camera is event.source)
            for canvas in self.canvases:
                if canvas.model.scene.camera is not source:
                    canvas.model.scene.camera.center = source.center
                    canvas.model.scene.camera.zoom = source.zoom
        except StopIteration:
            pass
        finally:
            self._linking = False

    def _follow_slice(self, *args: Any) -> None:
        for canvas in self.canvases:
            canvas.set_point(self.viewer.dims.point)

    def close_views(self) -> None:
        if not self.canvases:
            return
        self.viewer.dims.events.point.disconnect(self._follow_slice)
        for canvas in self.canvases:
            canvas.close_canvas()
        self.canvases = []
