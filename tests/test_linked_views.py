"""The canvases linked to the main viewer: side letters and a mm scale bar,
three planes with one crosshair, the patient beside a what-if twin, and the
lecture size."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
from conftest import dock_panel

from napari_hyperfusion._qt import notify
from napari_hyperfusion._qt.linked_views import CROSSHAIR_NAME, CROSSHAIR_PX, _on_click, crosshair_lines
from napari_hyperfusion._qt.orientation import side_letters
from napari_hyperfusion._qt.plain import PlainCanvas
from napari_hyperfusion._qt.view_controls import LECTURE_SCALE


def letters(viewer) -> dict[str, str]:
    overlays = viewer.canvas.overlays
    return {edge: overlays[f"hyperfusion_side_{edge}"].text for edge in side_letters("axial", False)}


@pytest.fixture
def panel(make_napari_viewer):
    return dock_panel(make_napari_viewer(), "SYN_DEMO_01")


def test_the_patients_sides_are_lettered_on_every_edge(panel):
    viewer, view = panel.viewer, panel.view_controls
    assert letters(viewer) == {"top_center": "A", "bottom_center": "P", "middle_left": "L", "middle_right": "R"}
    view.convention.setCurrentIndex(1)  # radiological: the patient's right on the screen's left
    assert letters(viewer)["middle_left"] == "R" and letters(viewer)["middle_right"] == "L"
    view.plane.setCurrentText("coronal")
    assert letters(viewer) == {"top_center": "S", "bottom_center": "I", "middle_left": "R", "middle_right": "L"}
    view.plane.setCurrentText("sagittal")
    assert letters(viewer) == {"top_center": "S", "bottom_center": "I", "middle_left": "A", "middle_right": "P"}


def test_the_scale_bar_is_in_millimetres(panel):
    scan = panel.patient.current_layer()
    assert panel.viewer.canvas.overlays.scale_bar.visible
    assert [str(unit) for unit in scan.units] == ["millimeter"] * 3


def test_crosshair_lines_cross_at_the_point_along_each_axis():
    extent = np.array([[-90.0, -126.0, -72.0], [90.0, 90.0, 108.0]])
    lines = crosshair_lines((10.0, -20.0, 5.0), extent)
    assert lines.shape == (3, 2, 3)
    np.testing.assert_array_equal(lines[0], [[-90.0, -20.0, 5.0], [90.0, -20.0, 5.0]])  # along x
    np.testing.assert_array_equal(lines[2], [[10.0, -20.0, -72.0], [10.0, -20.0, 108.0]])  # along z


def test_three_planes_share_one_point_and_mirror_the_scan(panel, qtbot):
    viewer, view = panel.viewer, panel.view_controls
    scan = panel.patient.current_layer()
    view.three_planes.setChecked(True)
    ortho = view.ortho
    assert ortho.planes == ["coronal", "sagittal"]
    coronal, sagittal = ortho.canvases
    assert coronal.model.dims.order == (1, 2, 0) and sagittal.model.dims.order == (0, 2, 1)
    assert np.shares_memory(coronal.model.layers[0].data, scan.data)  # the same array, not a copy
    assert letters(sagittal.model)["middle_left"] == "A"
    # the main viewer's point moves the other planes' slices and the crosshair in all three
    ortho.move_point(np.array([10.0, -20.0, -14.0]))
    qtbot.waitUntil(lambda: not ortho.busy, timeout=5000)  # the side canvases follow on the next pass
    point = viewer.dims.point
    assert point[0] == pytest.approx(10.0, abs=1.0) and point[1] == pytest.approx(-20.0, abs=1.0)
    assert coronal.model.dims.point == sagittal.model.dims.point == point
    cross = next(layer for layer in viewer.layers if layer.name == CROSSHAIR_NAME)
    np.testing.assert_allclose(cross.data[0][0][1:], point[1:])
    for model in (viewer, coronal.model, sagittal.model):
        # the two lines lying in each plane are drawn, full length, and at least a pixel wide on screen
        # (a width in mm vanished in the small side canvases)
        mine = next(layer for layer in model.layers if layer.name == CROSSHAIR_NAME)
        assert mine.vector_style == "line" and len(mine._view_data) == 2
        assert mine.edge_width * model.camera.zoom == pytest.approx(CROSSHAIR_PX, rel=0.06)
    coronal.model.camera.zoom *= 3  # zooming in keeps the width on screen
    assert next(lyr for lyr in coronal.model.layers if lyr.name == CROSSHAIR_NAME).edge_width * (
        coronal.model.camera.zoom
    ) == pytest.approx(CROSSHAIR_PX, rel=0.06)
    assert panel.patient.current_layer() is scan  # the crosshair is not offered as a scan
    # a click in the sagittal plane (no drag) moves the shared point; a drag pans and moves nothing
    click = _on_click(ortho.move_point)

    class Event:
        def __init__(self, position):
            self.position, self.type = position, "mouse_press"

    event = Event((point[0], 30.0, 20.0))
    steps = click(sagittal.model, event)
    next(steps)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(steps)
    assert viewer.dims.point[1] == pytest.approx(30.0, abs=1.0) and viewer.dims.point[2] == pytest.approx(20.0, abs=1)
    qtbot.waitUntil(lambda: not ortho.busy, timeout=5000)
    assert coronal.model.dims.point == viewer.dims.point
    dragged = Event((point[0], -60.0, -40.0))
    steps = click(sagittal.model, dragged)
    next(steps)
    dragged.type = "mouse_move"
    next(steps)
    dragged.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(steps)
    assert viewer.dims.point[1] == pytest.approx(30.0, abs=1.0)
    # a slider moved in a side canvas moves the main viewer too
    coronal.model.dims.set_point(1, 0.0)
    assert viewer.dims.point[1] == pytest.approx(0.0, abs=1.0)
    # the main canvas goes coronal: the others are axial and sagittal
    view.plane.setCurrentText("coronal")
    assert ortho.planes == ["axial", "sagittal"] and ortho.canvases[0].model.dims.order == (2, 1, 0)
    view.three_planes.setChecked(False)
    assert view.ortho is None and CROSSHAIR_NAME not in [layer.name for layer in viewer.layers]


def test_an_overlay_appears_in_the_other_planes(panel, qtbot):
    from napari_hyperfusion._qt.layers import put_overlay
    from napari_hyperfusion.analysis.explain import ImageAttribution
    from napari_hyperfusion.analysis.overlays import overlay_layers

    view = panel.view_controls
    view.three_planes.setChecked(True)
    maps = np.random.default_rng(0).random((1, 8, 10, 8)).astype(np.float32)
    attribution = ImageAttribution(maps=maps, affines=[np.eye(4)], view_names=["whole"], method="saliency",
                                   target="AD", params={}, signed=False, output=0.5, probability=0.5)  # fmt: skip
    for data, kwargs in overlay_layers(attribution, "scan", "m", "sha", {}):
        put_overlay(panel.viewer, data, kwargs)
    coronal = view.ortho.canvases[0].model
    qtbot.waitUntil(lambda: len(coronal.layers) == 3, timeout=5000)  # scan, map, crosshair
    assert coronal.layers[1].name.startswith("saliency -> AD")
    assert np.shares_memory(coronal.layers[1].data, panel.viewer.layers[-1].data) or np.array_equal(
        coronal.layers[1].data, maps[0]
    )


def test_three_planes_follow_layer_changes_without_rebuilding(panel, qtbot):
    """A renamed or re-windowed layer changes its mirrors in place; a new
    layer adds one mirror per canvas and keeps the others; a removed one
    takes only its own (the old rebuild remade every mirror on each event:
    seconds of frozen window with software OpenGL)."""
    viewer, view = panel.viewer, panel.view_controls
    scan = panel.patient.current_layer()
    view.three_planes.setChecked(True)
    coronal = view.ortho.canvases[0]
    timer = view.ortho._rebuild_timer
    qtbot.waitUntil(lambda: coronal.mirror_of(scan) is not None and not timer.isActive(), timeout=5000)
    mirror = coronal.mirror_of(scan)
    scan.name = "renamed scan"
    scan.contrast_limits = [0.0, 77.0]
    assert coronal.mirror_of(scan) is mirror  # the same layer, changed at once (no timer, no rebuild)
    assert mirror.name == "renamed scan" and tuple(mirror.contrast_limits) == (0.0, 77.0)
    assert not timer.isActive()
    viewer.open_sample("napari-hyperfusion", "SYN_DEMO_02")
    # by iteration: the plugin's viewer is napari's proxy, whose item lookups return new wrappers
    second = next(layer for layer in viewer.layers if layer.name.startswith("SYN_DEMO_02"))
    qtbot.waitUntil(lambda: coronal.mirror_of(second) is not None, timeout=5000)
    assert coronal.mirror_of(scan) is mirror
    names = [layer.name for layer in coronal.model.layers]
    assert names.index(mirror.name) < names.index(coronal.mirror_of(second).name) < names.index(CROSSHAIR_NAME)
    viewer.layers.remove(second)
    qtbot.waitUntil(lambda: coronal.mirror_of(second) is None, timeout=5000)
    assert coronal.mirror_of(scan) is mirror and len(coronal.model.layers) == 2  # the scan and the crosshair


@pytest.mark.skipif(sys.platform == "win32", reason="napari's collection per removed layer guards a Windows driver bug")
def test_three_planes_leave_the_main_canvas_first_and_free_what_was_removed(panel, qtbot, monkeypatch):
    """The side canvases follow a burst of point moves once, after the main
    viewer has answered; removing a layer costs napari's full garbage
    collection once (the main canvas's), not once more per side canvas
    (0.26 s each with torch loaded), and nothing of the side canvases keeps
    the removed scan's array alive."""
    import gc
    import weakref

    viewer, view = panel.viewer, panel.view_controls
    view.three_planes.setChecked(True)
    ortho = view.ortho
    coronal = ortho.canvases[0]
    qtbot.waitUntil(lambda: not ortho.busy, timeout=5000)
    before = coronal.model.dims.point
    moves = []
    follow = coronal.set_point
    monkeypatch.setattr(coronal, "set_point", lambda point: moves.append(point) or follow(point))
    for step in range(10):  # a drag of the main viewer's slider: ten points in one pass
        ortho.move_point(np.array([-8.0 + step, -12.0, 4.0]))
    assert coronal.model.dims.point == before and ortho.busy  # not yet: the main canvas paints first
    qtbot.waitUntil(lambda: not ortho.busy, timeout=5000)
    # one update for the burst, to the last point (within the slice grid the side canvas snaps to)
    assert len(moves) == 1 and viewer.dims.point[0] == pytest.approx(1.0, abs=1.0)
    np.testing.assert_allclose(coronal.model.dims.point, viewer.dims.point, atol=1.0)

    viewer.open_sample("napari-hyperfusion", "SYN_DEMO_02")
    second = next(layer for layer in viewer.layers if layer.name.startswith("SYN_DEMO_02"))
    qtbot.waitUntil(lambda: coronal.mirror_of(second) is not None and not ortho.busy, timeout=5000)
    mirrors = [canvas.mirror_of(second) for canvas in ortho.canvases]
    scan = weakref.ref(second.data)
    collections = []
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or real_collect(*args))
    viewer.layers.remove(second)
    second = None  # the test lets go of it too
    qtbot.waitUntil(lambda: not ortho.busy, timeout=5000)
    assert all(mirror not in canvas.model.layers for canvas, mirror in zip(ortho.canvases, mirrors))
    assert len(collections) == 1  # the main canvas's own; none for the two side canvases
    del mirrors
    real_collect()  # the removed layer and its mirrors are cycles: Python's collector frees them, array and all
    assert scan() is None

    # a large scan is given back without waiting for Python's own collection: one collection a second later
    viewer.add_image(np.zeros((128, 128, 128), np.float32), name="large scan")  # 8 MiB, in two mirrors
    big = next(layer for layer in viewer.layers if layer.name == "large scan")  # not the proxy's wrapper
    qtbot.waitUntil(lambda: coronal.mirror_of(big) is not None and not ortho.busy, timeout=5000)
    monkeypatch.setattr(type(coronal.late_collection), "THRESHOLD_BYTES", 12 * 2**20)
    scan, collections[:] = weakref.ref(big.data), []
    viewer.layers.remove(big)
    big = None
    qtbot.waitUntil(lambda: not ortho.busy, timeout=5000)
    assert len(collections) == 1 and scan() is not None  # the main canvas's only, while the hand acts
    qtbot.waitUntil(lambda: scan() is None, timeout=5000)  # then the late collection frees it
    assert len(collections) == 2


@pytest.fixture
def predicted(make_napari_viewer, monkeypatch, qtbot):
    monkeypatch.setattr(notify, "error", lambda m: pytest.fail(m))
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    dock.predict()
    qtbot.waitUntil(lambda: not dock.busy and dock.last_result is not None, timeout=60_000)
    return dock


def test_twin_view_shows_both_maps_their_difference_and_both_predictions(predicted):
    whatif = predicted.whatif
    whatif.set_whatif_value("AGE", 85.0)
    whatif.update_whatif()
    # each generated layer's change: a bar, the size of the change, and words for it
    assert re.search(
        r"Generated \S+: [\u2588\u2591]{10} [\d.]+% of its size, (barely moved|a )", whatif.whatif_label.text()
    )
    assert whatif.twin_view()
    twin = whatif.twin
    patient, other, difference = (canvas.model.layers[-1] for canvas in twin.canvases)
    # one unit for all three: percent of the larger map's magnitude (float32 rounding at that scale)
    np.testing.assert_allclose(difference.data, other.data - patient.data, atol=1e-4)
    assert max(patient.data.max(), other.data.max()) > 50 and tuple(patient.contrast_limits) == (0.0, 100.0)
    assert patient.data.max() > 0 and not np.array_equal(patient.data, other.data)
    # patient and twin on one colour scale
    assert tuple(patient.contrast_limits) == tuple(other.contrast_limits)
    session = whatif.cached_session()
    p_ad = session.predict(whatif.whatif_record())[2]
    titles = [canvas.title.text() for canvas in twin.canvases]
    assert titles[0].startswith("Patient: P(CN)") and "Age 85 (patient 62)" in titles[1]
    assert f"P(AD) {p_ad:.0%}" in titles[1]
    assert "more sensitive there in the what-if" in titles[2]
    assert "SYN_DEMO_01" in twin.header.text() and "SYNTHETIC" in twin.header.text()
    # the cameras move together
    twin.canvases[0].model.scene.camera.zoom = 3.0
    assert [canvas.model.scene.camera.zoom for canvas in twin.canvases] == [3.0, 3.0, 3.0]
    # the case changes: the twin says it is stale
    predicted.patient.editors["AGE"].set_value(70.0)
    assert twin.header.text().startswith("STALE")


def test_lecture_size_scales_the_panel_the_canvas_text_and_the_figures(panel):
    view = panel.view_controls
    canvas = panel.whatif.whatif_canvas
    dpi = canvas.figure.dpi
    view.lecture.setChecked(True)
    assert "font-size: 16pt" in panel.scroll.widget().styleSheet()
    assert panel.viewer.canvas.overlays.text.font_size == pytest.approx(10 * LECTURE_SCALE)
    assert panel.viewer.canvas.overlays["hyperfusion_side_top_center"].font_size == pytest.approx(16 * LECTURE_SCALE)
    assert canvas.figure.dpi == pytest.approx(dpi * LECTURE_SCALE)
    assert all(isinstance(c, PlainCanvas) for c in panel.findChildren(PlainCanvas))
    view.lecture.setChecked(False)
    assert canvas.figure.dpi == pytest.approx(dpi) and panel.scroll.widget().styleSheet() == ""
