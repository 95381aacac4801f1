"""Reading one DICOM series into a volume in world space.

Before any pixel is read the series must be a magnitude MR image (not CT,
not a localiser, not colour), every file's transfer syntax must have a
decoder installed (the message names what to install), and the volume must
fit :data:`~napari_hyperfusion.data.scan_file.MAX_SCAN_VOXELS`. Pixels are
then read slice by slice in the order :func:`.geometry.stack_geometry`
found, each with its own Rescale Slope / Intercept (they may differ per
slice), and the volume is reoriented to canonical RAS exactly as a NIfTI
file is (:func:`~napari_hyperfusion.data.scan_file.to_canonical`).

Example:
    >>> volume = read_series(find_series("t1_folder")[0])
    >>> volume.data.shape, volume.affine      # [X, Y, Z] RAS, voxel -> mm
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...errors import ImageError
from ..scan_file import MAX_SCAN_VOXELS, to_canonical
from .discover import Series, shown_name
from .geometry import stack_geometry
from .text import plain_text

__all__ = ["DicomVolume", "check_readable", "read_series", "series_name"]

MR = "MR"


@dataclass
class DicomVolume:
    """``data [X, Y, Z]`` (canonical RAS; float32, or the stored integers
    where no slice is rescaled) and ``affine`` ``[4, 4]`` voxel -> RAS mm."""

    data: np.ndarray
    affine: np.ndarray
    series: Series


def series_name(series: Series) -> str:
    """How messages name a series: ``<description> [<key>]`` (no identifier)."""
    return f"{series.description or 'DICOM series'} [{series.key}]"


def _decoder_problem(uid: str) -> str | None:
    """``None`` when pixels of this transfer syntax can be decoded here,
    else what to install."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    if not uid:
        return None
    try:
        decoder = get_decoder(UID(uid))
    except NotImplementedError:
        return f"pydicom has no decoder at all for transfer syntax {plain_text(uid, 64)}"
    if decoder.is_available:
        return None
    options = "; or ".join(str(m).replace(" - requires ", ": pip install ") for m in decoder.missing_dependencies)
    return f"its pixels are compressed as {UID(uid).name}, which no installed decoder reads (install one: {options})"


def check_readable(series: Series) -> None:
    """Refuse, from the headers alone, a series this tool cannot read as a
    T1 volume.

    Args:
        series: from :func:`.discover.find_series`.

    Raises:
        ImageError: not MR, a localiser, colour or inverted grey pixels, a
            transfer syntax without an installed decoder (what to install is
            named), or more voxels than a scan may have.
    """
    name = series_name(series)
    if series.modality != MR:
        what = f"a {series.modality} series" if series.modality else "a series with no Modality"
        raise ImageError(f"{name} is {what}; the models read magnetic resonance (MR) T1 scans")
    if any(word.upper() in ("LOCALIZER", "LOCALISER", "SCOUT") for word in series.image_type):
        image_type = "/".join(series.image_type)
        raise ImageError(f"{name} is a localiser (Image Type {image_type}), not a 3D T1 volume")
    if series.samples_per_pixel != 1 or not series.photometric.startswith("MONOCHROME"):
        raise ImageError(f"{name} holds {series.photometric} colour pixels; a T1 scan is one grey value per voxel")
    if series.photometric == "MONOCHROME1":
        raise ImageError(f"{name} stores inverted grey values (MONOCHROME1), which an MR T1 never should")
    for uid in sorted(series.transfer_syntaxes):
        problem = _decoder_problem(uid)
        if problem:
            raise ImageError(f"{name}: {problem}")
    if series.frames:
        frame = series.frames[0]
        n_voxels = frame.rows * frame.columns * series.n_slices
        if n_voxels > MAX_SCAN_VOXELS:
            raise ImageError(
                f"{name} would be {frame.columns}x{frame.rows}x{series.n_slices} voxels, more than the "
                f"{MAX_SCAN_VOXELS / 1e6:.0f} million a brain MRI needs"
            )


def _pixels(path, name: str):
    from pydicom import dcmread

    try:
        return dcmread(path).pixel_array
    except Exception as err:  # pydicom and its decoders raise many types for a damaged file
        text = plain_text(str(err), 200)
        raise ImageError(
            f"{name}: slice file {shown_name(path)} cannot be decoded ({type(err).__name__}: {text})"
        ) from None


def read_series(
    series: Series,
    progress: Callable[[int, int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> DicomVolume:
    """Read a series' pixels into a volume in canonical RAS.

    Args:
        series: from :func:`.discover.find_series`.
        progress: called as ``progress(done, total)`` per slice.
        cancelled: polled between files; when it returns True the read stops
            with an :class:`ImageError`.

    Returns:
        The :class:`DicomVolume`.

    Raises:
        ImageError: any refusal of :func:`check_readable` or
            :func:`.geometry.stack_geometry`, a slice whose pixels are
            truncated or cannot be decoded, or a slice of another size than
            its header says.
    """
    check_readable(series)
    name = series_name(series)
    geometry = stack_geometry(series.frames, name)
    frames = [series.frames[i] for i in geometry.order]
    rows, columns = frames[0].rows, frames[0].columns
    bad = next((k for k, f in enumerate(frames) if f.slope == 0 or not np.isfinite([f.slope, f.intercept]).all()), None)
    if bad is not None:
        raise ImageError(
            f"{name}: slice {bad + 1} of {len(frames)} has Rescale Slope {frames[bad].slope:g} and Intercept "
            f"{frames[bad].intercept:g}, which turn its pixels into no usable values"
        )
    rescaled = any(f.slope != 1.0 or f.intercept != 0.0 for f in frames)
    stack: np.ndarray | None = None
    cache: dict = {}  # an enhanced file is decoded once for all its frames
    for k, frame in enumerate(frames):
        if cancelled is not None and cancelled():
            raise ImageError(f"reading {name} was cancelled")
        if frame.path not in cache:
            cache.clear()
            cache[frame.path] = _pixels(frame.path, name)
        if progress is not None:
            progress(k + 1, len(frames))
        pixels = cache[frame.path]
        plane = pixels[frame.index] if frame.index is not None and pixels.ndim == 3 else pixels
        if plane.shape != (rows, columns):
            raise ImageError(
                f"{name}: {shown_name(frame.path)} holds a {plane.shape} image where its header says {rows}x{columns}"
            )
        if stack is None:
            dtype = np.float32 if rescaled or plane.dtype.kind not in "iu" else plane.dtype
            stack = np.empty((len(frames), rows, columns), dtype=dtype)
            first_dtype = plane.dtype
        elif not rescaled and plane.dtype != first_dtype:  # a cast would wrap values around: refuse
            raise ImageError(
                f"{name} mixes pixel formats ({first_dtype} and {plane.dtype} in {shown_name(frame.path)}); "
                "one volume has one format"
            )
        if rescaled:  # float64 before the cast: the same numbers nibabel gives for a scaled NIfTI
            stack[k] = (plane.astype(np.float64) * frame.slope + frame.intercept).astype(np.float32)
        else:
            stack[k] = plane
    data = np.transpose(stack, (2, 1, 0))  # [slice, row, column] -> [column, row, slice]
    data, affine = to_canonical(data, geometry.affine, name)
    return DicomVolume(data=data, affine=affine, series=series)
