"""Layers the panel adds to the viewer: attribution overlays, updated in
place when the same map (same scan, view, model and method) is recomputed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..analysis.overlays import OVERLAY_KEY

if TYPE_CHECKING:
    import napari

__all__ = ["SOURCE_KEY", "put_overlay", "overlays_of", "layer_named"]


SOURCE_KEY = "source_layer"  # the unique id of the scan layer an overlay was computed on


def put_overlay(viewer: napari.Viewer, data: np.ndarray, kwargs: dict[str, Any], source: Any = None) -> Any:
    """Replace the overlay with the same key; add it otherwise. ``source``:
    the scan layer it was computed on (a second layer of the same scan, even
    under the same name, is another case). Returns the layer."""
    if source is not None:
        kwargs = {**kwargs, "metadata": {**kwargs["metadata"], SOURCE_KEY: str(source.unique_id)}}
    if isinstance(kwargs["colormap"], dict):
        from napari.utils import Colormap

        kwargs = {**kwargs, "colormap": Colormap(**kwargs["colormap"])}
    key = kwargs["metadata"][OVERLAY_KEY]
    layer = None
    for existing in viewer.layers:
        if existing.metadata.get(OVERLAY_KEY) == key:
            existing.data = data
            existing.name = kwargs["name"]
            existing.metadata = kwargs["metadata"]
            existing.colormap = kwargs["colormap"]
            existing.blending = kwargs["blending"]
            existing.opacity = kwargs["opacity"]
            existing.contrast_limits = kwargs["contrast_limits"]
            layer = existing
            break
    if layer is None:
        layer = viewer.add_image(data, **kwargs)
    # one colour bar on the canvas: the newest map's (several would cover each other)
    for other in viewer.layers:
        if OVERLAY_KEY in other.metadata and hasattr(other, "colorbar"):
            other.colorbar.visible = other is layer
    return layer


def overlays_of(viewer: napari.Viewer, scan_fingerprint: str) -> list[Any]:
    """The overlay layers computed on the scan with this fingerprint."""
    return [
        layer
        for layer in viewer.layers
        if scan_fingerprint and layer.metadata.get(OVERLAY_KEY, {}).get("scan_fingerprint") == scan_fingerprint
    ]


def layer_named(viewer: napari.Viewer, name: str) -> Any:
    """The layer called ``name``, or None."""
    return next((layer for layer in viewer.layers if name and layer.name == name), None)
