"""The shipped MedFusionNet risk model in a real napari viewer: it opens in
the panel, reads the sample subject's note, predicts per-label
probabilities, explains image, EHR and note, and drives the what-if
sliders from cached image features."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_panel

from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import subject_record

RISK_MODEL = models_dir() / "risk_medfusion.safetensors"
pytestmark = pytest.mark.notes  # the note encoder: the optional extra [notes]


@pytest.fixture
def panel(make_napari_viewer, errors):
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    assert dock.open_model(RISK_MODEL)
    dock.errors = errors
    return dock


def _wait(panel, qtbot, timeout=120_000):
    qtbot.waitUntil(lambda: not panel.busy, timeout=timeout)


def test_the_shipped_risk_model_opens_and_predicts_every_label(panel, qtbot):
    record = subject_record("SYN_DEMO_01")
    assert not panel.patient.note_edit.isHidden() and panel.patient.note_text() == record["NOTE"]
    assert "Stage 1 kept" in panel.model_picker.info.text()
    panel.predict()
    _wait(panel, qtbot)
    result = panel.last_result
    assert panel.errors == [] and result.is_multilabel
    assert result.outputs == ["amyloid positive", "hippocampal atrophy", "cognitive impairment", "Alzheimer's dementia"]
    expected = predict_subject(load_model(RISK_MODEL, "cpu"), load_scan(sample_data_dir() / "SYN_DEMO_01.nii.gz"),
                               record, note=record["NOTE"])  # fmt: skip
    np.testing.assert_allclose(result.values, expected.values, atol=1e-5)
    assert result.note == record["NOTE"]
    assert "positive:" in panel.result_view.label.text()
    # the labels are not exclusive: probabilities need not sum to one
    assert all(0 <= v <= 1 for v in result.values)


def test_explain_attributes_image_ehr_and_note_sentences(panel, qtbot):
    panel.predict()
    _wait(panel, qtbot)
    panel.explainer.target_combo.setCurrentText("cognitive impairment")
    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData("saliency"))
    panel.explain()
    _wait(panel, qtbot)
    assert panel.errors == []
    image, tabular, sentences = panel.explainer.last_explanation
    assert image.target == tabular.target == sentences.target == "cognitive impairment"
    assert tabular.fields[-1] == "NOTE" and not panel.explainer.note_canvas.isHidden()
    assert len(sentences.sentences) == 4 and sentences.exact
    overlays = [layer for layer in panel.viewer.layers if "hyperfusion_overlay" in layer.metadata]
    assert len(overlays) == 2  # one map per hippocampus view


def test_whatif_with_the_note_held_fixed(panel, qtbot):
    panel.predict()
    _wait(panel, qtbot)
    panel.whatif.reset_whatif()
    session = panel.whatif.whatif_session()
    assert session.note == panel.patient.note_text() and session.generated(panel.whatif.patient_record) == {}
    panel.whatif.set_whatif_value("APOE4", 0.0)
    entry = panel.whatif.update_whatif()
    expected = session.predict(panel.whatif.whatif_record())
    np.testing.assert_allclose([entry[f"out_{n}"] for n in panel.model.info.outputs], expected, atol=1e-6)
    # changing the note changes the what-if prediction, from the same cached scan
    panel.patient.note_edit.setPlainText("Denies memory problems. Independent in daily activities.")
    after = panel.whatif.update_whatif()
    assert panel.whatif.whatif_session() is session
    assert not np.allclose([after[f"out_{n}"] for n in panel.model.info.outputs], expected)


def test_an_unusable_note_is_reported_and_kept(panel, qtbot):
    long_note = "Reports forgetting recent conversations. " * 80
    panel.patient.note_edit.setPlainText(long_note)
    panel.predict()
    _wait(panel, qtbot)
    assert any("shorten it" in e for e in panel.errors)
    assert panel.patient.note_edit.toPlainText() == long_note  # nothing the user typed is lost
    assert panel.predict_button.isEnabled()
    # the same note met by a what-if slider (after a good prediction) is refused, not a traceback
    panel.patient.note_edit.setPlainText("Denies memory problems.")
    panel.predict()
    _wait(panel, qtbot)
    panel.whatif.reset_whatif()
    panel.patient.note_edit.setPlainText(long_note)
    panel.errors.clear()
    assert panel.whatif.update_whatif() is None
    assert any("Cannot use the note" in e for e in panel.errors)
    assert panel.patient.note_edit.toPlainText() == long_note


def test_choosing_a_note_model_loads_the_encoder_in_the_background(make_napari_viewer, qtbot, monkeypatch):
    """The first MedFusionNet Predict waited seconds for the note encoder;
    choosing the model now starts loading it off the UI thread."""
    from napari_hyperfusion.data import notes

    monkeypatch.setattr(notes, "_model", None)  # as in a fresh process
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    assert not notes.encoder_loaded()
    assert dock.open_model(RISK_MODEL)  # returns at once; the encoder loads in a thread
    qtbot.waitUntil(notes.encoder_loaded, timeout=120_000)
    dock.predict()
    qtbot.waitUntil(lambda: not dock.busy and dock.last_result is not None, timeout=120_000)
    assert "loading the note encoder" not in dock.status.text()
