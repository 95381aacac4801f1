"""Sampling a volume on another grid by world position, anti-aliased.

Every scan the models read passes through here several times (the input
gate's template grid, the 4 mm intensity reference, each view), so it is on
the per-subject path of cohort prediction and of the panel's Predict.

Two ways, one result:

* the general one: scipy's ``affine_transform`` (trilinear, 0 outside the
  scan) after a Gaussian anti-aliasing filter on the whole scan;
* the separable one, for grids whose axes run along the scan's axes (a
  scaling, flip, shift or axis swap: synthetic scans, scans already
  prepared to MNI space and most scans written in RAS): trilinear
  interpolation and the Gaussian are both products of one-dimensional
  operations, so each axis is filtered and sampled in turn and the volume
  shrinks as it goes. It gives the general path's values (to float32
  rounding) at a fraction of the time: 3-8x on the 2 mm template grid.

Shapes: ``data [X, Y, Z]`` in scan voxels; result ``shape`` float32.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["resample_to_grid", "antialias_sigma", "axis_aligned", "gaussian_filter1d"]

_TRUNCATE = 4.0  # scipy's default: the Gaussian kernel's radius in sigmas
_AXIS_TOL = 1e-9  # relative size of an off-axis matrix entry still treated as zero


def antialias_sigma(scan_to_grid: np.ndarray) -> np.ndarray:
    """Gaussian sigma (scan voxels) per scan axis before sampling.

    ``(factor - 1) / 2`` where ``factor`` is how many scan voxels one grid
    step covers along that axis (scikit-image's rule); 0 where the grid is
    as fine as the scan or finer.

    Args:
        scan_to_grid: ``[4, 4]`` grid voxel -> scan voxel.
    Returns:
        ``[3]`` sigmas in scan voxels.
    """
    factor = np.abs(scan_to_grid[:3, :3]).max(axis=1)
    return np.maximum(0.0, (factor - 1.0) / 2.0)


def axis_aligned(scan_to_grid: np.ndarray) -> np.ndarray | None:
    """For each scan axis, the grid axis it runs along, or ``None`` when
    the grid is oblique to the scan (some matrix row or column has more than
    one non-zero entry)."""
    m = np.abs(np.asarray(scan_to_grid, dtype=np.float64)[:3, :3])
    big = m > _AXIS_TOL * max(float(m.max()), 1e-300)
    if not (big.sum(axis=0) == 1).all() or not (big.sum(axis=1) == 1).all():
        return None
    return big.argmax(axis=1)


def resample_to_grid(
    data: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, shape: tuple[int, int, int], order: int = 1
) -> np.ndarray:
    """Sample ``data`` (voxel->mm ``affine``) on another grid
    (``grid_affine``, ``shape``) by world position; outside the scan is 0.

    Anti-aliases with a Gaussian along every scan axis that is sampled more
    coarsely than it is stored (when any axis needs more than 0.05 voxels
    of sigma, every axis with a positive sigma is filtered).

    Args:
        data: ``[X, Y, Z]`` scan voxels (any real dtype).
        affine: ``[4, 4]`` scan voxel -> mm.
        grid_affine: ``[4, 4]`` grid voxel -> mm.
        shape: the grid's ``(D, H, W)``.
        order: spline order (1: trilinear; others take the general path).
    Returns:
        float32 ``shape``.
    """
    scan_to_grid = np.linalg.inv(affine) @ grid_affine  # grid voxel -> scan voxel
    src = np.asarray(data, dtype=np.float32)
    sigma = antialias_sigma(scan_to_grid)
    blur = sigma if (sigma > 0.05).any() else np.zeros(3)
    along = axis_aligned(scan_to_grid) if order == 1 and src.ndim == 3 else None
    if along is not None:
        return _separable(src, scan_to_grid, along, blur, tuple(shape))
    if blur.any():
        src = ndimage.gaussian_filter(src, sigma=blur, mode="constant")
    return ndimage.affine_transform(
        src, scan_to_grid[:3, :3], offset=scan_to_grid[:3, 3], output_shape=tuple(shape),
        order=order, mode="constant", cval=0.0, prefilter=False,
    ).astype(np.float32)  # fmt: skip


def _separable(
    src: np.ndarray, scan_to_grid: np.ndarray, along: np.ndarray, blur: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Filter and sample one scan axis at a time (the axis that shrinks the
    volume most first), then put the axes in the grid's order."""
    order = sorted(range(3), key=lambda a: shape[along[a]] / src.shape[a])
    out = src
    for a in order:
        # scipy's gaussian_filter filters every sigma above 1e-15; below 0.125 its kernel (radius
        # int(4 sigma + 0.5)) is the single weight 1, a pass that changes nothing
        if blur[a] > 1e-15 and int(_TRUNCATE * blur[a] + 0.5) > 0:
            out = gaussian_filter1d(out, float(blur[a]), axis=a, mode="constant")
        b = int(along[a])
        coords = scan_to_grid[a, b] * np.arange(shape[b], dtype=np.float64) + scan_to_grid[a, 3]
        out = _sample_axis(out, coords, a)
    return np.ascontiguousarray(np.transpose(out, np.argsort(along)), dtype=np.float32)


def _sample_axis(volume: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``volume`` at ``coords`` (voxels) along one
    axis; 0 where a coordinate lies outside ``[0, n - 1]`` (scipy's
    ``mode="constant"``: no interpolation beyond the edges)."""
    n = volume.shape[axis]
    inside = (coords >= 0) & (coords <= n - 1)
    low = np.clip(np.floor(coords), 0, max(n - 2, 0)).astype(np.intp)
    weight = np.where(inside, coords - low, 0.0)
    high = np.minimum(low + 1, n - 1)
    shape = [1, 1, 1]
    shape[axis] = len(coords)
    w_high = weight.reshape(shape).astype(np.float32)
    w_low = np.where(inside, 1.0 - weight, 0.0).reshape(shape).astype(np.float32)
    return np.take(volume, low, axis=axis) * w_low + np.take(volume, high, axis=axis) * w_high


def gaussian_filter1d(volume: np.ndarray, sigma: float, axis: int, mode: str = "constant") -> np.ndarray:
    """scipy's ``ndimage.gaussian_filter1d`` (truncated at 4 sigma), in float32.

    The kernel is symmetric, so each pair of taps is added before it is
    weighted: half the multiplications of scipy's general correlation, and
    whole-array numpy operations instead of its line-by-line loop (about
    twice as fast on the 2 mm template grid). Values agree with scipy's to
    float32 rounding (``tests/test_fast_paths.py``).

    Args:
        volume: any shape, any real dtype (computed in float32).
        sigma: the Gaussian's standard deviation in voxels (> 0).
        axis: the axis filtered.
        mode: ``"constant"`` (zeros beyond the edges) or ``"reflect"``
            (scipy's half-sample mirror, numpy's ``"symmetric"``).
    Returns:
        float32, ``volume``'s shape.
    """
    if mode not in ("constant", "reflect"):
        raise ValueError(f"mode must be 'constant' or 'reflect', got {mode!r}")
    radius = int(_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / float(sigma)) ** 2)
    weights = (kernel / kernel.sum())[radius:].astype(np.float32)  # centre, then one side
    src = np.asarray(volume, dtype=np.float32)
    if radius == 0:
        return src.copy()
    width = [(0, 0)] * src.ndim
    width[axis] = (radius, radius)
    padded = np.pad(src, width, mode="symmetric" if mode == "reflect" else "constant")
    n = src.shape[axis]

    def shifted(k: int) -> np.ndarray:
        index = [slice(None)] * src.ndim
        index[axis] = slice(radius + k, radius + k + n)
        return padded[tuple(index)]

    out = np.multiply(shifted(0), weights[0])
    pair = np.empty_like(out)
    for k in range(1, radius + 1):
        np.add(shifted(-k), shifted(k), out=pair)
        pair *= weights[k]
        out += pair
    return out
