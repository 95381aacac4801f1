"""Where a series' slices lie: their order along the slice normal and the
voxel -> world matrix, after every check that keeps a wrong volume out.

DICOM places each slice by its Image Position (Patient), the centre of its
first pixel, and Image Orientation (Patient), the directions of its rows and
columns, in LPS patient coordinates (x to the patient's Left, y Posterior,
z Superior). Slices are ordered by their position along the normal
``row x column`` (file names and Instance Numbers are not trusted); the
affine is turned to RAS (x and y negated), the convention of NIfTI and of
this project's world space, so a series and its NIfTI conversion land on the
same millimetres.

Shapes: the volume is ``[columns, rows, slices]`` (array axis 0 runs along a
row, as NIfTI converters write it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import ImageError
from .discover import Frame

__all__ = ["MIN_SLICES", "MAX_SLICE_STEP_MM", "StackGeometry", "stack_geometry"]

MIN_SLICES = 16  # fewer is a localiser or a 2D acquisition, not a 3D T1
MAX_SLICE_STEP_MM = 3.0  # thicker slices are a 2D acquisition the models were not made for
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# positions written with two decimals (some scanners do) scatter by up to about 0.02 mm on an oblique
# stack: the tolerances sit well above that and far below a missing slice or a tilt of a tenth of a degree
SPACING_TOLERANCE_MM = 0.05
TILT_DRIFT_MM = 0.1


@dataclass(frozen=True)
class StackGeometry:
    """``order``: frame indices from the first slice to the last along the
    normal; ``affine``: ``[4, 4]`` voxel ``(column, row, slice)`` -> RAS mm."""

    order: np.ndarray
    affine: np.ndarray
    slice_step: float


def _distinct(values: list[tuple], tol: float) -> list[tuple]:
    out: list[tuple] = []
    for v in values:
        if not any(np.abs(np.subtract(v, w)).max() <= tol for w in out):
            out.append(v)
    return out


def _check_uniform(frames: list[Frame], name: str) -> None:
    n = len(frames)
    lacking = [f for f in frames if f.position is None or f.orientation is None or f.spacing is None]
    if lacking:
        raise ImageError(
            f"{name}: {len(lacking)} of {n} slice(s) have no Image Position / Image Orientation (Patient) or "
            "Pixel Spacing: their voxels have no place in space"
        )
    if any(len(f.orientation) != 6 or len(f.position) != 3 or len(f.spacing) != 2 for f in frames):
        raise ImageError(f"{name} has a malformed Image Position / Orientation or Pixel Spacing")
    sizes = sorted({(f.rows, f.columns) for f in frames})
    if len(sizes) > 1:
        counts = ", ".join(f"{r}x{c} ({sum((f.rows, f.columns) == (r, c) for f in frames)})" for r, c in sizes)
        raise ImageError(f"{name} mixes slice sizes: {counts}; one volume has one size")
    orientations = _distinct([f.orientation for f in frames], 1e-4)
    if len(orientations) > 1:
        raise ImageError(
            f"{name} mixes {len(orientations)} slice orientations (a localiser or several stacks in one series); "
            "one volume has one orientation"
        )
    spacings = _distinct([f.spacing for f in frames], 1e-4)
    if len(spacings) > 1:
        raise ImageError(f"{name} mixes pixel spacings ({', '.join(f'{a:g} x {b:g} mm' for a, b in spacings)})")
    row_dir, col_dir = np.array(frames[0].orientation[:3]), np.array(frames[0].orientation[3:])
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise ImageError(f"{name}'s Image Orientation (Patient) is not two perpendicular unit vectors")
    if min(sizes[0]) < 1:
        raise ImageError(f"{name}'s slices are {sizes[0][0]}x{sizes[0][1]} pixels: they hold no image")
    if min(frames[0].spacing) <= 0:
        raise ImageError(f"{name} has a Pixel Spacing of {frames[0].spacing}; spacings are positive millimetres")


def stack_geometry(frames: list[Frame], name: str = "series") -> StackGeometry:
    """Order a series' slices in space and build its affine.

    Args:
        frames: the slices, in any order.
        name: how messages name the series.

    Returns:
        The slice order and the voxel -> RAS mm affine of the volume
        ``[columns, rows, slices]``.

    Raises:
        ImageError: missing geometry, mixed sizes / orientations / spacings,
            fewer than :data:`MIN_SLICES` slices, slices sharing a position,
            gantry tilt, a missing slice (its position named) or uneven
            spacing, slices further apart than :data:`MAX_SLICE_STEP_MM`.
    """
    n = len(frames)
    if n < MIN_SLICES:
        raise ImageError(
            f"{name} has {n} slice(s): a localiser or a 2D image, not a 3D T1 volume (at least {MIN_SLICES} slices)"
        )
    _check_uniform(frames, name)
    row_dir, col_dir = np.array(frames[0].orientation[:3]), np.array(frames[0].orientation[3:])
    normal = np.cross(row_dir, col_dir)
    positions = np.array([f.position for f in frames], dtype=float)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    steps = np.diff(along)
    pixel = min(frames[0].spacing)
    same = steps < 1e-3 * pixel
    if same.any():
        k = int(np.argmax(same))
        shared = int((np.r_[same, False] | np.r_[False, same]).sum())
        raise ImageError(
            f"{name}: {shared} slices share positions (first at {along[k]:.2f} mm along the slice normal): the "
            "series holds several volumes (echoes, time points or repeats); export one of them as its own series"
        )
    # gantry tilt: the slices' corners step sideways as well as along the normal
    lateral = positions - positions[0] - np.outer(along - along[0], normal)
    drift = float(np.linalg.norm(lateral, axis=1).max())
    if drift > TILT_DRIFT_MM:
        span = float(along[-1] - along[0])
        angle = np.degrees(np.arctan2(float(np.linalg.norm(lateral[-1])), span))
        raise ImageError(
            f"{name}'s slices are sheared ({drift:.1f} mm sideways over {span:.0f} mm; gantry tilt of about "
            f"{angle:.1f} degrees): a tilted stack is not a rectangular volume. Resample it to an upright grid "
            "first (dcm2niix corrects gantry tilt)"
        )
    step = float(np.median(steps))
    tol = max(SPACING_TOLERANCE_MM, 0.02 * step)
    uneven = np.flatnonzero(np.abs(steps - step) > tol)
    if uneven.size:
        k = int(uneven[0])
        ratio = steps[k] / step
        if round(ratio) >= 2 and abs(steps[k] - round(ratio) * step) <= tol * round(ratio):
            missing = int(round(ratio)) - 1
            raise ImageError(
                f"{name} is missing {missing} slice(s) between {along[k]:.2f} and {along[k + 1]:.2f} mm along the "
                f"slice normal (after slice {k + 1} of the {n} present, where a {step:.2f} mm step expects one at "
                f"{along[k] + step:.2f} mm); copy the whole series again"
            )
        raise ImageError(
            f"{name} has uneven slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm (the usual step "
            f"is {step:.3f} mm, first break after slice {k + 1} of {n}); a volume needs evenly spaced slices"
        )
    if step > MAX_SLICE_STEP_MM:
        raise ImageError(
            f"{name}'s slices are {step:.1f} mm apart: a 2D acquisition; the models read a 3D T1 with slices at "
            f"most {MAX_SLICE_STEP_MM:g} mm apart"
        )
    row_spacing, column_spacing = frames[0].spacing  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row_dir * column_spacing  # along a row: the column index grows
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (n - 1)
    lps[:3, 3] = positions[0]
    return StackGeometry(order=order, affine=LPS_TO_RAS @ lps, slice_step=step)
