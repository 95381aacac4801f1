"""Preparing a scan (issue 16): a native-space T1 registered to the MNI
template with SimpleITK, written with its transform and QC, and predicted
like the scan it came from."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_hyperfusion.data.input_qc import InputRefused
from napari_hyperfusion.data.preprocess import load_scan, scan_from_array
from napari_hyperfusion.data.registration import (
    PREP_INSTALL,
    PrepCancelled,
    PrepUnavailable,
    prepare_scan,
    qc_verdict,
    to_native,
)
from napari_hyperfusion.data.scan_file import is_scaled
from napari_hyperfusion.data.template import load_template
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.resources import models_dir, sample_data_dir

sitk = pytest.importorskip("SimpleITK", reason=f"the [prep] extra: {PREP_INSTALL}")
NATIVE = sample_data_dir() / "native" / "SYN_DEMO_01_native.nii.gz"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_hyperfusion.cli", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    proc = _cli("prepare", str(NATIVE), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "OK (correlation with the template" in proc.stdout
    return out


def test_native_scan_is_shipped_in_another_space():
    img = nib.load(str(NATIVE))
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert img.shape == (180, 200, 170)
    assert img.get_data_dtype() == np.int16 and img.dataobj.slope == pytest.approx(0.1)
    assert is_scaled(img)


def test_prepared_scan_predicts_like_the_scan_it_came_from(prepared_dir):
    """Unprepared, the native scan is refused by the input gate (it would
    move the brain-age model by about 15 y); prepared, it passes the gate
    and both shipped models give the original scan's answer."""
    original = load_scan(sample_data_dir() / "SYN_DEMO_01.nii.gz")
    prepared = load_scan(prepared_dir / "SYN_DEMO_01_native_mni.nii.gz")
    native = load_scan(NATIVE)
    record = pd.read_csv(sample_data_dir() / "subjects.csv").iloc[0].to_dict()
    ad = load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")
    age = load_model(models_dir() / "brain_age_hyperfusion.safetensors", "cpu")
    p_orig, p_prep = (predict_subject(ad, s, record).values[2] for s in (original, prepared))
    a_orig, a_prep = (predict_subject(age, s, record).values[0] for s in (original, prepared))
    assert abs(p_prep - p_orig) < 0.1
    assert abs(a_prep - a_orig) < 3.0
    assert predict_subject(age, prepared, record).input_qc["verdict"] in ("ok", "warn")
    for model in (ad, age):
        with pytest.raises(InputRefused, match="SYN_DEMO_01_native.nii.gz was refused .* Prepare it first"):
            predict_subject(model, native, record)


def test_outputs_name_their_source_and_qc(prepared_dir):
    info = json.loads((prepared_dir / "SYN_DEMO_01_native_prep.json").read_text())
    assert info["source"].endswith("SYN_DEMO_01_native.nii.gz")
    assert info["native_shape"] == [180, 200, 170]
    assert info["qc"]["ncc"] > 0.85 and info["qc"]["coverage"] > 0.99
    transform = sitk.ReadTransform(str(prepared_dir / "SYN_DEMO_01_native_to_mni.tfm"))
    # the template's centre maps into the native scan's field of view
    centre = transform.TransformPoint((0.0, -18.0, 8.0))
    img = sitk.ReadImage(str(NATIVE))
    index = img.TransformPhysicalPointToContinuousIndex(centre)
    assert all(0 <= i < n for i, n in zip(index, img.GetSize()))
    header = nib.load(str(prepared_dir / "SYN_DEMO_01_native_mni.nii.gz")).header
    assert int(header["sform_code"]) == 4  # MNI152


def test_template_mask_comes_back_to_native_space_with_the_head_size():
    scan = load_scan(NATIVE)
    calls = []
    prepared = prepare_scan(scan, progress=lambda f, stage: calls.append((f, stage)))
    assert qc_verdict(prepared.qc)[0] == "ok"
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert {s for _, s in calls} == {"rigid", "affine", "resample"}
    tpl = load_template()
    mask = to_native(tpl.regions["intracranial"], prepared)
    assert mask.shape == scan.data.shape
    native_ml = float(mask.sum()) * float(np.prod(scan.voxel_size)) / 1000
    expected_ml = tpl.region_volume_ml("intracranial") * prepared.head_scale**3
    assert native_ml == pytest.approx(expected_ml, rel=0.03)
    # and the mask sits on the brain: nearly all native tissue lies inside it
    tissue = scan.data > 0.1 * np.median(scan.data[scan.data > 0])
    assert (mask[tissue] > 0.5).mean() > 0.9  # measured 0.94: the template mask trims the edge


def test_noise_is_refused_by_the_cli_with_a_reason(tmp_path):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.nii.gz"
    nib.save(
        nib.Nifti1Image(rng.uniform(0, 200, (90, 100, 90)).astype(np.float32), np.diag([2, 2, 2, 1.0])), str(noise)
    )
    proc = _cli("prepare", str(noise), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 2
    assert "REFUSE" in proc.stdout and "not a T1 brain" in proc.stdout
    assert "failed the registration check" in proc.stderr and "Traceback" not in proc.stderr


def test_contrast_inverted_brain_is_refused():
    scan = load_scan(sample_data_dir() / "SYN_DEMO_02.nii.gz")
    inverted = np.where(scan.data > 0, 255 - scan.data, 0).astype(np.float32)
    prepared = prepare_scan(scan_from_array(inverted, scan.affine))
    assert prepared.qc.ncc < 0
    assert qc_verdict(prepared.qc)[0] == "refuse"


def test_cancel_stops_the_registration():
    with pytest.raises(PrepCancelled, match="not prepared"):
        prepare_scan(load_scan(NATIVE), should_stop=lambda: True)


def test_without_the_extra_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import fails, as in a base install
    with pytest.raises(PrepUnavailable, match=r"napari-hyperfusion\[prep\]"):
        prepare_scan(load_scan(NATIVE))


def test_cli_predict_prepares_a_cohort_and_refuses_it_unprepared(tmp_path):
    table = sample_data_dir() / "native" / "subjects.csv"
    model = str(models_dir() / "ad_hyperfusion.safetensors")
    cli = [sys.executable, "-m", "napari_hyperfusion.cli", "predict", model, str(table), "--quiet"]
    refused = subprocess.run([*cli, "--out", str(tmp_path / "a.csv")], capture_output=True, text=True)
    assert refused.returncode == 2 and "rerun with --prepare" in refused.stderr
    assert pd.read_csv(tmp_path / "a.csv")["prob_AD"].isna().all()
    proc = subprocess.run([*cli, "--prepare", "--out", str(tmp_path / "b.csv")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    row = pd.read_csv(tmp_path / "b.csv").iloc[0]
    assert row["prepared"] and row["input_qc"] == "ok" and row["predicted"] == "AD" and row["qc_ncc"] > 0.8
