"""Synthetic T1 scans: the real MNI template, smoothly deformed per subject.

Generative model of one scan (voxel grid of the template, 80 x 96 x 80 at 2 mm):

1. Anatomy. The template stands for a healthy woman of 60 (hippocampi
   5.74 ‰, ventricles 13.35 ‰, brain tissue 752 ‰ of intracranial volume,
   entorhinal cortex 3,980 mm3 at an ICV of 1.5 L). A subject's target
   volumes (from :mod:`napari_hyperfusion.synth.records`) become scale factors: a global
   factor ``s_b = (brain / 752)^(1/3)`` shrinks the whole brain toward its
   centre (global atrophy), and each of the hippocampi, entorhinal cortices
   and the ventricles gets a local factor (its own ratio^(1/3) over ``s_b``)
   applied as a radial scaling about its centroid ``c``, weighted by the
   region's own map smoothed with a Gaussian of ``sigma`` (3 mm; 6 mm for the
   ventricles) and flat-topped (1 wherever it reaches 40 % of its maximum)::

       u(x) = -(1 - 1/s)(x - c) w(x)

   so the whole structure scales and the surroundings follow smoothly.
   The fields add up to one smooth, invertible deformation (its Jacobian
   stays positive for the scale range used), so shrinking hippocampi pull in
   surrounding CSF and white matter rather than being painted over. The
   gain of the Gaussian falloff is calibrated once per region so that the
   deformed region map has the intended volume.
2. Residual misregistration: a random rigid motion (rotations SD 1.5
   degrees, translations SD 1 mm) about the brain centre.
3. Head size: the voxel data stay in the registered grid (as after an affine
   registration), while the NIfTI affine's voxel size is scaled by
   ``(ICV / template ICV)^(1/3)``, so world-space volumes are the subject's.
4. Nuisance: contrast variation (gamma 0.85-1.15), a smooth multiplicative
   bias field (exp of a random quadratic polynomial, about +-10 %), Rician
   noise (SD 2-4 % of white matter), skull-stripped by the deformed
   intracranial mask, stored as uint8 (white matter ~200).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..data.template import Template, load_template
from .anatomy import AnatomyVariation, shape_displacement

__all__ = ["synthesize_scan", "scan_to_nifti", "REFERENCE", "deformation_scales"]

REFERENCE = {
    "HIPPOCAMPUS_PERMILLE": 5.74,
    "VENTRICLES_PERMILLE": 13.35,
    "BRAIN_PERMILLE": 752.0,
    "ENTORHINAL_MM3": 3980.0,
    "ICV_L": 1.5,
}
SIGMA_MM = {"hippocampus_L": 3.0, "hippocampus_R": 3.0, "entorhinal_L": 3.0, "entorhinal_R": 3.0, "ventricles": 6.0}
SCALE_RANGE = (0.6, 1.6)  # linear scale factors stay here: invertible deformation


def deformation_scales(record: Mapping[str, Any], rng: np.random.Generator) -> dict[str, float]:
    """Linear scale factors: ``"global"`` and one per deformed region."""
    ref = REFERENCE
    brain = float(record["BRAIN_PERMILLE"]) / ref["BRAIN_PERMILLE"]
    s_b = brain ** (1 / 3)
    hippo = (float(record["HIPPOCAMPUS_PERMILLE"]) / ref["HIPPOCAMPUS_PERMILLE"]) ** (1 / 3) / s_b
    ento_ratio = (float(record["ENTORHINAL_MM3"]) / float(record["ICV_L"])) / (ref["ENTORHINAL_MM3"] / ref["ICV_L"])
    ento = ento_ratio ** (1 / 3) / s_b
    vent = (float(record["VENTRICLES_PERMILLE"]) / ref["VENTRICLES_PERMILLE"]) ** (1 / 3) / s_b
    asym = rng.normal(0, 0.015, 2)  # small left/right asymmetry
    scales = {
        "global": s_b,
        "hippocampus_L": hippo * (1 + asym[0]),
        "hippocampus_R": hippo * (1 - asym[0]),
        "entorhinal_L": ento * (1 + asym[1]),
        "entorhinal_R": ento * (1 - asym[1]),
        "ventricles": vent,
    }
    return {k: float(np.clip(v, *SCALE_RANGE)) for k, v in scales.items()}


def _grid(shape: tuple[int, int, int]) -> np.ndarray:
    return np.indices(shape, dtype=np.float32)


@lru_cache(maxsize=1)
def _region_weights() -> dict[str, np.ndarray]:
    """Each deformed region's smoothed map, maximum 1: where its scaling acts."""
    tpl = load_template()
    spacing = float(abs(tpl.affine[0, 0]))
    weights = {}
    for region, sigma_mm in SIGMA_MM.items():
        w = ndimage.gaussian_filter(tpl.regions[region], sigma_mm / spacing)
        # flat-topped: the whole structure, not only its core, scales as one
        weights[region] = np.clip(w / (0.4 * w.max()), 0, 1).astype(np.float32)
    return weights


@lru_cache(maxsize=1)
def _centres() -> dict[str, np.ndarray]:
    """Region centroids (voxels), shaped to broadcast against ``[3, D, H, W]``;
    constants of the template, so computed once rather than per scan."""
    tpl = load_template()
    return {name: tpl.centroid(name).astype(np.float32)[:, None, None, None] for name in (*SIGMA_MM, "intracranial")}


def _displacement(
    tpl: Template, scales: Mapping[str, float], gains: Mapping[str, float], grid: np.ndarray | None = None
) -> np.ndarray:
    """Pull-back displacement ``u [3, D, H, W]`` in voxels: sample at ``x + u(x)``."""
    grid = _grid(tpl.shape) if grid is None else grid
    centres = _centres()
    u = -(1 - 1 / scales["global"]) * (grid - centres["intracranial"])
    for region, weight in _region_weights().items():
        s = scales[region] ** gains.get(region, 1.0)
        u += -(1 - 1 / s) * (grid - centres[region]) * weight
    return u


def _warp(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0)


@lru_cache(maxsize=1)
def _gains() -> dict[str, float]:
    """Exponents that make the Gaussian-weighted scaling reach the intended
    volume: with the falloff, a factor ``s`` changes a region's volume by
    ``s^(3 g)`` with ``g < 1``; applying ``s^(1/g)`` compensates."""
    tpl = load_template()
    gains = {}
    probe = 0.8
    for region in SIGMA_MM:
        scales = dict.fromkeys(SIGMA_MM, 1.0) | {"global": 1.0, region: probe}
        coords = _grid(tpl.shape) + _displacement(tpl, scales, {})
        ratio = _warp(tpl.regions[region], coords).sum() / tpl.regions[region].sum()
        gains[region] = float(np.log(probe**3) / np.log(ratio))
    return gains


def _rigid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    ax, ay, az = np.deg2rad(rng.normal(0, 1.5, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return (rx @ ry @ rz).astype(np.float32), rng.normal(0, 0.5, 3).astype(np.float32)  # 0.5 voxel = 1 mm


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    x, y, z = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    x, y, z = np.meshgrid(x, y, z, indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3]
    coeffs = rng.normal(0, 0.05, len(terms))
    return np.exp(sum(c * t for c, t in zip(coeffs, terms)))


def synthesize_scan(
    record: Mapping[str, Any],
    rng: np.random.Generator,
    anatomy: AnatomyVariation | None = None,
    anatomy_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """One subject's scan on the template grid.

    Args:
        record: needs BRAIN_PERMILLE, HIPPOCAMPUS_PERMILLE, VENTRICLES_PERMILLE,
            ENTORHINAL_MM3 and ICV_L.
        rng: the subject's generator (scaling asymmetry, pose, nuisance).
        anatomy: ``None`` for the template's anatomy; otherwise the brain's
            shape also varies (:mod:`~napari_hyperfusion.synth.anatomy`).
        anatomy_rng: the generator of that shape, separate from ``rng`` so
            that the same subject with and without it differs only in shape.
    Returns:
        ``(uint8 [80, 96, 80], realised)``, where ``realised`` holds the
        volumes (ml, in the subject's world space) of the deformed template
        regions: the ground truth of this scan.
    """
    tpl = load_template()
    scales = deformation_scales(record, rng)
    grid = _grid(tpl.shape)
    u = _displacement(tpl, scales, _gains(), grid)
    if anatomy is not None:
        if anatomy_rng is None:
            raise ValueError("a varied anatomy needs its own generator (anatomy_rng)")
        # the shape acts on the template, after the regional scaling: the two
        # compose and their Jacobians multiply, so the volumes stay the record's
        scaled = grid + u
        u += shape_displacement(scaled, tpl.shape, float(abs(tpl.affine[0, 0])), anatomy, anatomy_rng)
    rot, shift = _rigid(rng)
    centre = _centres()["intracranial"]
    coords = np.einsum("ij,jxyz->ixyz", rot, grid + u - centre) + (centre + shift[:, None, None, None])
    image = _warp(tpl.t1, coords) / 200.0
    mask = _warp(tpl.regions["intracranial"], coords) > 0.5
    image = np.clip(image, 0, None) ** rng.uniform(0.85, 1.15)
    image *= _bias_field(tpl.shape, rng)
    sigma = rng.uniform(0.02, 0.04)
    noisy = np.sqrt(
        (image + sigma * rng.standard_normal(image.shape)) ** 2 + (sigma * rng.standard_normal(image.shape)) ** 2
    )
    data = np.clip(np.round(noisy * 200.0 * mask), 0, 255).astype(np.uint8)
    world_ml = tpl.voxel_ml * float(record["ICV_L"]) * 1000.0 / tpl.region_volume_ml("intracranial")
    realised = {
        f"{name}_ML": float(_warp(tpl.regions[name], coords).sum() * world_ml)
        for name in ("hippocampus_L", "hippocampus_R", "ventricles")
    }
    return data, realised


def scan_to_nifti(
    data: np.ndarray, icv_l: float, description: str = "SYNTHETIC scan (napari-hyperfusion)"
) -> nib.Nifti1Image:
    """Wrap a scan with the template's orientation and the subject's head
    size in the voxel size (see the module docstring)."""
    tpl = load_template()
    k = (icv_l * 1000.0 / tpl.region_volume_ml("intracranial")) ** (1 / 3)
    affine = np.diag([k, k, k, 1.0]) @ tpl.affine
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header["descrip"] = description.encode()[:79]
    return img
