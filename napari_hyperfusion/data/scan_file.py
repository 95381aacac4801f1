"""Opening a NIfTI scan safely: every check that can be made from the
header is made before a voxel is read.

A scan file is refused with a specific :class:`ImageError` when it is not
NIfTI, has a singular or non-finite affine (the voxel -> world matrix), holds
RGB or complex voxels, or claims a volume larger than
:data:`MAX_SCAN_VOXELS` (so a forged header cannot make us allocate
gigabytes). Voxels are read as nibabel defines them: with the header's
``scl_slope`` / ``scl_inter`` applied, in floating point. Only the first
volume of a 4D file is read.

Example:
    >>> img = open_nifti("sample_data/SYN_DEMO_01.nii.gz")   # header only
    >>> data = read_first_volume(img)                         # float32 [X, Y, Z]
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..errors import ImageError

__all__ = [
    "MAX_SCAN_VOXELS",
    "open_nifti",
    "is_scaled",
    "read_first_volume",
    "read_canonical",
    "to_canonical",
    "check_affine",
    "nifti_stem",
    "is_nifti_path",
]

# 512^3 voxels: 512 MiB as float32, four times a 0.5 mm whole-head scan; a
# header claiming more is refused before anything is allocated
MAX_SCAN_VOXELS = 512**3
FLOAT32_MAX = float(np.finfo(np.float32).max)

# what nibabel raises on a file it cannot make sense of: a forged or damaged
# header (an unknown data code, an offset inside the header, a scale that is
# not finite) as well as a truncated or mis-compressed file
_READ_ERRORS = (
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
    EOFError,
    OSError,
    OverflowError,
    zlib.error,
    ValueError,
)


def check_affine(affine: Any, name: str) -> np.ndarray:
    """The voxel -> world matrix as float64 ``[4, 4]``, or an
    :class:`ImageError` when it is not finite or not invertible."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ImageError(f"{name} has an invalid affine (voxel-to-world matrix): it is not a finite 4x4 matrix")
    det = float(np.linalg.det(affine[:3, :3]))
    if abs(det) < 1e-9:
        raise ImageError(
            f"{name} has a singular affine (voxel-to-world matrix, determinant {det:.3g}): its voxels have "
            "no position in space; fix the header's qform/sform (e.g. with fslorient) and load it again"
        )
    return affine


def open_nifti(path: str | os.PathLike, max_voxels: int = MAX_SCAN_VOXELS) -> Any:
    """Open a NIfTI file's header and check it; no voxel data is read.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_voxels: the most voxels one 3D volume may have.

    Returns:
        nibabel's ``Nifti1Image`` / ``Nifti2Image`` (data still on disk).

    Raises:
        ImageError: a missing file, not NIfTI, not 3D/4D, RGB or complex
            voxels, too many voxels, or a singular affine.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path} is not a file")
    try:
        img = nib.load(str(path))
    except _READ_ERRORS as err:
        raise ImageError(f"{path.name} cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageError(f"{path.name} is a {type(img).__name__}, not a NIfTI image")
    shape = tuple(int(s) for s in img.shape)
    dtype = img.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "V":
        raise ImageError(
            f"{path.name} holds RGB colour voxels ({dtype}); a T1-weighted MRI is one grey value per voxel"
        )
    if dtype.kind == "c":
        raise ImageError(f"{path.name} holds complex voxels ({dtype}); give a magnitude T1-weighted image")
    if len(shape) == 5 and shape[3] == 1:  # some writers put vector intent on a 5th axis
        shape = shape[:3] + shape[4:]
    if len(shape) not in (3, 4):
        raise ImageError(f"{path.name} has {len(shape)} dimensions {shape}; a brain MRI volume is 3D")
    if min(shape) < 1:
        raise ImageError(f"{path.name} claims a volume of size {shape}; every axis needs at least one voxel")
    n_voxels = int(np.prod(shape[:3], dtype=np.int64))
    if n_voxels > max_voxels:
        size = "x".join(map(str, shape[:3]))
        raise ImageError(
            f"{path.name} claims a {size} volume ({n_voxels / 1e6:.0f} million voxels, "
            f"{n_voxels * 4 / 2**30:.1f} GiB as float32), more than the {max_voxels / 1e6:.0f} million "
            "a brain MRI needs; the header is wrong or this is not one scan"
        )
    check_affine(img.affine, path.name)
    _check_holds_its_voxels(path, img, n_voxels)
    return img


def _gunzipped_size(path: Path, enough: int) -> int:
    """Bytes a gzip file decompresses to, counted in 1 MiB steps and no
    further than ``enough`` (memory stays flat; multi-member files such as
    bgzip's, whose trailer records only the last member, count in full). A
    truncated or corrupt stream counts what it held."""
    import gzip
    import zlib

    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total < enough:
                block = stream.read(1 << 20)
                if not block:
                    break
                total += len(block)
    except (OSError, EOFError, zlib.error):
        pass
    return total


GZIP_MAX_RATIO = 1032  # deflate cannot expand data more than this (RFC 1951: 258 bytes per 2 bits, about)


def _check_holds_its_voxels(path: Path, img: Any, n_voxels: int) -> None:
    """Refuse, before any voxel is read, a file too small for the volume its
    header claims: a 100-byte .nii.gz whose header claims 511^3 float64
    voxels would otherwise allocate a gigabyte before failing as truncated."""
    needed = int(img.header.get("vox_offset", 352)) + n_voxels * img.get_data_dtype().itemsize
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(max(size - 4, 0))
            stored = int.from_bytes(handle.read(4), "little")  # gzip's own record of the uncompressed size
        if size * GZIP_MAX_RATIO < needed or (stored < needed and _gunzipped_size(path, needed) < needed):
            raise ImageError(
                f"{path.name} is truncated or its header is wrong: the header claims {needed / 2**20:.1f} MiB of "
                f"voxels, but the compressed file holds {min(stored, size * GZIP_MAX_RATIO) / 2**20:.1f} MiB"
            )
    elif size < needed:
        raise ImageError(
            f"{path.name} is truncated or its header is wrong: the header claims {needed / 2**20:.1f} MiB of "
            f"voxels, but the file holds {size / 2**20:.1f} MiB"
        )


def is_scaled(img: Any) -> bool:
    """Whether the file's voxels carry a ``scl_slope`` / ``scl_inter``
    other than the identity (so their stored integers are not the values)."""
    # nibabel moves the header's scaling into the data proxy when it loads a file
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    return slope != 1.0 or inter != 0.0


def read_first_volume(img: Any, name: str = "scan", keep_integers: bool = False) -> np.ndarray:
    """The voxel values of the (first) 3D volume as float32, scaled as
    nibabel defines them, in the file's own voxel order.

    ``keep_integers``: an unscaled integer file keeps its integer type (a
    napari layer of a uint8 scan stays small). Values beyond float32's range
    (about +-3.4e38, after scaling) are refused rather than turned into
    infinities."""
    try:
        if len(img.shape) > 3:
            img = img.slicer[(slice(None),) * 3 + (0,) * (len(img.shape) - 3)]
        values = np.asarray(img.dataobj)
    except _READ_ERRORS as err:
        raise ImageError(
            f"{name} cannot be read as NIfTI ({type(err).__name__}: {err}); the file may be truncated"
        ) from None
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:
        finite = values[np.isfinite(values)]
        if finite.size and float(np.abs(finite).max()) > FLOAT32_MAX:
            raise ImageError(
                f"{name} has intensities up to {float(np.abs(finite).max()):.3g}, beyond what a float32 image "
                "can hold; rescale the scan (it is not an MRI intensity range)"
            )
    if keep_integers and values.dtype.kind in "iu" and not is_scaled(img):
        return values
    # C order in the same copy as the conversion (NIfTI arrays come in Fortran order)
    return np.asarray(values, dtype=np.float32, order="C")


def read_canonical(img: Any, name: str = "scan", keep_integers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a checked image's (first) volume, reoriented to canonical RAS.

    Args:
        img: what :func:`open_nifti` returned.
        name: the file's name, for messages.
        keep_integers: as for :func:`read_first_volume`.

    Returns:
        ``(data [X, Y, Z], affine [4, 4] voxel -> world mm)``: the array axes
        run left->Right, posterior->Anterior, inferior->Superior.
    """
    data = read_first_volume(img, name=name, keep_integers=keep_integers)
    return to_canonical(data, img.affine, name)


def to_canonical(data: np.ndarray, affine: np.ndarray, name: str = "scan") -> tuple[np.ndarray, np.ndarray]:
    """Reorder a volume's axes (flips and transposes only, no resampling) so
    that they run as close as they can to Right, Anterior, Superior.

    Args:
        data: ``[I, J, K]`` voxels in the order of ``affine``.
        affine: ``[4, 4]`` voxel -> world (RAS mm).
        name: for messages.

    Returns:
        ``(data [X, Y, Z], affine [4, 4])`` describing the same voxels at the
        same world positions: NIfTI and DICOM scans land alike.
    """
    try:
        ornt = nib.orientations.io_orientation(affine)
        affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    except nib.orientations.OrientationError:
        raise ImageError(
            f"{name}'s affine (voxel-to-world matrix) gives its axes no orientation; fix the header's "
            "qform/sform and load it again"
        ) from None
    data = nib.orientations.apply_orientation(data, ornt)
    return np.ascontiguousarray(data), affine


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether the name ends in ``.nii`` or ``.nii.gz`` (any case)."""
    return str(path).lower().endswith((".nii", ".nii.gz"))


def nifti_stem(path: str | os.PathLike) -> str:
    """The file name without ``.nii`` / ``.nii.gz`` (``sub-01_T1w.nii.gz`` -> ``sub-01_T1w``)."""
    path = Path(path)
    return path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
