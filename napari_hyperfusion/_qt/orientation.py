"""The patient's orientation on a napari canvas: which world axes a plane
shows, which way is up and which side is the patient's right (neurological
or radiological), and the side letters on the canvas edges. Shared by the
main canvas (:mod:`.view_controls`) and the linked ones (:mod:`.linked_views`).

Scans are placed in world space with RAS+ axes (napari world axis 0 = x,
left -> right; 1 = y, posterior -> anterior; 2 = z, inferior -> superior,
in mm).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AXIS_LABELS", "PLANES", "SIDES", "orient", "side_letters", "show_side_letters"]

AXIS_LABELS = ("x (mm, +R)", "y (mm, +A)", "z (mm, +S)")
# plane -> (dims.order, the sliced world axis, (vertical axis, horizontal axis))
PLANES = {
    "axial": ((2, 1, 0), 2, (1, 0)),
    "coronal": ((1, 2, 0), 1, (2, 0)),
    "sagittal": ((0, 2, 1), 0, (2, 1)),
}
SIDES = ("top_center", "bottom_center", "middle_left", "middle_right")  # canvas edges, as napari names them


def side_letters(plane: str, radiological: bool) -> dict[str, str]:
    """The patient's side at each canvas edge for a plane and convention.

    Returns:
        ``{edge: letter}`` for the four edges in :data:`SIDES`, e.g. axial
        neurological: ``{"top_center": "A", "bottom_center": "P",
        "middle_left": "L", "middle_right": "R"}``.

    Example:
        >>> side_letters("coronal", radiological=True)["middle_left"]
        'R'
    """
    up, down = ("A", "P") if plane == "axial" else ("S", "I")
    if plane == "sagittal":
        left, right = "A", "P"  # anterior on the left, as radiology shows a sagittal slice
    else:
        left, right = ("R", "L") if radiological else ("L", "R")
    return dict(zip(SIDES, (up, down, left, right)))


def orient(viewer: Any, plane: str, radiological: bool) -> None:
    """Show ``plane`` in a viewer (or a bare ViewerModel) with anterior /
    superior up and left-right by the convention; the axes named in mm."""
    if viewer.dims.ndim < 3:
        return
    order, _, (vertical, horizontal) = PLANES[plane]
    lead = tuple(range(viewer.dims.ndim - 3))  # any axes before x, y, z (none for one scan)
    viewer.dims.order = lead + tuple(len(lead) + a for a in order)
    viewer.dims.ndisplay = 2
    labels = list(viewer.dims.axis_labels)
    labels[-3:] = AXIS_LABELS
    viewer.dims.axis_labels = labels
    if horizontal == 0:  # x: the patient's right on the screen's right (neurological) or left
        along = "left" if radiological else "right"
    else:  # sagittal: anterior on the left, as radiology shows it
        along = "left"
    viewer.scene.camera.orientation2d = ("up", along)


def show_side_letters(viewer: Any, plane: str, radiological: bool, font_size: float = 16) -> None:
    """Put the patient's side letters on the four canvas edges (napari text overlays)."""
    from napari.components.overlays import TextOverlay

    overlays = viewer.canvas.overlays
    for edge, letter in side_letters(plane, radiological).items():
        key = f"hyperfusion_side_{edge}"
        if key not in overlays:
            overlays[key] = TextOverlay(position=edge, box=False, color="yellow")
        overlays[key].text = letter
        overlays[key].font_size = font_size
        overlays[key].visible = True
