"""NIfTI <-> napari layer data, placed in world space (no Qt needed).

Reading: the file is reoriented to canonical RAS with nibabel, so array
axes run left->Right, posterior->Anterior, inferior->Superior and napari's
world coordinates are scanner millimetres (x, y, z). An axis-aligned affine
becomes ``scale`` (voxel sizes) and ``translate`` (the origin); an oblique
one is passed whole as the layer's ``affine``. The affine, the header
fields and the source path are kept in ``layer.metadata``.

Writing: the inverse; the affine comes from the layer's metadata when the
layer was read from NIfTI (or made on a model grid), otherwise from its
``scale``, ``translate`` and ``affine``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..data.scan_file import nifti_stem, open_nifti, read_canonical
from ..errors import ImageError

__all__ = [
    "NIFTI_SUFFIXES",
    "is_nifti_path",
    "get_reader",
    "read_nifti",
    "layer_kwargs_for",
    "scan_layer",
    "layer_affine",
    "write_nifti",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
LayerData = tuple[Any, dict[str, Any], str]


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _header_summary(header: Any) -> dict[str, Any]:
    """JSON-friendly header fields worth showing and keeping."""
    out: dict[str, Any] = {}
    try:
        out["description"] = header["descrip"].item().decode("latin-1").strip("\x00 ")
        out["xyzt_units"] = list(header.get_xyzt_units())
        out["qform_code"] = int(header["qform_code"])
        out["sform_code"] = int(header["sform_code"])
        out["datatype"] = str(header.get_data_dtype())
    except (KeyError, AttributeError, ValueError):
        pass
    return out


def layer_kwargs_for(affine: np.ndarray) -> dict[str, Any]:
    """``scale``/``translate`` for an axis-aligned (RAS) affine, else the
    full ``affine``: the napari placement of voxel -> world ``affine``; the
    world axes in millimetres (``units``, which napari's scale bar shows)."""
    affine = np.asarray(affine, dtype=float)
    linear = affine[:3, :3]
    units = {"units": ("mm", "mm", "mm")}
    if np.allclose(linear, np.diag(np.diag(linear)), atol=1e-6) and (np.diag(linear) > 0).all():
        return {"scale": tuple(np.diag(linear)), "translate": tuple(affine[:3, 3]), **units}
    return {"affine": affine, **units}


def read_nifti(path: str | os.PathLike | list) -> list[LayerData]:
    """Read one or several NIfTI files into napari image layer data.

    A 4D file gives its first volume, with a warning (napari shows it as a
    notification). Unscaled integer data stays integer; scaled data
    (``scl_slope`` / ``scl_inter``) comes back as the float32 values nibabel
    defines. The header is checked first (:func:`~napari_hyperfusion.data.scan_file.open_nifti`):
    RGB, singular affines and volumes too large for memory are refused
    before anything is read."""
    paths = path if isinstance(path, list) else [path]
    layers = []
    for p in paths:
        p = Path(p)
        img = open_nifti(p)  # header checks before any voxel is read
        note = ""
        if len(img.shape) == 4 and img.shape[3] > 1:
            warnings.warn(f"{p.name} has {img.shape[3]} volumes; showing the first one", stacklevel=2)
            note = f"volume 1 of {img.shape[3]}"
        data, affine = read_canonical(img, name=p.name, keep_integers=True)
        metadata = {"nifti_header": _header_summary(img.header), **({"note": note} if note else {})}
        layers.append(scan_layer(data, affine, nifti_stem(p), str(p), metadata))
    return layers


def scan_layer(data: np.ndarray, affine: np.ndarray, name: str, source: str, metadata: dict) -> LayerData:
    """A scan as napari image layer data, placed in world space.

    Args:
        data: ``[X, Y, Z]`` voxels in canonical RAS.
        affine: ``[4, 4]`` voxel -> world (RAS mm).
        name: the layer's name.
        source: where it was read from (kept as ``source_path``).
        metadata: what the reader adds (its header summary).

    Returns:
        ``(data, kwargs, "image")``: grey, with contrast limits at the 0.5th
        and 99.8th percentiles of the finite voxels.
    """
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    low, high = np.percentile(finite, [0.5, 99.8]) if finite.size else (0.0, 1.0)
    kwargs = {
        "name": name,
        "metadata": {
            "affine": affine.tolist(),
            **metadata,
            "source_path": source,
            "space": "scanner RAS (mm), canonical orientation",
        },
        "colormap": "gray",
        "contrast_limits": (float(low), float(high) if high > low else float(low) + 1.0),
        **layer_kwargs_for(affine),
    }
    return data, kwargs, "image"


def get_reader(path: str | list) -> Any:
    """npe2 reader hook: :func:`read_nifti` for NIfTI files nibabel can
    open, ``None`` otherwise (decided from the header, without raising)."""
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or not is_nifti_path(p):
            return None
        try:
            img = nib.load(str(p))
        except Exception:  # any failure means "not for us": napari tries other readers
            return None
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)) or len(img.shape) not in (3, 4):
            return None
    return read_nifti


def layer_affine(data_ndim: int, meta: dict[str, Any]) -> np.ndarray:
    """Voxel -> world affine (4x4) of a layer from its ``metadata`` and
    placement (``scale``, ``translate``, ``affine`` in ``meta``)."""
    if "affine" in meta.get("metadata", {}):
        return np.asarray(meta["metadata"]["affine"], dtype=float)
    out = np.eye(4)
    scale = np.asarray(meta.get("scale", np.ones(data_ndim)), dtype=float)[-3:]
    translate = np.asarray(meta.get("translate", np.zeros(data_ndim)), dtype=float)[-3:]
    out[:3, :3] = np.diag(scale)
    out[:3, 3] = translate
    extra = meta.get("affine")
    if extra is not None:
        extra = np.asarray(getattr(extra, "affine_matrix", extra), dtype=float)[-4:, -4:]
        out = extra @ out
    return out


def write_nifti(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer: save an image layer as NIfTI with its
    world placement. Returns the written path(s)."""
    from .atomic import atomic_write

    array = np.asarray(data)
    if array.ndim != 3:
        raise ImageError(f"only 3D image layers can be saved as NIfTI (this one is {array.ndim}D)")
    if not path.lower().endswith(NIFTI_SUFFIXES):
        path = path + ".nii.gz"
    if array.dtype == np.float64 or array.dtype == bool:
        array = array.astype(np.float32)
    img = nib.Nifti1Image(array, layer_affine(3, meta))
    img.header.set_xyzt_units("mm")
    description = str(meta.get("name", ""))[:79]
    img.header["descrip"] = description.encode("latin-1", "replace")
    # nibabel picks the format from the suffix, so keep it on the temporary file
    suffix = ".nii.gz" if path.lower().endswith(".gz") else ".nii"
    atomic_write(path, lambda tmp: (nib.save(img, tmp + suffix), os.replace(tmp + suffix, tmp)))
    return [path]
