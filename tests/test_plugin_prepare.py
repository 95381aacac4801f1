"""The panel with a scan that is not in MNI space: refused by the input gate,
prepared with the Prepare button (worker, QC, template outline), then
predicted; maps go back to the native scan; results show QC and typicality.
A real viewer, the shipped native sample and the shipped models."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PLUGIN, dock_panel
from qtpy.QtCore import Qt

from napari_hyperfusion.analysis.overlays import OVERLAY_KEY
from napari_hyperfusion.data import perturb
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.resources import sample_data_dir

pytest.importorskip("SimpleITK")
NATIVE_NAME = "SYN_DEMO_01_native (SYNTHETIC, not in MNI space)"


@pytest.fixture
def panel(make_napari_viewer, errors):
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_01_native")
    dock.errors = errors
    return dock


def _click(qtbot, button):
    assert button.isEnabled(), button.toolTip()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_native_scan_is_refused_then_prepared_and_predicted(panel, qtbot):
    viewer = panel.viewer
    assert panel.patient.current_layer().name == NATIVE_NAME
    assert panel.patient.editors["AGE"].value() == 62  # the sample's record came with it
    _click(qtbot, panel.predict_button)
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.last_result is None
    assert panel.tabs.currentWidget() is panel.preparer  # the refusal opens the Prepare tab
    refusal = panel.errors[-1]
    assert "refused by the input check" in refusal and "Prepare" in refusal and NATIVE_NAME in refusal

    _click(qtbot, panel.preparer.prepare_button)
    assert panel.busy  # off the UI thread
    qtbot.waitUntil(lambda: not panel.busy, timeout=240_000)
    prepared = panel.patient.current_layer()
    assert prepared.name == f"{NATIVE_NAME} (prepared, MNI)"  # the new scan is the chosen one
    info = prepared.metadata["hyperfusion_prepared"]
    assert info["verdict"] == "ok" and info["qc"]["ncc"] > 0.8
    assert "QC OK" in panel.preparer.qc_label.text()
    outline = next(layer for layer in viewer.layers if layer.name.startswith("MNI template outline"))
    assert outline.contour == 1 and outline.metadata[OVERLAY_KEY]["scan_fingerprint"]
    assert panel.patient.editors["AGE"].value() == 62  # the record followed the scan

    _click(qtbot, panel.predict_button)
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    result = panel.last_result
    assert result.input_qc["verdict"] in ("ok", "warn") and result.predicted == "AD"
    text = panel.result_view.label.text()
    assert "Input QC" in text and "NCC with the MNI template" in text and "Typicality" in text

    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData("saliency"))
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    native_maps = panel.preparer.maps_to_native()
    assert len(native_maps) == 2 and not [e for e in panel.errors if e != refusal]
    native = viewer.layers[NATIVE_NAME]
    for layer in native_maps:
        assert layer.data.shape == native.data.shape
        assert np.abs(layer.data).max() > 0
        assert layer.metadata["attribution"]["space"].startswith("native scan")
        np.testing.assert_allclose(layer.affine.affine_matrix, native.affine.affine_matrix)
    panel.patient.refresh_layers(select=native)  # back to the original: the QC line is not about it
    assert panel.preparer.qc_label.text() == "" and not panel.preparer.native_button.isEnabled()
    # the outline goes with the prepared scan
    viewer.layers.remove(prepared)
    assert outline not in viewer.layers


def test_ood_warning_is_shown_on_the_result(make_napari_viewer, qtbot, errors):
    """An EHR value outside the training range and a coarse scan are named
    in orange on the result, not hidden."""
    viewer = make_napari_viewer()
    panel = dock_panel(viewer, "SYN_DEMO_03")
    scan = perturb.resample_iso(load_scan(sample_data_dir() / "SYN_DEMO_03.nii.gz"), 4.0)
    layer = viewer.layers["SYN_DEMO_03 (SYNTHETIC)"]
    record = dict(layer.metadata["ehr_record"])
    coarse = viewer.add_image(scan.data, name="SYN_DEMO_03 at 4 mm", affine=scan.affine,
                              metadata={"ehr_record": record})  # fmt: skip
    assert panel.patient.current_layer() is coarse
    low = panel.model.info.input_stats["ehr"]["AGE"]["min"]
    panel.patient.editors["AGE"].input.setValue(low - 5)
    _click(qtbot, panel.predict_button)
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    warning = panel.result_view.warning_label
    assert warning.isVisible() or not panel.isVisible()
    assert "AGE" in warning.text() and "below the training range" in warning.text()
    assert "coarser than the model was trained on" in warning.text()
    assert not errors


def test_brain_age_shows_the_chronological_age_and_gap(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "sub-old")
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "HyperFusion explorer")
    brain_age = next(p for p in panel.model_picker.paths if "brain_age" in p.name)
    assert panel.open_model(brain_age)
    assert panel.patient.editors["AGE"].value() == 82  # from the sample's record; not a model input
    _click(qtbot, panel.predict_button)
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    result = panel.last_result
    assert result.chronological_age == 82
    assert result.age_gap == pytest.approx(result.values[0] - 82)
    assert f"gap {result.age_gap:+.1f} years" in panel.result_view.label.text()
    panel.patient.editors["AGE"].input.setValue(60)  # a changed age is a changed case
    assert panel.last_result is None and "STALE" in panel.result_view.label.text()
    assert not errors


def test_explain_is_refused_for_a_scan_the_gate_refuses(panel, qtbot):
    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData("saliency"))
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert "Cannot explain" in panel.errors[-1] and "refused by the input check" in panel.errors[-1]
    assert not [layer for layer in panel.viewer.layers if "attribution" in layer.metadata]
