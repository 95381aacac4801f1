"""The input gate and the out-of-distribution flags, on real NIfTI files and
the shipped models: what is refused, warned about and passed, in the core,
in batch prediction and on the command line."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_hyperfusion.data import perturb
from napari_hyperfusion.data.input_qc import InputRefused, check_input, measure_input
from napari_hyperfusion.data.preprocess import intensity_reference, load_scan
from napari_hyperfusion.infer.cohort import predict_cohort
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model, read_info
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import subject_record

SAMPLES = [f"SYN_DEMO_0{i}" for i in range(1, 6)]


@pytest.fixture(scope="module")
def ad_model():
    return load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")


@pytest.fixture(scope="module")
def scan():
    return load_scan(sample_data_dir() / "SYN_DEMO_03.nii.gz")


def _save(scan, path):
    nib.save(nib.Nifti1Image(scan.data, scan.affine), str(path))
    return path


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_passes_the_gate(name, ad_model):
    qc = check_input(load_scan(sample_data_dir() / f"{name}.nii.gz"), ad_model.info.input_stats["scan"])
    assert qc.verdict == "ok", qc.summary()
    assert 0.8 < qc.head_scale < 1.0  # the samples' heads are 0.84-0.95 x the template's


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda s: perturb.move(s, rotate_deg=(15, 0, 0)), "correlation with the MNI template"),
        (lambda s: perturb.move(s, shift_mm=(0, 15, 0)), "correlation with the MNI template"),
        (perturb.invert_contrast, "correlation with the MNI template"),
        (lambda s: perturb.pure_noise(s, np.random.default_rng(0)), "covers only"),
    ],
    ids=["rotated 15 deg", "shifted 15 mm", "inverted contrast", "noise"],
)
def test_misplaced_or_wrong_scans_are_refused_before_the_network(corrupt, reason, scan, ad_model, tmp_path):
    bad = load_scan(_save(corrupt(scan), tmp_path / "bad.nii.gz"))
    with pytest.raises(InputRefused, match=reason) as err:
        predict_subject(ad_model, bad, subject_record("SYN_DEMO_03"))
    message = str(err.value)
    assert "bad.nii.gz was refused" in message and "hyperfusion prepare" in message
    assert err.value.qc.verdict == "refuse"


def test_a_coarse_scan_is_predicted_with_a_warning(scan, ad_model):
    result = predict_subject(ad_model, perturb.resample_iso(scan, 4.0), subject_record("SYN_DEMO_03"))
    assert result.input_qc["verdict"] == "warn"
    assert any("coarser than the model was trained on" in w for w in result.warnings)


def test_acquisition_changes_pass(scan, ad_model):
    trained = ad_model.info.input_stats["scan"]
    rng = np.random.default_rng(0)
    for changed in (perturb.resample_iso(scan, 1.0), perturb.blur(scan, 2.0), perturb.bias_field(scan, 0.2, rng),
                    perturb.gamma(scan, 0.8), perturb.rician_noise(scan, 0.03, rng)):  # fmt: skip
        qc = check_input(changed, trained)
        assert qc.verdict == "ok", qc.summary()


def test_the_gate_measures_alignment_not_intensity_scale(scan):
    a, b = measure_input(scan), measure_input(perturb.gamma(scan, 1.0).__class__(scan.data * 37.0, scan.affine))
    assert b.ncc == pytest.approx(a.ncc, abs=1e-6) and b.coverage == pytest.approx(a.coverage)


def test_intensity_scale_does_not_depend_on_voxel_size(scan):
    """The reason the brain-age model moved by 8-20 years between 1 mm and
    1.8 mm copies of one brain: the old z-score's SD changed by a third."""
    centre, spread = intensity_reference(scan)
    for mm in (1.0, 2.0, 3.0):
        c, s = intensity_reference(perturb.resample_iso(scan, mm))
        assert c == pytest.approx(centre, rel=0.03) and s == pytest.approx(spread, rel=0.08)


def test_shipped_models_store_training_statistics():
    for name in ("ad_hyperfusion", "ad_concat", "ad_imaging", "brain_age_hyperfusion", "risk_medfusion",
                 "risk_hyperfusion"):  # fmt: skip
        stats = read_info(models_dir() / f"{name}.safetensors").input_stats
        assert "training rows" in stats["fitted_on"] and stats["ehr"], name
        if name != "risk_hyperfusion":  # EHR only
            assert stats["image"]["n"] > 100 and len(stats["image"]["distance_quantiles"]) == 22, name
            assert 1.5 < stats["scan"]["voxel_mm_max"] < 2.5, name


def test_out_of_range_ehr_is_flagged(scan, ad_model):
    record = {**subject_record("SYN_DEMO_03"), "AGE": 104}
    result = predict_subject(ad_model, scan, record)
    high = ad_model.info.input_stats["ehr"]["AGE"]["max"]
    assert "AGE 104 is above the training range" in " ".join(result.typicality["flags"])
    assert result.typicality["out_of_range"] == ["AGE"] and high < 104
    typical = predict_subject(ad_model, scan, subject_record("SYN_DEMO_03"))
    assert not typical.typicality["flags"] and 0 <= typical.typicality["image_percentile"] <= 100


def test_an_image_unlike_the_training_scans_is_flagged(scan, ad_model):
    strange = perturb.gamma(scan, 3.0)  # aligned (passes the gate) but a contrast no training scan had
    result = predict_subject(ad_model, strange, subject_record("SYN_DEMO_03"))
    assert result.typicality["image_percentile"] > 99
    assert any("image features are far from the training scans" in f for f in result.typicality["flags"])


def _cohort(tmp_path, scan):
    table = pd.read_csv(sample_data_dir() / "subjects.csv")
    table["IMAGE"] = [str(sample_data_dir() / p) for p in table["IMAGE"]]
    table.loc[1, "IMAGE"] = str(_save(perturb.move(load_scan(table.loc[1, "IMAGE"]), (20, 0, 0)), tmp_path / "m.nii"))
    table.loc[2, "AGE"] = 104
    path = tmp_path / "cohort.csv"
    table.to_csv(path, index=False)
    return path


def test_batch_prediction_leaves_refused_rows_empty_and_flags_the_rest(tmp_path, scan, ad_model):
    frame = predict_cohort(ad_model, _cohort(tmp_path, scan))
    assert list(frame["input_qc"]) == ["ok", "refuse", "ok", "ok", "ok"]
    assert frame.loc[1, ["prob_AD", "predicted"]].isna().all() and "correlation" in frame.loc[1, "qc_reasons"]
    assert frame.loc[[0, 2, 3, 4], "prob_AD"].notna().all()
    assert "AGE 104" in frame.loc[2, "ood_flags"] and frame.loc[0, "ood_flags"] == ""


def test_cli_predict_writes_the_rest_and_exits_2_naming_the_refused(tmp_path, scan):
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_hyperfusion.cli", "predict", str(models_dir() / "ad_hyperfusion.safetensors"),
         str(_cohort(tmp_path, scan)), "--out", str(out), "--quiet"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "1 of 5 scan(s) refused by the input check and not predicted (SYN_DEMO_02)" in proc.stderr
    assert "wrote 4 predictions" in proc.stdout and "out-of-distribution flags" in proc.stdout
    assert len(pd.read_csv(out)) == 5


def test_augmentation_keeps_the_scale_and_is_seeded(scan, ad_model):
    from napari_hyperfusion.data.preprocess import ModelGrid, prepare_views

    view = prepare_views(scan, ModelGrid.from_dict(ad_model.info.image))[0]
    a = perturb.augment_view(view, np.random.default_rng(3), 2.0)
    b = perturb.augment_view(view, np.random.default_rng(3), 2.0)
    np.testing.assert_array_equal(a, b)
    tissue = view > view.min() + 0.5
    assert np.median(a[tissue]) == pytest.approx(np.median(view[tissue]), abs=0.25)
    assert not np.allclose(a, view)
