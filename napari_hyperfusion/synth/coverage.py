"""Which of the generator's regional volumes a model's input can see.

The generator's exact posterior can condition on any of the true regional
volumes (:data:`~napari_hyperfusion.synth.truth.VOLUME_FIELDS`). A model
whose views cover only the hippocampi cannot know the ventricles' volume,
so the fair "ground truth" for its what-if curves conditions on the volumes
its views hold and integrates the others out, as the limits of each input
choice do (docs/models.md).
"""

from __future__ import annotations

from ..data.preprocess import ModelGrid
from ..data.template import grid_coverage

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
    cover = grid_coverage(grid.shape, [grid.affine(v) for v in range(grid.n_views)])
    return {region: cover[region] for region in REGION_OF_VOLUME.values()}  # not the per-side hippocampi


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
