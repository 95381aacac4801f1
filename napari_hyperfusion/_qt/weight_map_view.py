"""The weight-space map on screen: the training cohort's generated networks
as points, the patient's and the what-if patient's among them.

A view of a :class:`~napari_hyperfusion.infer.weight_map.WeightMap` (the
model class); the what-if section gives it the two points as the sliders
move. Colours are colour-blind safe (Okabe-Ito) and distinct from the
markers of the two patients (black), so nothing on the map needs the
legend explained twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from ..infer.weight_map import WeightMap
from .plain import PlainCanvas

__all__ = ["WeightMapView", "CLASS_COLOURS", "typical_distance", "draw_weight_map"]

# Okabe-Ito, one colour per class in every view (CN blue, MCI bluish green, AD vermillion for the AD
# task): told apart with the common colour-vision deficiencies, and none of them black, the patients' colour
CLASS_COLOURS = ["#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]


def typical_distance(points: np.ndarray) -> float:
    """Median distance between two training subjects on the map (the scale a
    move is told in)."""
    if len(points) < 2:
        return 0.0
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(points), (2, 4000))
    keep = i != j
    return float(np.median(np.linalg.norm(points[i[keep]] - points[j[keep]], axis=1)))


def _plane(points: np.ndarray) -> np.ndarray:
    """Points as 2D (a one-axis map on a line)."""
    return points if points.shape[1] == 2 else np.c_[points[:, 0], np.zeros(len(points))]


def draw_weight_map(ax, wmap: WeightMap, size: float = 6.0, classes: Sequence[str] = ()):
    """Draw ``wmap`` on the matplotlib axes ``ax`` (the panel and the slide
    share it); returns the ``(patient, whatif, move)`` line artists, empty,
    for :meth:`WeightMapView.set_points` or for a fixed figure to fill.
    ``classes`` (the model's outputs, in order) give each class the colour
    it has in every other view (CN blue, MCI green, AD vermillion)."""
    fig = ax.figure
    points = _plane(wmap.points)
    if wmap.target_kind == "class":
        order = [str(c) for c in classes]
        names = sorted(dict.fromkeys(str(t) for t in wmap.targets),
                       key=lambda n: order.index(n) if n in order else len(order))  # fmt: skip
        for name in names:
            k = order.index(name) if name in order else len(order) + names.index(name)
            mine = np.array([str(t) == name for t in wmap.targets])
            ax.scatter(points[mine, 0], points[mine, 1], s=size * 1.7, color=CLASS_COLOURS[k % len(CLASS_COLOURS)],
                       edgecolors="#555555", linewidths=0.3, alpha=0.8, label=f"{name} (training)")  # fmt: skip
    else:
        values = np.asarray(wmap.targets, dtype=float)
        dots = ax.scatter(points[:, 0], points[:, 1], s=size * 1.7, c=values, cmap="cividis", alpha=0.85,
                          edgecolors="none")  # fmt: skip
        bar = fig.colorbar(dots, ax=ax, fraction=0.06, pad=0.02)
        bar.set_label(wmap.target_name or "target", fontsize=size)
        bar.ax.tick_params(labelsize=size)
    (move,) = ax.plot([], [], color="black", linestyle="--", linewidth=0.8)
    (patient,) = ax.plot([], [], "o", color="black", markersize=size, label="patient")
    (whatif,) = ax.plot([], [], "*", color="black", markerfacecolor="white", markersize=size * 1.8,
                        markeredgewidth=1.0, label="what if")  # fmt: skip
    share = [f"{v:.0%}" for v in wmap.explained]
    ax.set_xlabel(f"axis 1 ({share[0]} of the variation between subjects' generated weights)", fontsize=size)
    if wmap.dims == 2:
        ax.set_ylabel(f"axis 2 ({share[1]})", fontsize=size)
    else:
        ax.set_yticks([])
        ax.set_ylabel("(one direction only)", fontsize=size)
    ax.set_title(
        f"Weight space: the generated layer(s) of {len(wmap.points)} training subjects\n"
        "(near = similar personalised networks)",
        fontsize=size + 1,
    )
    ax.tick_params(labelsize=size)
    ax.legend(fontsize=size - 1, loc="best", framealpha=0.7)
    return patient, whatif, move


class WeightMapView(QWidget):
    """The map and a one-line reading of it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.figure = Figure(figsize=(3.2, 2.6))
        self.canvas = PlainCanvas(self.figure)
        self.canvas.setMinimumHeight(230)
        self.canvas.setObjectName("weight_map_canvas")
        layout.addWidget(self.canvas)
        self.reading = QLabel()
        self.reading.setObjectName("weight_map_reading")
        self.reading.setWordWrap(True)
        self.reading.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.reading)
        self.weight_map: WeightMap | None = None
        self.scale = 0.0
        self._bounds = (np.zeros(2), np.zeros(2))
        self._patient = self._whatif = self._move = None
        self._background = None  # the drawn map without the markers, for blitting them on a slider tick
        self.canvas.mpl_connect("draw_event", self._on_drawn)
        # a timer owned by the view: a blit pending when the view is closed dies with it
        self._blit_soon = QTimer(self)
        self._blit_soon.setSingleShot(True)
        self._blit_soon.setInterval(0)
        self._blit_soon.timeout.connect(self._blit)

    def set_map(self, wmap: WeightMap | None, why_not: str = "", classes: Sequence[str] = ()) -> None:
        """Draw ``wmap``'s training points (or say why there is no map)."""
        self.weight_map = wmap
        self._patient = self._whatif = self._move = None
        self._background = None
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(111)
        if wmap is None:
            ax.text(0.5, 0.5, why_not or "this model has no weight-space map", ha="center", va="center",
                    fontsize=7, wrap=True)  # fmt: skip
            ax.set_axis_off()
            self.reading.setText("")
            self.canvas.draw_idle()
            return
        # a colour bar (numeric targets) and its label need room on the right
        fig.subplots_adjust(left=0.14, right=0.97 if wmap.target_kind == "class" else 0.86, top=0.86, bottom=0.17)
        self._patient, self._whatif, self._move = draw_weight_map(ax, wmap, classes=classes)
        for marker in self._markers():  # drawn on a saved background: a slider tick repaints only them
            marker.set_animated(True)
        points = _plane(wmap.points)
        self.scale = typical_distance(points)
        self._bounds = (points.min(0), points.max(0))
        self.canvas.draw_idle()

    def set_points(self, patient: np.ndarray, whatif: np.ndarray) -> str:
        """Place the patient (``[k]``) and the what-if patient on the map;
        returns the reading shown under it."""
        if self.weight_map is None or self._patient is None:
            return ""
        p = np.r_[patient, 0.0][:2]
        w = np.r_[whatif, 0.0][:2]
        self._patient.set_data([p[0]], [p[1]])
        self._whatif.set_data([w[0]], [w[1]])
        self._move.set_data([p[0], w[0]], [p[1], w[1]])
        # the view holds the training points and both markers (a what-if patient may leave the cohort)
        lo = np.minimum(self._bounds[0], np.minimum(p, w))
        hi = np.maximum(self._bounds[1], np.maximum(p, w))
        pad = 0.06 * np.maximum(hi - lo, 1e-6)
        ax = self._patient.axes
        limits = (
            (lo[0] - pad[0], hi[0] + pad[0]),
            (lo[1] - pad[1], hi[1] + pad[1]) if self.weight_map.dims == 2 else (-1.0, 1.0),
        )
        if self._background is not None and limits == (ax.get_xlim(), ax.get_ylim()):
            # after the event the caller is in (a slider tick): its own plot is painted first
            self._blit_soon.start()
        else:  # the view must grow or shrink: redraw the map (the markers follow in _on_drawn)
            self._background = None
            ax.set_xlim(*limits[0])
            ax.set_ylim(*limits[1])
            self.canvas.draw_idle()
        moved = float(np.linalg.norm(w - p))
        if moved < 1e-9:
            text = "The what-if network is the patient's own (no slider moved)."
        else:
            ratio = moved / self.scale if self.scale else float("nan")
            text = (
                f"The what-if network moved {ratio:.2f} times the typical distance between two training "
                "subjects' networks (dashed line)."
            )
        text += f" Fitted on {self.weight_map.fitted_on}." if self.weight_map.fitted_on else ""
        self.reading.setText(text)
        return text

    def _markers(self) -> list[Any]:
        return [m for m in (self._move, self._patient, self._whatif) if m is not None]

    def _on_drawn(self, event: Any = None) -> None:
        """After a full draw (new map, new limits, resize): keep the map
        without the markers, then paint them on it."""
        if not self._markers():
            self._background = None
            return
        self._background = self.canvas.copy_from_bbox(self.figure.bbox)
        self._paint_markers()

    def _blit(self) -> None:
        if self._background is None:  # a full draw came first and painted the markers
            return
        self.canvas.restore_region(self._background)
        self._paint_markers()

    def _paint_markers(self) -> None:
        for marker in self._markers():
            self.figure.draw_artist(marker)
        self.canvas.blit(self.figure.bbox)

    def points(self) -> dict[str, Any]:
        """Where the two markers are (for tests and export)."""
        if self._patient is None:
            return {}
        return {"patient": np.r_[self._patient.get_data()].ravel(), "whatif": np.r_[self._whatif.get_data()].ravel()}
