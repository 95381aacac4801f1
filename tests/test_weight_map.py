"""The weight-space map: exact PCA of the generated weights, stored in model
files, fitted by training and by scripts/add_weight_map.py, and shown live
in the What-if section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import AD_TEST_SHAPE, BRAIN_AGE_TEST_SHAPE, dock_panel, tiny_train_settings

from napari_hyperfusion.errors import ModelFileError
from napari_hyperfusion.infer.weight_map import MAX_POINTS, WeightMap, fit_weight_map, generated_vector
from napari_hyperfusion.io.model_file import load_model, read_info, save_model
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.config import paper_ad_config, paper_brain_age_config
from napari_hyperfusion.resources import models_dir

REPO = Path(__file__).resolve().parents[1]


def _pca_scores(matrix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    centred = matrix - matrix.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :k] * s[:k], (s[:k] ** 2) / (s**2).sum()


def test_the_map_is_the_pca_of_the_generated_weights_themselves():
    """Projecting in embedding space gives exactly the principal-component
    scores of the full generated parameter vectors (up to each axis' sign)."""
    net = build_model(paper_ad_config("hyperfusion", input_shape=AD_TEST_SHAPE)).eval()
    with torch.no_grad():  # embeddings that vary in every direction, as trained ones do
        for p in net.embedding.parameters():
            p.normal_(0, 0.5)
    tabular = torch.randn(80, net.config.input_dim, generator=torch.Generator().manual_seed(3))
    labels = ["CN", "MCI", "AD"] * 26 + ["CN", "AD"]
    wmap = fit_weight_map(net, tabular.numpy(), labels, "class", "diagnosis", fitted_on="80 random rows")
    assert wmap is not None and wmap.dims == 2
    full = generated_vector(net, net.embed(tabular)).double().numpy()
    assert full.shape[1] == wmap.n_parameters > 1000
    scores, explained = _pca_scores(full, 2)
    signs = np.sign((scores * wmap.points).sum(0))
    np.testing.assert_allclose(wmap.points * signs, scores, rtol=1e-5, atol=1e-6 * np.abs(scores).max())
    np.testing.assert_allclose(wmap.explained, explained, rtol=1e-6)
    # a new subject lands where its own generated weights project
    new = torch.randn(5, net.config.input_dim)
    e = net.embed(new)
    mean = full.mean(0)
    basis = (full - mean).T @ (scores / (scores**2).sum(0))  # the principal directions, unit length
    direct = (generated_vector(net, e).double().numpy() - mean) @ basis
    np.testing.assert_allclose(wmap.project(e) * signs, direct, rtol=1e-5, atol=1e-6 * np.abs(direct).max())
    assert WeightMap.from_dict(wmap.to_dict()).project(e) == pytest.approx(wmap.project(e), rel=1e-6)


def test_a_one_dimensional_embedding_gives_one_axis_and_a_baseline_none():
    net = build_model(paper_brain_age_config("hyperfusion", input_shape=BRAIN_AGE_TEST_SHAPE)).eval()
    sex = torch.nn.functional.one_hot(torch.arange(40) % 2, 2).float()
    # untrained, both sexes get the same network (the paper's fill init): no map to draw
    assert fit_weight_map(net, sex.numpy(), [60.0] * 40, "number", "age (years)") is None
    with torch.no_grad():
        for p in net.embedding.parameters():
            p.normal_(0, 0.5)
    wmap = fit_weight_map(net, sex.numpy(), list(np.linspace(50, 80, 40)), "number", "age (years)")
    assert wmap is not None and wmap.dims == 1 and wmap.explained[0] == pytest.approx(1.0)
    assert len(set(np.round(wmap.points[:, 0], 6))) == 2  # one network per sex
    baseline = build_model(paper_ad_config("imaging", input_shape=AD_TEST_SHAPE))
    assert fit_weight_map(baseline, np.zeros((4, baseline.config.input_dim)), ["CN"] * 4) is None


def test_shipped_hyperfusion_models_carry_their_map_and_baselines_none():
    ad = read_info(models_dir() / "ad_hyperfusion.safetensors").input_stats["weight_map"]
    wmap = WeightMap.from_dict(ad)
    n_train = read_info(models_dir() / "ad_hyperfusion.safetensors").metrics["n_train"]
    # every training subject up to MAX_POINTS, a seeded subsample above (the shipped model trained on 3,999)
    assert len(wmap.points) == min(n_train, MAX_POINTS) and set(wmap.targets) == {"CN", "MCI", "AD"}
    assert f"{n_train} training rows" in wmap.fitted_on
    assert wmap.layers == ["blocks.3.shortcut"] and 0.3 < wmap.explained.sum() <= 1.0
    assert "training rows" in wmap.fitted_on
    age = WeightMap.from_dict(read_info(models_dir() / "brain_age_hyperfusion.safetensors").input_stats["weight_map"])
    assert age.dims == 1 and age.target_kind == "number" and "years" in age.target_name
    for baseline in ("ad_imaging", "ad_concat", "risk_medfusion"):
        assert "weight_map" not in read_info(models_dir() / f"{baseline}.safetensors").input_stats


def test_a_map_of_the_wrong_width_is_refused(tmp_path):
    model = load_model(models_dir() / "ad_hyperfusion.safetensors", device="cpu")
    info = model.info
    info.input_stats = {**info.input_stats}
    info.input_stats["weight_map"] = {**info.input_stats["weight_map"], "mean": [0.0] * 3}
    path = save_model(tmp_path / "bad.safetensors", model.net, info)
    with pytest.raises(ModelFileError, match="weight_map.mean has 3 values; the network's embedding has 8"):
        read_info(path)


def test_add_weight_map_reproduces_the_shipped_map(tmp_path):
    # a model trained on the seed-0 cohort the script regenerates (the AD model trained on data/ad5000)
    model = load_model(models_dir() / "risk_hyperfusion.safetensors", device="cpu")
    shipped = WeightMap.from_dict(model.info.input_stats["weight_map"])
    info = model.info
    info.input_stats = {k: v for k, v in info.input_stats.items() if k != "weight_map"}
    bare = save_model(tmp_path / "ad.safetensors", model.net, info, dtype=torch.float16)
    command = [sys.executable, str(REPO / "scripts" / "add_weight_map.py"), str(REPO / "models/configs/risk_hyperfusion.toml"),
               "--model", str(bare), "--cohort", str(tmp_path / "regenerated" / "cohort.csv")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "weight map of 362 training subjects" in done.stdout
    again = WeightMap.from_dict(read_info(bare).input_stats["weight_map"])
    np.testing.assert_allclose(again.points, shipped.points, atol=1e-5)
    assert again.targets == shipped.targets
    reloaded = load_model(bare, device="cpu")  # the weights were not touched
    for key, value in model.net.state_dict().items():
        torch.testing.assert_close(reloaded.net.state_dict()[key], value)


def test_training_writes_the_map(ad_cohort, tmp_path):
    from napari_hyperfusion.train.loop import TrainConfig
    from napari_hyperfusion.train.run import train_and_save

    cfg = TrainConfig.from_dict({**tiny_train_settings("ad"), "cohort": str(ad_cohort), "out": str(tmp_path),
                                 "epochs": 1})  # fmt: skip
    outcome = train_and_save(cfg)
    wmap = WeightMap.from_dict(read_info(outcome.model_path).input_stats["weight_map"])
    assert len(wmap.points) == outcome.n_train and set(wmap.targets) <= {"CN", "MCI", "AD"}


def test_the_panel_moves_the_what_if_network_on_the_map(make_napari_viewer, qtbot, errors):
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_03")
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    whatif = panel.whatif
    view = whatif.weight_map_view
    assert view.weight_map is not None and len(view.weight_map.points) == MAX_POINTS
    at_start = view.points()
    np.testing.assert_allclose(at_start["patient"], at_start["whatif"])
    assert "is the patient's own" in view.reading.text()
    patient_age = whatif.patient_record["AGE"]
    assert whatif.slider_values["AGE"].text().endswith("(patient's)")
    whatif.set_whatif_value("APOE4", 2 if whatif.patient_record["APOE4"] != 2 else 0)
    whatif.set_whatif_value("AGE", 90)
    whatif.update_whatif()
    moved = view.points()
    session = whatif.whatif_session()
    expected = session.map_points([whatif.patient_record, whatif.whatif_record()])
    np.testing.assert_allclose(moved["patient"], np.r_[expected[0], 0.0][:2], atol=1e-9)
    np.testing.assert_allclose(moved["whatif"], np.r_[expected[1], 0.0][:2], atol=1e-9)
    assert not np.allclose(moved["whatif"], moved["patient"])
    assert "times the typical distance between two training subjects' networks" in view.reading.text()
    age_text = whatif.slider_values["AGE"].text()
    assert abs(float(age_text.split()[0]) - 90) < 0.5 and age_text.endswith(f"years (patient: {patient_age:.3g})")
    # a small move inside the view repaints only the markers (a full draw of the map's training
    # points cost tens of ms on every slider tick): no draw, the pixels at the star change
    qtbot.waitUntil(lambda: view._background is not None, timeout=5000)
    ax = view._patient.axes
    limits = (ax.get_xlim(), ax.get_ylim())
    draws = []
    view.canvas.mpl_connect("draw_event", lambda event: draws.append(event))
    before = np.asarray(view.canvas.buffer_rgba()).copy()
    whatif.set_whatif_value("AGE", 88)
    whatif.update_whatif()
    qtbot.wait(50)  # the markers are blitted after the what-if plot
    after = np.asarray(view.canvas.buffer_rgba())
    assert (ax.get_xlim(), ax.get_ylim()) == limits and not draws
    x, y = ax.transData.transform(view.points()["whatif"])
    row, col = int(round(after.shape[0] - y)), int(round(x))
    assert (after[row - 4 : row + 5, col - 4 : col + 5] != before[row - 4 : row + 5, col - 4 : col + 5]).any()
    # a model that generates nothing says so instead of drawing a map
    panel.open_model(models_dir() / "ad_imaging.safetensors")
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    whatif.update_whatif()
    assert view.weight_map is None
    assert not errors
