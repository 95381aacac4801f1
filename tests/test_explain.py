"""Captum explanations: completeness, the Adebayo et al. sanity check,
overlay alignment in world space, cancel, in-place updates."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import PLUGIN, dock_panel
from scipy import ndimage
from scipy.stats import spearmanr

from napari_hyperfusion.analysis.explain import Cancelled, attribute_image, attribute_tabular
from napari_hyperfusion.analysis.overlays import PERCENT_UNIT
from napari_hyperfusion.data.preprocess import ModelGrid, intensity_reference, load_scan, prepare_views
from napari_hyperfusion.io.model_file import LoadedModel, load_model, save_model
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import subject_record


@pytest.fixture(scope="module")
def ad_model():
    return load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")


@pytest.fixture(scope="module")
def subject():
    return load_scan(sample_data_dir() / "SYN_DEMO_05.nii.gz"), subject_record("SYN_DEMO_05")


def test_integrated_gradients_completeness(ad_model, subject):
    scan, record = subject
    result = attribute_image(ad_model, scan, record, "integrated_gradients", target="MCI", baseline="blurred",
                             n_steps=64)  # fmt: skip
    grid = ModelGrid.from_dict(ad_model.info.image)
    views = prepare_views(scan, grid)
    tab = torch.as_tensor(ad_model.info.schema.encode(record)[None])
    for v in range(2):
        base = ndimage.gaussian_filter(views[v], 6.0 / grid.spacing_mm / 2.355)
        with torch.no_grad():
            f = lambda img: torch.softmax(ad_model.net(torch.as_tensor(img)[None, None], tab), -1)[0, 1]  # noqa: E731
            change = float(f(views[v]) - f(base))
        # completeness: the map sums to f(x) - f(baseline), to 1e-3 in probability
        assert abs(float(result.maps[v].sum()) - change) < 1e-3
    assert result.convergence_delta < 1e-3 and result.signed
    tabular = attribute_tabular(ad_model, scan, record, target="MCI", n_steps=256)
    assert abs(sum(tabular.values) - (tabular.output - tabular.baseline_output)) < 1e-3
    assert 0.0 <= tabular.image_share <= 1.0


def test_saliency_fails_the_sanity_check_when_weights_are_randomised(ad_model, subject):
    # Adebayo et al. 2018: a map that survives randomising the weights shows the input, not the model
    scan, record = subject
    trained = attribute_image(ad_model, scan, record, "saliency", target="AD").maps
    torch.manual_seed(123)
    random_net = build_model(ad_model.info.config).eval()
    randomised = LoadedModel(random_net, ad_model.info, ad_model.path, "random", torch.device("cpu"))
    shuffled = attribute_image(randomised, scan, record, "saliency", target="AD").maps
    rho = spearmanr(trained.ravel(), shuffled.ravel()).statistic
    assert rho < 0.5, rho
    again = attribute_image(ad_model, scan, record, "saliency", target="AD").maps
    assert spearmanr(trained.ravel(), again.ravel()).statistic > 0.999  # and the map is reproducible


def test_every_method_gives_a_map_per_view(ad_model, subject):
    scan, record = subject
    calls = []
    for method in ("gradcam", "occlusion"):
        result = attribute_image(ad_model, scan, record, method, target=None, window=8, stride=8,
                                 progress=lambda d, t: calls.append((d, t)))  # fmt: skip
        assert result.maps.shape == (2, 24, 32, 24) and np.isfinite(result.maps).all()
        assert result.maps.std() > 0 and result.target == "AD"  # None: the predicted class
    assert calls and calls[-1][0] == calls[-1][1]  # progress reaches its total


def test_cancel_stops_between_batches(ad_model, subject):
    scan, record = subject
    calls = []
    with pytest.raises(Cancelled):
        attribute_image(ad_model, scan, record, "occlusion", progress=lambda d, t: calls.append(d),
                        should_stop=lambda: len(calls) >= 2)  # fmt: skip
    assert len(calls) == 2


def test_brain_age_attributions(subject):
    model = load_model(models_dir() / "brain_age_hyperfusion.safetensors", "cpu")
    scan = load_scan(sample_data_dir() / "brain_age/sub-old/anat/sub-old_T1w.nii.gz")
    result = attribute_image(model, scan, {"PTGENDER": "M"}, "saliency")
    assert result.target == "brain age" and result.maps.shape == (1, 40, 48, 40)
    tabular = attribute_tabular(model, scan, {"PTGENDER": "M"})
    assert tabular.fields == ["PTGENDER"]


@pytest.fixture(scope="module")
def silent_head_file(tmp_path_factory):
    """The shipped brain-age file with a ReLU head whose first layer is off for
    every scan, written by the model writer: what the ReLU files shipped
    before did for the oldest quarter of brains (docs/models.md, "The head
    goes silent for old brains")."""
    model = load_model(models_dir() / "brain_age_hyperfusion.safetensors", "cpu")
    config = model.info.config.replace(head_activation="relu")
    net = build_model(config)
    net.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        net.head.layers[0].bias_gen.bias.fill_(-1e4)
    path = tmp_path_factory.mktemp("silent") / "brain_age_silent_head.safetensors"
    return save_model(path, net, dataclasses.replace(model.info, config=config))


def test_a_map_of_a_brain_the_head_is_silent_for_says_it_is_blank(silent_head_file):
    """With every unit of the head's first layer off the output does not move
    with the scan: saliency is zero everywhere, and the map says so instead
    of passing for "nothing matters"; a map with a live head is not blank."""
    old, young = (load_scan(sample_data_dir() / f"brain_age/{n}/anat/{n}_T1w.nii.gz") for n in ("sub-old", "sub-young"))
    maps = {
        "silent": attribute_image(load_model(silent_head_file, "cpu"), old, {"PTGENDER": "M"}, "saliency"),
        "shipped": attribute_image(
            load_model(models_dir() / "brain_age_hyperfusion.safetensors", "cpu"), young, {"PTGENDER": "F"}, "saliency"
        ),
    }
    assert maps["silent"].is_blank and any("zero everywhere" in w for w in maps["silent"].warnings())
    assert not maps["shipped"].is_blank and not any("zero everywhere" in w for w in maps["shipped"].warnings())


# -- in the viewer -------------------------------------------------------------
@pytest.fixture
def panel(make_napari_viewer, errors):
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_05")
    dock.errors = errors
    return dock


def _explain(panel, qtbot, method="saliency"):
    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData(method))
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)


def _overlays(viewer):
    return [layer for layer in viewer.layers if "hyperfusion_overlay" in layer.metadata]


def test_overlay_is_aligned_with_the_scan_in_world_space(panel, qtbot, tmp_path):
    _explain(panel, qtbot)
    viewer = panel.viewer
    overlays = _overlays(viewer)
    assert len(overlays) == 2 and not panel.errors
    scan_layer = viewer.layers["SYN_DEMO_05 (SYNTHETIC)"]
    grid = ModelGrid.from_dict(panel.model.info.image)
    scan = load_scan(sample_data_dir() / "SYN_DEMO_05.nii.gz")
    views = prepare_views(scan, grid)
    mean, std = intensity_reference(scan, grid.normalization)
    for v, overlay in enumerate(overlays):
        assert overlay.metadata["attribution"]["method"] == "saliency"
        assert overlay.metadata["attribution"]["model_sha256"] == panel.model.sha256
        # values read in percent of the map's 99.5th-percentile magnitude: a colour bar of 0 to 100
        attribution = overlay.metadata["attribution"]
        raw = panel.explainer.last_explanation[0].maps[v]
        assert attribution["unit"] == PERCENT_UNIT and tuple(overlay.contrast_limits) == (0.0, 100.0)
        assert attribution["raw_per_100_percent"] == pytest.approx(np.percentile(np.abs(raw), 99.5))
        np.testing.assert_allclose(overlay.data, raw * 100 / attribution["raw_per_100_percent"], rtol=1e-5)
        for ijk in [(0, 0, 0), (12, 16, 12), (20, 5, 17)]:
            world = overlay.data_to_world(ijk)
            np.testing.assert_allclose(world, (grid.affine(v) @ np.r_[ijk, 1.0])[:3], atol=1e-5)
            # the scan voxel napari shows at that world position is what the model read there
            scan_ijk = scan_layer.world_to_data(world)
            sampled = ndimage.map_coordinates(scan.data, np.reshape(scan_ijk, (3, 1)), order=1)[0]
            assert (sampled - mean) / std == pytest.approx(views[v][ijk], abs=1e-3)
    # saved through the writer: the NIfTI carries the grid's affine
    viewer.layers.selection = {overlays[1]}
    out = tmp_path / "map.nii.gz"
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    np.testing.assert_allclose(nib.load(str(out)).affine, grid.affine(1), atol=1e-5)


def test_rerun_updates_in_place_and_other_scans_keep_their_maps(panel, qtbot):
    viewer = panel.viewer
    _explain(panel, qtbot, "saliency")
    first = [layer.data.copy() for layer in _overlays(viewer)]
    _explain(panel, qtbot, "gradcam")
    assert len(_overlays(viewer)) == 2  # replaced, not piled up
    assert all("gradcam" in layer.name for layer in _overlays(viewer))
    viewer.open_sample(PLUGIN, "SYN_DEMO_02")
    panel.patient.layer_combo.setCurrentText("SYN_DEMO_02 (SYNTHETIC)")
    _explain(panel, qtbot, "saliency")
    overlays = _overlays(viewer)
    assert len(overlays) == 4
    sources = sorted(layer.metadata["hyperfusion_overlay"]["source_layer"] for layer in overlays)
    assert sources == ["SYN_DEMO_02 (SYNTHETIC)"] * 2 + ["SYN_DEMO_05 (SYNTHETIC)"] * 2
    assert not np.array_equal(first[0], overlays[-1].data)


def test_cancel_leaves_the_viewer_usable(panel, qtbot):
    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData("occlusion"))
    panel.explain()
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert _overlays(panel.viewer) == [] and "cancel" in panel.status.text().lower()
    assert panel.explainer.explain_button.isEnabled() and panel.predict_button.isEnabled()
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)


def test_the_panel_warns_when_a_map_is_blank(make_napari_viewer, qtbot, errors, monkeypatch, silent_head_file):
    from napari_hyperfusion._qt import notify

    warned = []
    monkeypatch.setattr(notify, "warning", warned.append)
    panel = dock_panel(make_napari_viewer(), "sub-old")
    assert panel.open_model(silent_head_file)
    _explain(panel, qtbot, "saliency")
    assert len(_overlays(panel.viewer)) == 1 and not errors
    assert any("zero everywhere" in w and "Occlusion" in w for w in warned), warned
    assert "the map is zero everywhere" in panel.explainer.explain_label.text()
    assert any(w.startswith("The Saliency map of brain age is zero everywhere") for w in warned), warned


@pytest.mark.gpu
def test_attributions_on_cuda_match_the_cpu(subject):
    scan, record = subject
    cpu = load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")
    gpu = load_model(models_dir() / "ad_hyperfusion.safetensors", "cuda")
    a = attribute_image(cpu, scan, record, "integrated_gradients", target="AD")
    b = attribute_image(gpu, scan, record, "integrated_gradients", target="AD")
    assert spearmanr(a.maps.ravel(), b.maps.ravel()).statistic > 0.99
