"""Attribution maps as napari layer data, placed in world space.

Each view's map keeps its model-grid affine (voxel -> MNI mm; the mirrored
left hippocampus view has a negative x step), so it lies on the scan
without resampling. Unsigned maps (saliency, Grad-CAM): a heat map that
is see-through below a fifth of its range (red -> yellow above), translucent,
limits from 0 to the 99.5th percentile, so the anatomy stays visible. Signed maps
(Integrated Gradients, occlusion): a purple-transparent-green diverging map
(green: pushes the output up; zero is see-through), translucent, symmetric
limits at the 99.5th percentile of
``|map|``. The metadata records method, parameters, target, the model's
hash and the EHR values, and ``overlay_key`` identifies the map so that a
re-run replaces it in place while other scans keep theirs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io.nifti import layer_kwargs_for
from .explain import ImageAttribution

__all__ = ["overlay_layers", "overlay_legend", "OVERLAY_KEY", "DIVERGING", "HEAT", "PERCENT_UNIT"]

PERCENT_UNIT = "% of the map's 99.5th-percentile magnitude"  # what an overlay's values (and colour bar) read

OVERLAY_KEY = "hyperfusion_overlay"
# purple (pulls the output down) -> transparent at 0 -> green (pushes it up):
# a signed map must not veil the scan where it is near zero
DIVERGING = {
    "name": "hyperfusion_diverging",
    "colors": [[0.46, 0.16, 0.51, 1.0], [0.76, 0.65, 0.81, 0.6], [1.0, 1.0, 1.0, 0.0],
               [0.65, 0.86, 0.63, 0.6], [0.11, 0.47, 0.22, 1.0]],
    "controls": [0.0, 0.25, 0.5, 0.75, 1.0],
}  # fmt: skip


# transparent below a fifth of the range, then red -> orange -> yellow: an unsigned map (saliency,
# Grad-CAM) that leaves the anatomy visible where it is weak instead of adding up to white
HEAT = {
    "name": "hyperfusion_heat",
    "colors": [[0.0, 0.0, 0.0, 0.0], [0.7, 0.1, 0.05, 0.0], [0.85, 0.2, 0.05, 0.55], [1.0, 0.6, 0.0, 0.8],
               [1.0, 1.0, 0.35, 0.95]],
    "controls": [0.0, 0.2, 0.35, 0.7, 1.0],
}  # fmt: skip


def overlay_legend(method: str, target: str, signed: bool, output_kind: str = "probability") -> str:
    """One line that says how to read a map's colours, e.g. ``"green raises P(AD)"``.

    Args:
        method: the attribution method's name.
        target: the output explained (a class, a label, or the regression output).
        signed: whether the map has a sign (IG, occlusion).
        output_kind: ``"probability"``, ``"logit"`` or ``"value"``.
    """
    what = {"logit": f"the log-odds of {target}", "probability": f"P({target})"}.get(output_kind, target)
    if method in ("saliency shift", "saliency difference"):  # what-if saliency minus the patient's
        return f"{method}: green = {what} more sensitive there in the what-if, purple = less; see-through: unchanged"
    if signed:
        return f"{method}: green raises {what}, purple lowers it; see-through: no effect"
    return f"{method}: yellow = where {what} is most sensitive (unsigned); see-through: little"


def overlay_layers(
    attribution: ImageAttribution,
    source_layer: str,
    model_name: str,
    model_sha256: str,
    record: dict[str, Any],
    scan_fingerprint: str = "",
    case: str = "",
) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """``[(data [D, H, W], layer kwargs), ...]``, one per view.

    ``scan_fingerprint`` ties each map to the scan it was computed on (the
    panel removes a scan's maps with the scan); ``case`` names the case in
    words (:meth:`CaseIdentity.describe`)."""
    out = []
    kind = attribution.output_kind
    if kind == "probability" and attribution.probability is None:  # a regressor's output, in its unit
        kind = "value"
    legend = overlay_legend(attribution.method.replace("_", " "), attribution.target, attribution.signed, kind)
    for data, affine, view in zip(attribution.maps, attribution.affines, attribution.view_names):
        magnitude = float(np.percentile(np.abs(data), 99.5)) or float(np.abs(data).max()) or 1.0
        # shown in percent of the map's 99.5th-percentile magnitude: a colour bar reading 0 to 100 %,
        # not 0 to 0.0001 of a probability per intensity unit; the raw scale stays in the metadata
        data = (np.asarray(data, dtype=np.float32) * np.float32(100.0 / magnitude)).astype(np.float32)
        if attribution.signed:
            style = {"colormap": DIVERGING, "blending": "translucent", "opacity": 0.9,
                     "contrast_limits": (-100.0, 100.0)}  # fmt: skip
        else:
            style = {"colormap": HEAT, "blending": "translucent", "opacity": 0.9, "contrast_limits": (0.0, 100.0)}
        method = attribution.method.replace("_", " ")
        name = f"{method} -> {attribution.target} [{model_name}] {view} on {source_layer}"
        metadata = {
            OVERLAY_KEY: {
                "source_layer": source_layer,
                "view": view,
                "model_sha256": model_sha256,
                "scan_fingerprint": scan_fingerprint,
            },  # fmt: skip
            "case": case,
            "affine": np.asarray(affine).tolist(),
            "attribution": {
                "method": attribution.method,
                "parameters": attribution.params,
                "target": attribution.target,
                "model": model_name,
                "model_sha256": model_sha256,
                "ehr_values": dict(record),
                "output": attribution.output,
                "convergence_delta": attribution.convergence_delta,
                "relative_delta": attribution.relative_delta,
                "space": "MNI152 mm (model grid)",
                "legend": legend,
                "unit": PERCENT_UNIT,
                "raw_per_100_percent": magnitude,  # multiply the layer's values by this / 100 for the attribution
            },
        }
        out.append((data, {"name": name, "metadata": metadata, **style, **layer_kwargs_for(affine)}))
    return out
