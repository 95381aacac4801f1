"""From a NIfTI file on disk to the model's input grid, in world space.

A scan is read with nibabel, reoriented to canonical RAS and checked (3D,
finite). The model does not see the scan's own voxel grid: it sees one or
more *views*, each a fixed grid in MNI millimetres (``ModelGrid``): the whole
brain, or the paper's hippocampus crops (the right hippocampus, and the left
one mirrored so that both look alike to the network). A view is resampled
from the scan by its world coordinates, so any scan registered to MNI space
lands on the same anatomy whatever its voxel size, orientation or field of
view (oblique affines included). Down-sampling is anti-aliased first with a
Gaussian (``sigma = (factor - 1) / 2`` source voxels, scikit-image's rule;
:mod:`.resample`).

Intensities are standardised robustly: ``(x - median) / (IQR / 1.349)``
of the scan's foreground (voxels above 5 % of its 99.5th percentile),
measured on a fixed 4 mm whole-brain grid in MNI space, so that every view
of a scan is scaled alike and the scale does not depend on the scan's voxel
size, smoothness or noise (the mean and SD over the scan's own voxels, used
by model files written before this, moved by up to a third when the same
brain was stored at 1 mm instead of 1.8 mm; those files keep it, see
``ModelGrid.normalization``).

Shapes: scan ``[X, Y, Z]`` (voxels, RAS after reorientation); views
``[V, D, H, W]`` float32 on the model grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, ModelFileError
from .resample import resample_to_grid
from .scan_file import check_affine, open_nifti, read_canonical

__all__ = [
    "ImageError",
    "Scan",
    "ModelGrid",
    "load_scan",
    "scan_from_array",
    "resample_to_grid",
    "foreground_mask",
    "foreground_stats",
    "intensity_reference",
    "prepare_views",
    "NORMALIZATIONS",
    "CROPS",
]

CROPS = ("whole", "hippocampus")
MNI_SPACE = "MNI152 ICBM 2009a (nonlinear), mm"
ROBUST = "median and IQR of the foreground on a 4 mm whole-brain MNI grid"
LEGACY = "z-score over the scan's foreground"
NORMALIZATIONS = (ROBUST, LEGACY)


@dataclass
class Scan:
    """A 3D scan in canonical RAS: ``data [X, Y, Z]`` float32 and its
    ``affine`` (voxel -> world mm). ``header`` is nibabel's, kept for writing."""

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    path: Path | None = None

    @property
    def voxel_size(self) -> np.ndarray:
        """Voxel edge lengths in mm along the array axes."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def scan_from_array(data: np.ndarray, affine: np.ndarray, name: str = "image") -> Scan:
    """Check an in-memory volume (e.g. a napari layer's data) and wrap it.

    4D data with a single volume is squeezed; anything else not 3D, and any
    NaN or infinity, is refused with an :class:`ImageError`."""
    data = np.asarray(data)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise ImageError(
            f"{name} is 4D with {data.shape[3]} volumes; give one 3D T1-weighted volume "
            "(for example the first one, extracted with fslroi or nibabel)"
        )
    if data.ndim != 3:
        raise ImageError(f"{name} has {data.ndim} dimensions {tuple(data.shape)}; a brain MRI volume is 3D")
    if min(data.shape) < 8:
        raise ImageError(f"{name} is only {'x'.join(map(str, data.shape))} voxels; that is not a brain volume")
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ImageError(f"{name} has data type {data.dtype}; expected real numbers")
    data = data.astype(np.float32, copy=False)
    bad = ~np.isfinite(data)
    if bad.any():
        raise ImageError(f"{name} contains {int(bad.sum())} NaN or infinite voxels; fix or mask the scan first")
    return Scan(data=data, affine=check_affine(affine, name))


def load_scan(path: str | os.PathLike, series: str | None = None) -> Scan:
    """Read a NIfTI file or a DICOM series, reorient to canonical RAS and
    check it.

    Voxels are the scaled floating-point values nibabel defines
    (``scl_slope`` / ``scl_inter`` applied), or DICOM's Rescale Slope /
    Intercept applied slice by slice. A folder, a ``DICOMDIR`` or a DICOM
    file is read as a series (:mod:`.dicom`); ``series`` (a key or UID)
    chooses one where the folder holds several. Raises :class:`ImageError`
    for a missing file, a file nibabel cannot read (or a truncated one), a
    non-3D image, RGB or complex voxels, a header claiming a volume too large
    for memory or a singular affine (all checked before reading), every
    refusal of the DICOM reader, and non-finite values."""
    from .scan_file import is_nifti_path

    path = Path(path)
    if not is_nifti_path(path) and path.exists():
        from .dicom import is_dicom_source, open_dicom

        if is_dicom_source(path):
            volume = open_dicom(path, series=series)
            scan = scan_from_array(volume.data, volume.affine, name=path.name)
            scan.path = path
            return scan
    img = open_nifti(path)
    if len(img.shape) == 4 and img.shape[3] > 1:  # which volume is the T1 is for the user to say
        raise ImageError(
            f"{path.name} is 4D with {img.shape[3]} volumes; give one 3D T1-weighted volume "
            "(for example the first one, extracted with fslroi or nibabel)"
        )
    data, affine = read_canonical(img, name=path.name)
    scan = scan_from_array(data, affine, name=path.name)
    scan.header = img.header
    scan.path = path
    return scan


@lru_cache(maxsize=1)
def _template_landmarks() -> dict[str, Any]:
    """Centres (mm) of the template's field of view and hippocampi."""
    from .template import load_template

    tpl = load_template()

    def to_mm(ijk: np.ndarray) -> np.ndarray:
        return tpl.affine[:3, :3] @ ijk + tpl.affine[:3, 3]

    centre = to_mm((np.array(tpl.shape) - 1) / 2.0)
    return {
        "brain": centre,
        "hippocampus_R": to_mm(tpl.centroid("hippocampus_R")),
        "hippocampus_L": to_mm(tpl.centroid("hippocampus_L")),
    }


def _grid_affine(centre_mm: np.ndarray, shape: tuple[int, ...], spacing: float, mirror_x: bool) -> np.ndarray:
    """Voxel -> mm for an axis-aligned RAS grid centred on ``centre_mm``;
    ``mirror_x`` runs the first axis right-to-left (a mirror image)."""
    steps = np.array([-spacing if mirror_x else spacing, spacing, spacing])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(steps)
    affine[:3, 3] = np.asarray(centre_mm) - steps * (np.array(shape) - 1) / 2.0
    return affine


@dataclass(frozen=True)
class ModelGrid:
    """The grid(s) a model reads, in MNI millimetres.

    ``crop="whole"``: one view of the whole brain. ``crop="hippocampus"``:
    two views, the right hippocampus and the left one mirrored (the paper's
    crops); training draws one at random, prediction averages both.
    ``shape`` is in voxels, ``spacing_mm`` the isotropic voxel size.
    ``views`` holds ``(name, affine)`` pairs; it is filled from the shipped
    template's landmarks unless given (a model file stores its own).
    ``normalization``: how intensities are scaled (one of
    ``NORMALIZATIONS``; files without the robust one keep the legacy z-score
    they were trained with).
    """

    crop: str = "whole"
    shape: tuple[int, int, int] = (40, 48, 40)
    spacing_mm: float = 4.0
    views: tuple[tuple[str, tuple[tuple[float, ...], ...]], ...] = field(default=())
    normalization: str = ROBUST

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; choose from {', '.join(CROPS)}")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"grid shape must be three positive sizes, got {self.shape}")
        if not self.spacing_mm > 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown intensity normalization {self.normalization!r}")
        if not self.views:
            marks = _template_landmarks()
            if self.crop == "whole":
                views = [("whole brain", _grid_affine(marks["brain"], self.shape, self.spacing_mm, False))]
            else:
                views = [
                    ("right hippocampus", _grid_affine(marks["hippocampus_R"], self.shape, self.spacing_mm, False)),
                    ("left hippocampus (mirrored)",
                     _grid_affine(marks["hippocampus_L"], self.shape, self.spacing_mm, True)),
                ]  # fmt: skip
            object.__setattr__(
                self, "views", tuple((n, tuple(tuple(float(v) for v in row) for row in a)) for n, a in views)
            )

    @property
    def n_views(self) -> int:
        return len(self.views)

    @property
    def view_names(self) -> list[str]:
        return [name for name, _ in self.views]

    def affine(self, view: int) -> np.ndarray:
        """Voxel -> mm matrix of one view, ``[4, 4]``."""
        return np.array(self.views[view][1], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": MNI_SPACE,
            "crop": self.crop,
            "shape": list(self.shape),
            "spacing_mm": self.spacing_mm,
            "normalization": self.normalization,
            "views": [{"name": n, "affine": [list(r) for r in a]} for n, a in self.views],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelGrid:
        missing = [key for key in ("crop", "shape", "spacing_mm") if key not in (data or {})]
        if missing:  # a model file whose image section is absent or incomplete
            raise ModelFileError(
                f"the model reads an image but its file does not say which grid (no {', '.join(missing)} in its "
                "'image' section)",
                "bad_metadata",
            )
        views = tuple((v["name"], tuple(tuple(r) for r in v["affine"])) for v in data.get("views", ()))
        return cls(
            crop=data["crop"], shape=tuple(data["shape"]), spacing_mm=float(data["spacing_mm"]), views=views,
            normalization=str(data.get("normalization", LEGACY)),
        )  # fmt: skip


def high_percentile(data: np.ndarray, q: float = 99.5) -> float:
    """``np.percentile(data, q)`` (linear interpolation) for a high ``q``,
    sorting only the values that can hold it.

    A strided sample gives a value below the percentile; only the values
    above it (a few per cent of a scan) are partitioned, instead of a copy
    of the whole volume. Falls back to ``np.percentile`` when the sample's
    bound is not low enough or the data hold NaN.

    Args:
        data: any shape, real.
        q: percentile in [0, 100], meant for 95 and above.
    Returns:
        The percentile, as ``np.percentile`` computes it (to rounding).
    """
    flat = np.ravel(data)
    n = flat.size
    if n < 4096 or q < 90 or np.isnan(flat).any():
        return float(np.percentile(flat, q))
    position = q / 100.0 * (n - 1)
    below_rank = int(np.floor(position))
    sample = np.sort(flat[:: max(1, n // 4096)])
    bound = sample[int(np.floor((1.0 - 2.0 * (1.0 - q / 100.0) - 0.01) * (sample.size - 1)))]
    top = flat[flat >= bound]
    first = below_rank - (n - top.size)  # the rank of the lower neighbour among ``top``
    if first < 0:
        return float(np.percentile(flat, q))
    second = min(first + 1, top.size - 1)
    top = np.partition(top, [first, second])
    low, high = float(top[first]), float(top[second])
    fraction = position - below_rank
    return low + (high - low) * fraction if fraction < 0.5 else high - (high - low) * (1.0 - fraction)


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """The scan's foreground: voxels above 5 % of its 99.5th percentile
    (none when that percentile is not positive). Boolean, ``data``'s shape."""
    high = high_percentile(data, 99.5)
    return data > 0.05 * high if high > 0 else np.zeros(np.shape(data), dtype=bool)


def foreground_stats(data: np.ndarray) -> tuple[float, float]:
    """Mean and SD of the foreground (voxels above 5 % of the 99.5th
    percentile): the scan's intensity scale, blind to the background."""
    high = high_percentile(data, 99.5)
    if high <= 0:
        raise ImageError("the scan is empty (no positive intensities)")
    # float64 statistics: squares of large intensities (1e20 and up) overflow float32
    fg = data[data > 0.05 * high].astype(np.float64)
    std = float(fg.std())
    if fg.size < 100 or std <= 0:
        raise ImageError("the scan has no usable foreground (fewer than 100 voxels above background)")
    return float(fg.mean()), std


@lru_cache(maxsize=1)
def _reference_grid() -> np.ndarray:
    return ModelGrid(crop="whole", shape=(40, 48, 40), spacing_mm=4.0).affine(0)


def intensity_reference(scan: Scan, normalization: str = ROBUST) -> tuple[float, float]:
    """The centre and scale a scan's intensities are standardised with.

    ``ROBUST``: the median and ``IQR / 1.349`` of the foreground (voxels
    above 5 % of the 99.5th percentile) of the scan resampled, anti-aliased,
    onto a 4 mm whole-brain grid in MNI space: the same numbers whatever the
    scan's own voxel size or smoothness. ``LEGACY``: the mean and SD over
    the scan's own voxels (model files written before the robust scale).

    Returns:
        ``(centre, scale)`` in the scan's intensity units.
    Raises:
        ImageError: no usable foreground (an empty scan, or one nowhere
        near MNI space).
    """
    if normalization == LEGACY:
        return foreground_stats(scan.data)
    coarse = resample_to_grid(scan.data, scan.affine, _reference_grid(), (40, 48, 40))
    fg = coarse[foreground_mask(coarse)].astype(np.float64)
    if fg.size < 100:
        raise ImageError(
            "the scan has no brain where the models look (fewer than 100 voxels of tissue inside the MNI "
            "field of view); the models expect a skull-stripped T1 brain registered to MNI space"
        )
    q1, median, q3 = np.percentile(fg, [25, 50, 75])
    scale = float(q3 - q1) / 1.349
    if scale <= 0:
        raise ImageError("the scan's tissue has a single intensity; that is not a T1-weighted brain")
    return float(median), scale


def prepare_views(scan: Scan, grid: ModelGrid) -> np.ndarray:
    """Every view of ``scan`` on ``grid``, intensity-normalised:
    float32 ``[V, D, H, W]``. Raises :class:`ImageError` when the scan does
    not cover the grid (not a brain in MNI space)."""
    mean, std = intensity_reference(scan, grid.normalization)
    views = []
    for v in range(grid.n_views):
        raw = resample_to_grid(scan.data, scan.affine, grid.affine(v), grid.shape)
        covered = float((raw > 0.05 * mean).mean())
        if covered < 0.05:
            raise ImageError(
                f"the scan barely overlaps the model's {grid.view_names[v]} grid ({covered:.0%} of it has tissue); "
                "the model expects a skull-stripped T1 brain registered to MNI space"
            )
        views.append(((raw - mean) / std).astype(np.float32))
    return np.stack(views)
