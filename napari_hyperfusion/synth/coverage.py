"""Which of the generator's regional volumes a model's input can see.

The generator's exact posterior can condition on any of the true regional
volumes (:data:`~napari_hyperfusion.synth.truth.VOLUME_FIELDS`). A model
whose views cover only the hippocampi cannot know the ventricles' volume,
so the fair "ground truth" for its what-if curves conditions on the volumes
its views hold and integrates the others out, as the limits of each input
choice do (docs/models.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..data.preprocess import ModelGrid

__all__ = ["REGION_OF_VOLUME", "SEEN_THRESHOLD", "region_coverage", "seen_volumes"]

# the generator's volume columns and the template regions they measure
REGION_OF_VOLUME = {
    "HIPPOCAMPUS_PERMILLE": "hippocampi",
    "ENTORHINAL_MM3": "entorhinal cortices",
    "VENTRICLES_PERMILLE": "ventricles",
    "BRAIN_PERMILLE": "brain tissue (GM + WM)",
}
SEEN_THRESHOLD = 0.5  # a region counts as seen when at least half its mass is inside the views


def region_coverage(grid: ModelGrid) -> dict[str, float]:
    """Share of each template region's partial-volume mass inside the union
    of a model's views.

    Args:
        grid: the model's grid (``ModelGrid.from_dict(info.image)``).

    Returns:
        ``{region name: fraction 0..1}`` for the names of
        :data:`REGION_OF_VOLUME`'s values.
    """
    key = (grid.shape, tuple(tuple(map(tuple, np.asarray(grid.affine(v)).tolist())) for v in range(grid.n_views)))
    return dict(_coverage(key))


@lru_cache(maxsize=8)
def _coverage(key) -> tuple[tuple[str, float], ...]:
    from ..data.template import load_template

    shape, affines = key
    tpl = load_template()
    idx = np.indices(tpl.shape).reshape(3, -1)
    world = tpl.affine[:3, :3] @ idx + tpl.affine[:3, 3:4]
    inside = np.zeros(idx.shape[1], dtype=bool)
    for affine in affines:
        inv = np.linalg.inv(np.asarray(affine))
        ijk = inv[:3, :3] @ world + inv[:3, 3:4]
        inside |= np.all((ijk >= -0.5) & (ijk <= np.array(shape)[:, None] - 0.5), axis=0)
    regions = {
        "hippocampi": tpl.regions["hippocampus_L"] + tpl.regions["hippocampus_R"],
        "entorhinal cortices": tpl.regions["entorhinal_L"] + tpl.regions["entorhinal_R"],
        "ventricles": tpl.regions["ventricles"],
        "brain tissue (GM + WM)": tpl.gm + tpl.wm,
    }
    return tuple((name, float(mass.ravel()[inside].sum() / mass.sum())) for name, mass in regions.items())


def seen_volumes(image: dict | None) -> tuple[str, ...]:
    """The volume columns a model's input holds: those whose region is at
    least :data:`SEEN_THRESHOLD` inside its views; none for a model that
    reads no image.

    Args:
        image: the model file's ``image`` section (``info.image``), or None.

    Returns:
        A subset of :data:`REGION_OF_VOLUME`'s keys, in its order.
    """
    if not image:
        return ()
    cover = region_coverage(ModelGrid.from_dict(image))
    return tuple(col for col, region in REGION_OF_VOLUME.items() if cover[region] >= SEEN_THRESHOLD)
