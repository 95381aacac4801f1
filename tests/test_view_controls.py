"""The canvas's reading conventions: plane, neurological / radiological,
window presets, the line that says what the screen shows, and a panel whose
tools are one click away."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_panel


@pytest.fixture
def panel(make_napari_viewer):
    return dock_panel(make_napari_viewer(), "SYN_DEMO_01")


def test_a_sample_opens_axial_with_anterior_up_and_the_patients_right_on_the_right(panel):
    viewer = panel.viewer
    assert viewer.dims.order[-3:] == (2, 1, 0)  # z sliced; y vertical, x horizontal
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "right")
    assert viewer.dims.axis_labels[-3:] == ("x (mm, +R)", "y (mm, +A)", "z (mm, +S)")
    text = viewer.canvas.overlays.text.text
    assert text.startswith("AXIAL  z = ") and "mm" in text and "\nR on the RIGHT (neurological)" in text


def test_radiological_sagittal_and_coronal(panel):
    viewer, view = panel.viewer, panel.view_controls
    view.convention.setCurrentIndex(1)
    assert tuple(viewer.scene.camera.orientation2d) == ("up", "left")
    assert "R on the LEFT (radiological)" in viewer.canvas.overlays.text.text
    view.plane.setCurrentText("coronal")
    assert viewer.dims.order[-3:] == (1, 2, 0) and tuple(viewer.scene.camera.orientation2d) == ("up", "left")
    assert (
        viewer.canvas.overlays.text.text.startswith("CORONAL  y = ")
        and "R on the LEFT" in viewer.canvas.overlays.text.text
    )
    view.plane.setCurrentText("sagittal")
    assert viewer.dims.order[-3:] == (0, 2, 1) and "anterior on the LEFT" in viewer.canvas.overlays.text.text


def test_the_slice_and_the_cursor_are_told_in_millimetres(panel):
    viewer, view = panel.viewer, panel.view_controls
    axis = viewer.dims.ndim - 1
    viewer.dims.set_point(axis, 12.0)
    assert f"z = {viewer.dims.point[axis]:.1f} mm" in viewer.canvas.overlays.text.text
    viewer.cursor.position = (10.0, -20.0, 5.0)
    view._on_mouse_move(viewer, None)
    assert "cursor x +10.0  y -20.0  z +5.0 mm" in viewer.canvas.overlays.text.text


def test_window_presets_set_the_scans_contrast(panel):
    layer = panel.patient.current_layer()
    view = panel.view_controls
    view.window.setCurrentText("full range")
    data = np.asarray(layer.data, dtype=np.float32)
    assert tuple(layer.contrast_limits) == pytest.approx((data.min(), data.max()))
    view.window.setCurrentText("T1 contrast (5-95 %)")
    inside = data[data > np.percentile(data, 20)]
    assert tuple(layer.contrast_limits) == pytest.approx((np.percentile(inside, 5), np.percentile(inside, 95)))


def test_what_if_is_one_click_away_and_the_panel_fits_a_dock(panel):
    tabs = panel.tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == [
        "What if...",
        "Explain (Captum)",
        "Prepare",
        "View",
        "Lecture",
    ]
    assert tabs.currentWidget() is panel.whatif
    panel.resize(420, 900)
    panel.show()
    assert panel.scroll.horizontalScrollBar().maximum() <= 40, panel.scroll.widget().sizeHint()


def test_maps_keep_the_anatomy_visible_with_one_colour_bar_and_a_legend(make_napari_viewer):
    from napari_hyperfusion._qt.layers import put_overlay
    from napari_hyperfusion.analysis.explain import ImageAttribution
    from napari_hyperfusion.analysis.overlays import HEAT, overlay_layers, overlay_legend

    viewer = make_napari_viewer()
    maps = np.random.default_rng(0).random((2, 8, 10, 8)).astype(np.float32)
    affine = np.eye(4)
    layers = []
    for method, signed in (("gradcam", False), ("integrated_gradients", True)):
        attribution = ImageAttribution(maps=maps - 0.5 * signed, affines=[affine, affine], view_names=["right", "left"],
                                       method=method, target="AD", params={}, signed=signed, output=0.7,
                                       probability=0.7)  # fmt: skip
        layers = [
            put_overlay(viewer, data, kwargs) for data, kwargs in overlay_layers(attribution, "scan", "m", "sha", {})
        ]
        if method == "gradcam":
            assert layers[0].blending == "translucent" and layers[0].colormap.name == HEAT["name"]
            assert layers[0].colormap.colors[1][3] == 0.0  # weak attribution is see-through
    # a new method replaces the scan's maps in place; one colour bar, the newest map's
    assert [layer.colorbar.visible for layer in viewer.layers if "attribution" in layer.metadata] == [False, True]
    assert layers[-1].metadata["attribution"]["legend"] == (
        "integrated gradients: green raises P(AD), purple lowers it; see-through: no effect"
    )
    assert overlay_legend("saliency", "brain age", False, "value").startswith("saliency: yellow = where brain age")
