"""Anatomical variability: each synthetic brain its own shape.

Without it every synthetic scan is the same template anatomy, scaled
region by region to the subject's volumes, and a model can learn that one
brain's folds and outline; a real brain is then unlike every training scan
in ways no volume describes. In the spirit of SynthSeg's domain
randomisation (Billot et al., Medical Image Analysis 2023), a subject's
anatomy gets a random smooth non-linear deformation on top of the volume
scaling.

The deformation must not change what the generator's truth knows: the
posterior of the diagnosis (or the age) is conditioned on the record's
regional volumes. So the field is **divergence-free**, the curl of a
smooth random vector potential ``A``::

    u = curl A,   div u = 0

which moves tissue around (the outline, the folds, the position and shape
of each structure) while keeping every region's volume to first order.
It acts on the template after the regional scaling, so the two compose
and their Jacobians multiply. What remains is second order: on the 1,000
subjects of ``make-cohort --task ad --n 1000 --seed 2026`` at 2.5 mm RMS,
the realised volumes of the hippocampi and the ventricles moved by 1.9-2.4 %
on average (99th percentile 9-11 %) against the same subjects with the
template anatomy, where the realised volume already spreads around the
record's by 5.6 % (hippocampi) and 35 % (ventricles, log SD).
Each scan's realised volumes are written beside the record as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["AnatomyVariation", "shape_displacement"]


@dataclass(frozen=True)
class AnatomyVariation:
    """How far and how smoothly a brain's shape varies.

    Args:
        amplitude_mm: root mean square displacement over the grid, in mm.
        smoothness_mm: twice the SD of the Gaussian that smooths the random
            potential, in mm: points much closer than this move together.
    """

    amplitude_mm: float = 2.5
    smoothness_mm: float = 24.0

    def describe(self) -> str:
        return f"varied ({self.amplitude_mm:g} mm RMS, {self.smoothness_mm:g} mm smooth)"


def _coarse_curl(shape: tuple[int, int, int], step_vox: float, rng: np.random.Generator) -> np.ndarray:
    """``[3, d, h, w]``: the curl of Gaussian-smoothed white noise on a coarse
    grid of ``step_vox / 4`` voxels (four samples per control spacing, so the
    field is smooth there and upsampling it linearly changes it little)."""
    coarse_step = step_vox / 4.0
    coarse = tuple(int(np.ceil(n / coarse_step)) + 3 for n in shape)
    noise = rng.standard_normal((3, *coarse))
    potential = [ndimage.gaussian_filter(c, sigma=2.0, mode="wrap") for c in noise]
    d = [np.gradient(c) for c in potential]  # d[i][j] = dA_i / dx_j, per coarse voxel
    return np.stack([d[2][1] - d[1][2], d[0][2] - d[2][0], d[1][0] - d[0][1]])


def shape_displacement(
    points: np.ndarray,
    shape: tuple[int, int, int],
    spacing_mm: float,
    variation: AnatomyVariation,
    rng: np.random.Generator,
) -> np.ndarray:
    """A divergence-free displacement for one subject, at given points.

    Args:
        points: ``[3, ...]`` voxel coordinates on the template grid where the
            displacement is wanted (the grid itself, or where another
            deformation has taken it: the two then compose, and their
            Jacobians multiply).
        shape: the template grid, ``(D, H, W)`` voxels.
        spacing_mm: the grid's voxel size in mm.
        variation: amplitude and smoothness.
        rng: the subject's own generator for its anatomy.
    Returns:
        ``u [3, ...]`` float32, in voxels: sample the template at
        ``points + u``. Its RMS over the grid is ``variation.amplitude_mm``.
    """
    step = variation.smoothness_mm / spacing_mm / 4.0
    curl = _coarse_curl(shape, variation.smoothness_mm / spacing_mm, rng)
    # coarse sample k sits at voxel (k - 1) * step: one sample beyond each edge
    inside = tuple(slice(1, 1 + int(np.ceil(n / step))) for n in shape)
    rms = float(np.sqrt((curl[(slice(None), *inside)] ** 2).sum(0).mean()))
    coords = np.asarray(points, dtype=np.float32) / np.float32(step) + np.float32(1.0)
    u = np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in curl]).astype(np.float32)
    if rms == 0.0:
        return u
    return u * np.float32(variation.amplitude_mm / spacing_mm / rms)
