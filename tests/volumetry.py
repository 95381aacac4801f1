"""Volumes measured from scans with the template's regions (test support).

* ICV: non-zero (skull-stripped) voxels times the world voxel volume.
* Ventricles: CSF partial volume (T1 below 75 % of white matter, linearly
  to full CSF at 25 %) inside the dilated template ventricle region.
* Hippocampi: a one-parameter atlas fit. The template is deformed by
  hippocampal scale factors ``s``; the ``s`` whose deformed template
  correlates best with the scan around each hippocampus gives the volume
  ratio ``s^3`` to the template.
"""

from __future__ import annotations

from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_hyperfusion.data.template import load_template
from napari_hyperfusion.synth.images import SIGMA_MM, _displacement, _gains, _grid, _warp

SCALES = np.linspace(0.7, 1.2, 21)


@lru_cache(maxsize=1)
def _library():
    tpl = load_template()
    crops = {}
    for side in ("L", "R"):
        c = np.round(tpl.centroid(f"hippocampus_{side}")).astype(int)
        crops[side] = tuple(slice(v - 10, v + 11) for v in c)
    lib = {side: [] for side in crops}
    for s in SCALES:
        scales = dict.fromkeys(SIGMA_MM, 1.0) | {"global": 1.0, "hippocampus_L": s, "hippocampus_R": s}
        warped = _warp(tpl.t1, _grid(tpl.shape) + _displacement(tpl, scales, _gains()))
        for side, sl in crops.items():
            lib[side].append(warped[sl].ravel())
    return crops, lib


def measure(path) -> dict[str, float]:
    """``{"icv_ml", "ventricles_permille", "hippocampus_ratio"}`` from one scan."""
    tpl = load_template()
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float64)
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    icv = (data > 0).sum() * voxel_ml
    norm = data / np.median(data[tpl.wm > 0.9])
    roi = ndimage.binary_dilation(tpl.regions["ventricles"] > 0.1, iterations=4) & (data > 0)
    csf = np.clip((0.75 - norm) / 0.5, 0, 1)
    ventricles = (csf * roi).sum() * voxel_ml
    crops, lib = _library()
    fitted = []
    for side, sl in crops.items():
        x = data[sl].ravel()
        x = (x - x.mean()) / x.std()
        fitted.append(SCALES[int(np.argmax([np.corrcoef(x, ref)[0, 1] for ref in lib[side]]))])
    return {
        "icv_ml": icv,
        "ventricles_permille": ventricles / icv * 1000,
        "hippocampus_ratio": float(np.mean(fitted)) ** 3,
    }
