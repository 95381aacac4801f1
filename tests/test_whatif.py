"""What-if exploration: cached decode equals a full forward, curves equal
single predictions, the generated weights move with the record, the
panel's sliders stay live under a flood of events."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import PLUGIN, dock_panel

from napari_hyperfusion._qt import notify
from napari_hyperfusion.analysis.whatif import WhatIfSession
from napari_hyperfusion.data.preprocess import ModelGrid, load_scan
from napari_hyperfusion.infer.subject import predict_subject, predict_subject_and_features
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import subject_record


@pytest.fixture(scope="module")
def session():
    model = load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")
    scan = load_scan(sample_data_dir() / "SYN_DEMO_03.nii.gz")
    return WhatIfSession(model, scan, "demo03"), model, scan, subject_record("SYN_DEMO_03")


def test_cached_predictions_equal_full_forward_passes(session):
    whatif, model, scan, record = session
    rng = np.random.default_rng(0)
    for _ in range(5):
        changed = {**record, "AGE": float(rng.uniform(55, 95)), "APOE4": float(rng.integers(0, 3)),
                   "PTGENDER": str(rng.choice(["Female", "Male"])), "ABETA": None}  # fmt: skip
        full = predict_subject(model, scan, changed).values
        np.testing.assert_allclose(whatif.predict(changed), full, atol=1e-6)


def test_a_session_from_the_predictions_own_pass_equals_one_that_encodes_the_scan(session):
    """Predict hands its image features to the what-if session (no second encoder pass): same answers."""
    whatif, model, scan, record = session
    result, features = predict_subject_and_features(model, scan, record)
    assert len(features) == whatif.n_views and all(features)
    reused = WhatIfSession(model, scan, "demo03", features=features)
    for key in whatif.features[0]:
        torch.testing.assert_close(reused.features[0][key], whatif.features[0][key])
    changed = {**record, "AGE": 90.0, "APOE4": 2.0}
    np.testing.assert_allclose(reused.predict(changed), whatif.predict(changed), atol=1e-6)
    np.testing.assert_allclose(reused.predict(record), result.values, atol=1e-6)


def test_cache_is_tied_to_model_scan_and_device(session):
    whatif, model, _, _ = session
    assert whatif.matches(model, "demo03")
    assert not whatif.matches(model, "another scan")
    assert not whatif.matches(dataclasses.replace(model, sha256="0" * 64), "demo03")
    assert not whatif.matches(dataclasses.replace(model, device=torch.device("cuda")), "demo03")


def test_response_curve_equals_single_predictions(session):
    whatif, _, _, record = session
    curve = whatif.response_curve(record, "AGE", n=64)
    assert curve.outputs.shape == (64, 3) and curve.patient_value == record["AGE"]
    for i in (0, 17, 63):
        np.testing.assert_allclose(curve.outputs[i], whatif.predict({**record, "AGE": curve.values[i]}), atol=1e-6)
    sex = whatif.response_curve(record, "PTGENDER")
    assert sex.values == ["Female", "Male"]
    values_a, values_b, surface = whatif.response_surface(record, "AGE", "APOE4", n=8)
    assert surface.shape == (len(values_a), len(values_b), 3)


def test_generated_weights_move_with_distance_from_the_patient(session):
    whatif, _, _, record = session
    age = float(record["AGE"])
    assert whatif.weight_change(record, record) == {"blocks.3.shortcut": 0.0}
    changes = [whatif.weight_change(record, {**record, "AGE": age + d})["blocks.3.shortcut"] for d in (2, 5, 10, 20)]
    assert all(a < b for a, b in zip(changes, changes[1:])), changes
    weights = whatif.generated(record)["blocks.3.shortcut"]["weight"]
    assert weights.shape[:2] == (128, 64)  # 16 x 8 base filters: 64 -> 128 channels, 1x1x1


def test_film_exposes_its_generated_scale_and_shift(tmp_path):
    from napari_hyperfusion.data.schema import adni_schema
    from napari_hyperfusion.io.model_file import ModelInfo, save_model
    from napari_hyperfusion.nn.build import build_model
    from napari_hyperfusion.nn.config import paper_ad_config

    config = paper_ad_config("film", input_shape=(24, 32, 24), base_filters=4)
    net = build_model(config)
    torch.nn.init.normal_(net.blocks[3].modulation.mlp[2].weight, std=0.1)
    grid = ModelGrid(crop="hippocampus", shape=(24, 32, 24), spacing_mm=2.0)
    info = ModelInfo("film test", "ad_classification", config, adni_schema(), ["CN", "MCI", "AD"],
                     image=grid.to_dict())  # fmt: skip
    path = save_model(tmp_path / "film.safetensors", net, info)
    model = load_model(path, "cpu")
    whatif = WhatIfSession(model, load_scan(sample_data_dir() / "SYN_DEMO_03.nii.gz"), "x")
    record = {"AGE": 70, "PTGENDER": "Female"}
    params = whatif.generated(record)["blocks.3.modulation"]
    assert params["scale"].shape == (32,) and params["shift"].shape == (32,)  # block 4's input channels
    assert whatif.weight_change(record, {**record, "AGE": 90})["blocks.3.modulation"] > 0


@pytest.fixture
def panel(make_napari_viewer, monkeypatch, qtbot):
    monkeypatch.setattr(notify, "error", lambda m: pytest.fail(m))
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_03")
    dock.predict()  # caches the image features in its worker and starts the sliders at the patient's values
    qtbot.waitUntil(lambda: not dock.busy and dock.last_result is not None, timeout=60_000)
    assert dock.whatif.patient_record
    return dock


def test_sliders_before_predict_ask_for_it_and_encode_nothing(make_napari_viewer, qtbot):
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_03")
    dock.whatif.sliders["AGE"].setValue(10)
    qtbot.wait(50)
    assert dock.whatif._session is None and "Click Predict first" in dock.whatif.whatif_label.text()


def test_slider_flood_stays_live_and_ends_on_the_last_value(panel, qtbot):
    slider = panel.whatif.sliders["AGE"]
    panel.whatif.explored.clear()
    rng = np.random.default_rng(1)
    for value in rng.integers(0, slider.maximum(), 300):
        slider.setValue(int(value))
    slider.setValue(slider.maximum() // 3)
    qtbot.wait(100)
    assert 1 <= len(panel.whatif.explored) < 30  # debounced: a burst is one update, not 300
    last = panel.whatif.explored[-1]
    expected = panel.whatif.whatif_session().predict(panel.whatif.whatif_record())
    np.testing.assert_allclose([last["out_CN"], last["out_MCI"], last["out_AD"]], expected, atol=1e-6)
    assert last["in_AGE"] == pytest.approx(slider.property("values")[slider.maximum() // 3])
    assert panel.predict_button.isEnabled()  # still responsive


def test_cache_is_rebuilt_when_the_scan_or_model_changes(panel):
    first = panel.whatif.whatif_session()
    assert panel.whatif.whatif_session() is first
    panel.viewer.open_sample(PLUGIN, "SYN_DEMO_02")
    panel.patient.layer_combo.setCurrentText("SYN_DEMO_02 (SYNTHETIC)")
    second = panel.whatif.whatif_session()
    assert second is not first
    panel.open_model(next(p for p in models_dir().glob("ad_imaging*")))
    assert panel.whatif.whatif_session() is not second


def test_reset_export_summary_and_saliency_shift(panel, tmp_path):
    patient_age = panel.whatif.patient_record["AGE"]
    panel.whatif.set_whatif_value("AGE", 90)
    panel.whatif.set_whatif_value("APOE4", 2)
    panel.whatif.update_whatif()
    assert "What if" in panel.whatif.whatif_label.text() and "blocks.3.shortcut" in panel.whatif.whatif_label.text()
    panel.whatif.curve_field.setCurrentIndex(panel.whatif.curve_field.findData("AGE"))
    panel.whatif.show_response_curve()
    assert panel.whatif.last_curve.field == "AGE"
    panel.whatif.saliency_shift()
    shifts = [layer for layer in panel.viewer.layers if "saliency shift" in layer.name]
    assert len(shifts) == 2 and shifts[0].data.min() < 0 < shifts[0].data.max()
    csv = panel.whatif.export_exploration(tmp_path / "whatif.csv")
    import pandas as pd

    table = pd.read_csv(csv)
    assert {"in_AGE", "out_AD", "kind"} <= set(table.columns) and "curve AGE" in set(table.kind)
    for suffix in (".png", ".pdf"):
        assert panel.whatif.save_summary(tmp_path / f"summary{suffix}").stat().st_size > 1000
    panel.whatif.reset_whatif()
    assert panel.whatif.whatif_record()["AGE"] == patient_age
    assert panel.whatif.whatif_session().weight_change(panel.whatif.patient_record, panel.whatif.whatif_record()) == {
        "blocks.3.shortcut": 0.0
    }


def test_ground_truth_curve_for_a_synthetic_subject(panel, tmp_path):
    """The dashed ground truth is the generator's exact posterior for this
    subject's true volumes of the regions the model's views hold (the
    hippocampus crops: not the ventricles); it is offered for synthetic
    subjects only."""
    from napari_hyperfusion.synth.truth import ad_truth_curve

    whatif = panel.whatif
    assert whatif.truth_box.isEnabled()
    whatif.curve_field.setCurrentIndex(whatif.curve_field.findData("APOE4"))
    whatif.show_response_curve()
    assert whatif.last_truth is None  # off until asked for
    whatif.truth_box.setChecked(True)  # redraws the curve with the truth beside it
    truth = whatif.last_truth
    assert truth.shape == (len(whatif.last_curve.values), 3)
    layer = panel.viewer.layers["SYN_DEMO_03 (SYNTHETIC)"]
    record = {**layer.metadata["ehr_record"], **whatif.whatif_record()}
    seen = ("HIPPOCAMPUS_PERMILLE", "ENTORHINAL_MM3")
    np.testing.assert_allclose(truth, ad_truth_curve(record, "APOE4", whatif.last_curve.values, seen))
    all_volumes = ad_truth_curve(record, "APOE4", whatif.last_curve.values)
    assert np.abs(truth - all_volumes).max() > 1e-4  # the ventricles, which the crops do not show, are left out
    assert truth[-1, 0] < truth[0, 0]  # two APOE4 alleles lower the true P(CN) for the same brain
    labels = [line.get_label() for line in whatif.whatif_figure.axes[0].get_lines()]
    assert "AD, ground truth" in labels
    table = __import__("pandas").read_csv(whatif.export_exploration(tmp_path / "t.csv"))
    assert "truth_AD" in table.columns
    # a scan without ground truth (no synthetic flag) switches it off
    layer.metadata = {k: v for k, v in layer.metadata.items() if k != "synthetic"}
    panel.viewer.add_image(layer.data * 1.0, name="edited copy", affine=layer.affine)
    panel.patient.layer_combo.setCurrentText("edited copy")
    assert not whatif.truth_box.isEnabled() and not whatif.truth_box.isChecked()


def test_a_tau_beyond_what_its_ptau_allows_is_shaded_and_told(panel):
    """SYN_DEMO_03's p-tau is 19 pg/ml: the training data put its tau near
    216 +- 70, so the top of the tau slider's range is a record they hardly
    hold. The curve shades it, and a what-if there says so."""
    whatif = panel.whatif
    whatif.curve_field.setCurrentIndex(whatif.curve_field.findData("TAU"))
    whatif.show_response_curve()
    ax = whatif.whatif_figure.axes[0]
    bands = [p for p in ax.patches if p.get_label().startswith("outside the training data")]
    assert len(bands) == 1  # one band, at the top of the range
    left = bands[0].get_x() if hasattr(bands[0], "get_x") else bands[0].get_xy()[:, 0].min()
    assert 210 < left < max(whatif.last_curve.values)
    assert "outside the training data" in [t.get_text() for t in ax.get_legend().get_texts()]
    # with a high p-tau, swept again, the band moves to the low taus; a later slider move does not redraw it
    whatif.set_whatif_value("PTAU", 60)
    whatif.show_response_curve()
    low = [p for p in whatif.whatif_figure.axes[0].patches if p.get_label().startswith("outside")]
    assert len(low) == 1 and low[0].get_x() < min(whatif.last_curve.values) + 1
    assert low[0].get_x() + low[0].get_width() < 400
    whatif.set_whatif_value("PTAU", 19)
    whatif.set_whatif_value("TAU", 600)
    whatif.update_whatif()
    text = whatif.whatif_label.text()
    assert "Outside the training data as a whole: with CSF p-tau181 at 19 pg/ml" in text
    whatif.set_whatif_value("TAU", 230)
    whatif.update_whatif()
    assert "as a whole" not in whatif.whatif_label.text()
