"""What-if from every sample subject, with each field in turn not known.

A field the record does not know is filled by the model, with its "was
missing" indicator set. The sliders must start from exactly that state (not
from the filled number typed in as if measured: APOE4 0.311 is no allele
count), every what-if tool must work from it, and moving the slider makes
the field known at the slider's value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import PLUGIN

from napari_hyperfusion._qt import notify
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import SUBJECTS
from napari_hyperfusion.synth.truth import brain_age_estimate

AD_SUBJECTS = [key for key in SUBJECTS if key.startswith("SYN_DEMO") and not key.endswith("native")]
AGE_SUBJECTS = ["sub-young", "sub-old"]


def _predict(panel, qtbot) -> None:
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)


def _whatif_everything(panel, field: str, qtbot) -> None:
    """Slider move, response curves, export and summary from the current state."""
    whatif = panel.whatif
    whatif.update_whatif()
    curve_fields = [field, "AGE"] if field != "AGE" else ["AGE"]
    for name in curve_fields:
        whatif.curve_field.setCurrentIndex(whatif.curve_field.findData(name))
        whatif.show_response_curve()
        assert whatif.last_curve is not None and whatif.last_curve.field == name
        assert np.isfinite(whatif.last_curve.outputs).all()


@pytest.fixture
def errors(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(notify, "error", said.append)
    return said


def test_whatif_from_every_ad_subject_with_each_field_unknown(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    for key in AD_SUBJECTS:
        viewer.open_sample(PLUGIN, key)
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "HyperFusion explorer")
    panel.open_model(models_dir() / "ad_hyperfusion.safetensors")
    whatif = panel.whatif
    schema = panel.model.info.schema
    imputable = [f.name for f in schema.fields if f.fill != "required"]
    assert {"APOE4", "PTEDUCAT", "ABETA"} <= set(imputable)
    checked = 0
    for key in AD_SUBJECTS:
        panel.patient.layer_combo.setCurrentText(f"{key} (SYNTHETIC)")
        original = panel.patient.record()
        for name in imputable:
            editor = panel.patient.editors[name]
            editor.set_value(None)  # the user ticks "not known"
            _predict(panel, qtbot)
            assert whatif.patient_record[name] is None and whatif.whatif_record()[name] is None
            assert "not known" in whatif.slider_values[name].text()
            # at the patient's values the what-if is the prediction itself (the indicator is set)
            session = whatif.whatif_session()
            np.testing.assert_allclose(session.predict(whatif.whatif_record()), panel.last_result.values, atol=1e-6)
            _whatif_everything(panel, name, qtbot)
            # moving the slider makes the field known at the slider's value, a value the field accepts
            slider = whatif.sliders[name]
            slider.setValue(slider.maximum() if slider.value() != slider.maximum() else 0)
            qtbot.wait(40)
            value = whatif.whatif_record()[name]
            assert value is not None and schema[name].parse(value) == value
            entry = whatif.update_whatif()
            assert entry is not None and entry[f"in_{name}"] == value
            expected = session.predict({**whatif.patient_record, name: value})
            np.testing.assert_allclose([entry[f"out_{c}"] for c in ("CN", "MCI", "AD")], expected, atol=1e-6)
            # the truth conditions on the same knowledge: not known stays not known for it too
            whatif.truth_box.setChecked(True)
            _whatif_everything(panel, name, qtbot)
            whatif.truth_box.setChecked(False)
            whatif.reset_whatif()  # back to not known
            assert whatif.whatif_record()[name] is None
            editor.set_value(original[name])
            checked += 1
        whatif.export_exploration(tmp_path / f"{key}.csv")
        assert whatif.save_summary(tmp_path / f"{key}.png").stat().st_size > 1000
    assert checked == len(AD_SUBJECTS) * len(imputable)
    assert errors == []


def test_unknown_field_set_by_value_and_the_narration(make_napari_viewer, qtbot, errors):
    """A lecture step (or a script) can set a field to not known and back;
    the sentence says 'not known' rather than a made-up number."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "SYN_DEMO_02")
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "HyperFusion explorer")
    panel.open_model(models_dir() / "ad_hyperfusion.safetensors")
    panel.patient.editors["APOE4"].set_value(None)
    _predict(panel, qtbot)
    whatif = panel.whatif
    whatif.set_whatif_value("APOE4", 2)
    whatif.update_whatif()
    assert whatif.whatif_record()["APOE4"] == 2
    assert "APOE e4 alleles 2 alleles instead of not known" in whatif.whatif_label.text()
    whatif.set_whatif_value("APOE4", None)
    whatif.update_whatif()
    assert whatif.whatif_record()["APOE4"] is None
    assert "nothing changed" in whatif.whatif_label.text()
    assert errors == []


@pytest.mark.parametrize("model", ["ad_concat", "risk_hyperfusion"])
def test_unknown_apoe4_on_other_models(make_napari_viewer, qtbot, errors, model):
    """Models that read no note: the old failure said 'Cannot use the note'."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "SYN_DEMO_04")
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "HyperFusion explorer")
    assert panel.open_model(models_dir() / f"{model}.safetensors")
    if "APOE4" not in panel.patient.editors:
        pytest.skip(f"{model} does not read APOE4")
    panel.patient.editors["APOE4"].set_value(None)
    _predict(panel, qtbot)
    _whatif_everything(panel, "APOE4", qtbot)
    assert panel.whatif.whatif_record()["APOE4"] is None
    assert errors == []


def test_whatif_from_the_brain_age_subjects(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    for key in AGE_SUBJECTS:
        viewer.open_sample(PLUGIN, key)
    _, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "HyperFusion explorer")
    panel.open_model(models_dir() / "brain_age_hyperfusion.safetensors")
    participants = pd.read_csv(sample_data_dir() / "brain_age" / "participants.tsv", sep="\t")
    for key in AGE_SUBJECTS:
        combo = panel.patient.layer_combo
        combo.setCurrentText(next(combo.itemText(i) for i in range(combo.count()) if key in combo.itemText(i)))
        _predict(panel, qtbot)
        whatif = panel.whatif
        whatif.set_whatif_value("PTGENDER", "Male" if whatif.patient_record["PTGENDER"] == "Female" else "Female")
        entry = whatif.update_whatif()
        assert entry is not None and np.isfinite(entry["out_brain age"])
        whatif.curve_field.setCurrentIndex(whatif.curve_field.findData("PTGENDER"))
        whatif.show_response_curve()
        assert whatif.last_curve.outputs.shape == (2, 1)
        # the generator's answer beside it: the posterior median age for each sex, given this brain's true volumes
        assert whatif.truth_box.isEnabled()
        whatif.truth_box.setChecked(True)
        row = participants[participants.participant_id == key].iloc[0].to_dict()
        by_sex = brain_age_estimate(pd.DataFrame([{**row, "PTGENDER": v} for v in whatif.last_curve.values]))
        np.testing.assert_allclose(whatif.last_truth[:, 0], by_sex)
        assert abs(by_sex[whatif.last_curve.values.index(whatif.patient_record["PTGENDER"])] - row["age"]) < 15
        assert abs(by_sex[0] - by_sex[1]) > 1  # the same brain reads as another age for the other sex
        whatif.truth_box.setChecked(False)
        assert whatif.last_truth is None
    assert errors == []
