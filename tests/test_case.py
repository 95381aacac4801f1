"""The case on screen: a result belongs to the scan, record, note, model and
device it was computed for, in the Case model and in a real viewer.

The GUI tests replay the sequences that showed another patient's result
(issue 14) and a seeded random walk over open / delete / rename / switch
model / switch scan / predict / explain / slider / cancel that checks,
after every step, that nothing shown belongs to another case.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import PLUGIN, dock_panel
from napari.layers import Image

from napari_hyperfusion._qt.explain_section import STALE_PREFIX
from napari_hyperfusion._qt.layers import SOURCE_KEY
from napari_hyperfusion._qt.linked_views import crosshair_vectors, is_crosshair
from napari_hyperfusion.analysis.case import Case, record_fingerprint, scan_fingerprint
from napari_hyperfusion.analysis.overlays import OVERLAY_KEY
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import subject_record

AD_MODEL = models_dir() / "ad_hyperfusion.safetensors"
AGE_MODEL = models_dir() / "brain_age_hyperfusion.safetensors"


# -- the plain model --------------------------------------------------------------
def test_a_result_is_kept_only_for_the_case_it_was_computed_for():
    case = Case()
    changes = []
    case.changed.connect(changes.append)
    case.set_record({"AGE": 70.0})
    computed_for = case.identity
    case.set_record({"AGE": 71.0})  # the user typed while the worker ran
    assert not case.store("prediction", computed_for, "old")  # dropped, never shown
    assert case.result("prediction") is None and case.latest("prediction") is None
    assert case.store("prediction", case.identity, "new") and case.result("prediction") == "new"
    case.set_note("Reports memory problems.")
    assert case.result("prediction") is None  # the note is part of the case
    identity, stale = case.latest("prediction")
    assert stale == "new" and case.identity.differences(identity) == ["record"]
    case.set_note("")  # back to the case it was computed for: current again
    assert case.result("prediction") == "new"
    assert len(changes) == 4


def test_results_are_bounded_per_case():
    case = Case()
    for age in range(20):
        case.set_record({"AGE": float(age)})
        case.store("prediction", case.identity, np.zeros(1000))
    assert len(case._results) <= 6  # memory does not grow with every click


def test_fingerprints_see_content_and_placement():
    data = np.random.default_rng(0).normal(size=(40, 48, 40)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fp = scan_fingerprint(data, affine)
    assert fp == scan_fingerprint(data.copy(), affine)
    shifted = affine.copy()
    shifted[0, 3] = 1.0
    assert fp != scan_fingerprint(data, shifted)
    changed = data.copy()
    changed[::7, ::7, ::7] += 1
    assert fp != scan_fingerprint(changed, affine)
    assert record_fingerprint({"AGE": 70.0}) != record_fingerprint({"AGE": 70.0}, note="x")


# -- in a real viewer -----------------------------------------------------------------
@pytest.fixture
def panel(make_napari_viewer, errors):
    dock = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    assert dock.open_model(AD_MODEL)
    dock.errors = errors
    return dock


def _predict(panel, qtbot):
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)


def _scan_names(panel):
    combo = panel.patient.layer_combo
    return [combo.itemText(i) for i in range(combo.count())]


def test_opening_another_sample_switches_scan_and_record(panel, qtbot):
    _predict(panel, qtbot)
    assert panel.last_result.record["AGE"] == 62
    panel.viewer.open_sample(PLUGIN, "SYN_DEMO_04")
    assert panel.patient.current_layer().name.startswith("SYN_DEMO_04")
    assert panel.patient.record()["AGE"] == float(subject_record("SYN_DEMO_04")["AGE"])
    assert panel.last_result is None and panel.result_view.stale  # 01's result is not 04's
    assert "STALE: the scan and record changed" in panel.result_view.label.text()  # both, not the first seen
    _predict(panel, qtbot)
    assert panel.last_result.record["AGE"] == float(subject_record("SYN_DEMO_04")["AGE"])
    assert "SYN_DEMO_04" in panel.result_view.label.text()


def test_switching_model_marks_results_stale_and_the_other_task_predicts(panel, qtbot):
    _predict(panel, qtbot)
    panel.whatif.curve_field.setCurrentIndex(0)
    panel.whatif.show_response_curve()
    assert panel.open_model(AGE_MODEL)
    assert panel.last_result is None and panel.result_view.stale
    assert panel.whatif.last_curve is None and panel.whatif.patient_record == {}
    panel.viewer.open_sample(PLUGIN, "sub-old")
    _predict(panel, qtbot)
    assert panel.last_result.is_classifier is False and panel.last_result.model_name == panel.model.info.name
    panel.whatif.set_whatif_value("PTGENDER", "F")
    assert panel.whatif.update_whatif() is not None
    assert panel.errors == []


def test_a_result_for_a_deleted_scan_is_dropped(panel, qtbot):
    viewer = panel.viewer
    viewer.open_sample(PLUGIN, "SYN_DEMO_02")  # the current scan now
    panel.predict()
    viewer.layers.remove(panel.patient.current_layer())  # while the worker runs
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.patient.current_layer().name.startswith("SYN_DEMO_01")
    assert panel.last_result is None  # 02's answer is not shown under 01
    latest = panel.case.latest("prediction")
    assert latest is None or "SYN_DEMO_02" not in panel.result_view.label.text().split("\n")[-3]


def test_overlays_are_not_scans_and_go_with_their_scan(panel, qtbot):
    _predict(panel, qtbot)
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    overlays = [layer for layer in panel.viewer.layers if OVERLAY_KEY in layer.metadata]
    assert overlays and _scan_names(panel) == ["SYN_DEMO_01 (SYNTHETIC)"]
    panel.viewer.layers.remove(panel.patient.current_layer())
    assert not [layer for layer in panel.viewer.layers if OVERLAY_KEY in layer.metadata]
    assert _scan_names(panel) == [] and not panel.predict_button.isEnabled()
    panel.viewer.open_sample(PLUGIN, "SYN_DEMO_03")  # the sequence that crashed napari
    qtbot.wait(200)
    assert _scan_names(panel) == ["SYN_DEMO_03 (SYNTHETIC)"] and panel.predict_button.isEnabled()


def test_the_picker_follows_renames_and_keeps_typed_values_per_scan(panel):
    layer = panel.patient.current_layer()
    layer.name = "patient A"
    assert _scan_names(panel) == ["patient A"] and panel.patient.current_layer() is layer
    panel.patient.editors["AGE"].set_value(81.0)
    panel.viewer.open_sample(PLUGIN, "SYN_DEMO_05")
    assert panel.patient.record()["AGE"] == float(subject_record("SYN_DEMO_05")["AGE"])
    panel.patient.layer_combo.setCurrentIndex(0)  # back to patient A
    assert panel.patient.record()["AGE"] == 81.0  # what was typed for A is A's


def test_cancel_ends_in_a_clear_state(panel, qtbot):
    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData("occlusion"))
    panel.explain()
    qtbot.wait(100)
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert panel.status.text().startswith("Cancelled")
    assert panel.predict_button.isEnabled()


def test_exported_rows_name_the_model_they_were_computed_with(panel, qtbot, tmp_path):
    import pandas as pd

    _predict(panel, qtbot)
    panel.whatif.set_whatif_value("AGE", 80)
    panel.whatif.update_whatif()
    ad_name = panel.model.info.name
    assert panel.open_model(models_dir() / "ad_concat.safetensors")
    _predict(panel, qtbot)
    panel.whatif.set_whatif_value("AGE", 70)
    panel.whatif.update_whatif()
    frame = pd.read_csv(panel.whatif.export_exploration(tmp_path / "x.csv"))
    assert set(frame["model"]) <= {ad_name, panel.model.info.name}
    assert (frame["model"] == ad_name).sum() >= 1 and (frame["model"] == panel.model.info.name).sum() >= 1
    assert frame["scan"].str.startswith("SYN_DEMO_01").all() and frame["scan_fingerprint"].notna().all()


def _check_invariants(panel):
    case = panel.case
    result = panel.last_result
    if result is not None:
        assert result.model_name == case.model.info.name and result.model_sha256 == case.model.sha256
        assert result.extra["case"] == case.identity.describe()
    shown = panel.result_view.shown
    if shown is not None and not panel.result_view.stale:
        assert shown[0] == case.identity
    names = _scan_names(panel)
    scans = [
        layer.name for layer in panel.viewer.layers if OVERLAY_KEY not in layer.metadata and not is_crosshair(layer)
    ]  # fmt: skip
    assert names == scans  # every scan, and nothing but scans
    layer = panel.patient.current_layer()
    assert (layer.name if layer is not None else "") == case.scan_name
    for overlay in (layer for layer in panel.viewer.layers if OVERLAY_KEY in layer.metadata):
        fingerprint = overlay.metadata[OVERLAY_KEY]["scan_fingerprint"]
        assert fingerprint in panel.patient._fingerprints.values()  # no overlay outlives its scan
        if not overlay.name.startswith(STALE_PREFIX):  # an overlay not marked stale is this case's
            assert overlay.metadata["case"] == case.identity.describe(), overlay.name
            assert layer is not None and overlay.metadata[SOURCE_KEY] == str(layer.unique_id), overlay.name
    ortho = panel.view_controls.ortho
    if ortho is not None and not ortho.busy:  # the side canvases show what the main viewer shows, where it is
        volumes = [layer for layer in panel.viewer.layers if isinstance(layer, Image) and layer.ndim == 3]
        extent = ortho._extent()
        for model in [panel.viewer, *(canvas.model for canvas in ortho.canvases)]:
            crosshairs = [layer for layer in model.layers if is_crosshair(layer)]
            if extent is None:
                assert not crosshairs
            else:  # one crosshair, through the shared point
                assert len(crosshairs) == 1
                expected = crosshair_vectors(panel.viewer.dims.point, extent)
                np.testing.assert_allclose(crosshairs[0].data, expected, atol=1e-6)
        for canvas in ortho.canvases:
            mirrored = [layer for layer in canvas.model.layers if not is_crosshair(layer)]
            assert [m.name for m in mirrored] == [v.name for v in volumes]
            assert all(np.shares_memory(m.data, v.data) for m, v in zip(mirrored, volumes))  # no copies
            if volumes:
                np.testing.assert_allclose(canvas.model.dims.point, panel.viewer.dims.point, atol=2.0)
    whatif = panel.whatif
    if whatif.patient_record:  # the sliders start from the form's values, never from an older record's
        filled, missing = case.model.info.schema.fill(case.record)
        assert whatif.patient_record == {k: (None if k in missing else v) for k, v in filled.items()}
        assert whatif.stale_label.isVisibleTo(panel) == (case.result("prediction") is None)


@pytest.mark.parametrize("seed", [0, 1, *(pytest.param(s, marks=pytest.mark.slow) for s in range(2, 10))])
def test_random_sequences_never_show_another_cases_result(panel, qtbot, seed):
    rng = random.Random(seed)
    viewer = panel.viewer
    samples = ["SYN_DEMO_01", "SYN_DEMO_02", "SYN_DEMO_03", "SYN_DEMO_04", "SYN_DEMO_05"]
    models = [AD_MODEL, models_dir() / "ad_concat.safetensors", AGE_MODEL]

    def scans():
        return [layer for layer in viewer.layers if OVERLAY_KEY not in layer.metadata]

    actions = {
        "open": lambda: viewer.open_sample(PLUGIN, rng.choice(samples)),
        "delete": lambda: scans() and viewer.layers.remove(rng.choice(scans())),
        "rename": lambda: scans() and setattr(rng.choice(scans()), "name", f"scan {rng.randrange(1000)}"),
        "model": lambda: panel.open_model(rng.choice(models)),
        "scan": lambda: (
            panel.patient.layer_combo.count()
            and panel.patient.layer_combo.setCurrentIndex(rng.randrange(panel.patient.layer_combo.count()))
        ),
        "predict": lambda: panel.predict_button.isEnabled() and panel.predict(),
        "explain": lambda: panel.explainer.explain_button.isEnabled() and panel.explain(),
        "slider": lambda: (
            panel.whatif.sliders and panel.whatif.set_whatif_value("AGE", rng.uniform(55, 90))
            if "AGE" in panel.whatif.sliders
            else None
        ),
        "type": lambda: "AGE" in panel.patient.editors and panel.patient.editors["AGE"].set_value(rng.uniform(55, 90)),
        "record": lambda: panel.patient.load_record(sample_data_dir() / "subjects.csv", rng.choice(samples)),
        "cancel": panel.cancel,
        "wait": lambda: qtbot.waitUntil(lambda: not panel.busy, timeout=120_000),
        "planes": lambda: panel.view_controls.three_planes.setChecked(not panel.view_controls.three_planes.isChecked()),
        "point": lambda: setattr(viewer.dims, "point", tuple(rng.uniform(-30, 30) for _ in viewer.dims.point)),
    }
    names = list(actions)
    for _ in range(40):
        name = rng.choice(names)
        if panel.busy and name in ("predict", "explain"):
            name = "wait"
        actions[name]()
        qtbot.wait(rng.choice([0, 5, 50]))
        _check_invariants(panel)
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    ortho = panel.view_controls.ortho
    qtbot.waitUntil(lambda: ortho is None or not ortho.busy, timeout=5000)  # the side canvases checked too
    _check_invariants(panel)
    unexpected = [e for e in panel.errors if "a bug in napari-hyperfusion" in e]
    assert not unexpected, unexpected


def test_a_value_far_outside_the_training_data_is_flagged_before_predict(panel):
    editor = panel.patient.editors["AGE"]
    editor.input.setValue(editor.field.mean + 4 * editor.field.std)
    assert editor.state == "unusual" and "training mean" in editor.state_label.text()
    editor.input.setValue(editor.field.mean)
    assert editor.state == "typed"


def test_an_explanation_is_shown_only_for_its_case(panel, qtbot):
    _predict(panel, qtbot)
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy and panel.explainer.last_explanation is not None, timeout=120_000)
    overlays = [layer for layer in panel.viewer.layers if OVERLAY_KEY in layer.metadata]
    age = panel.patient.editors["AGE"]
    original = age.value()
    age.set_value(original + 5)  # another record: the explanation is not this case's
    assert panel.explainer.last_explanation is None
    assert "click Explain" in panel.explainer.explain_label.text()
    assert all(layer.name.startswith("[STALE] ") for layer in overlays)
    age.set_value(original)  # back to the case it was computed for
    assert panel.explainer.last_explanation is not None
    assert panel.explainer.explain_label.text().startswith("For scan")
    assert not any(layer.name.startswith("[STALE] ") for layer in overlays)


def test_the_whatif_view_is_cleared_when_the_model_changes(panel, qtbot):
    _predict(panel, qtbot)
    panel.whatif.set_whatif_value("AGE", 85)
    panel.whatif.update_whatif()
    assert "What if" in panel.whatif.whatif_label.text()
    assert panel.open_model(models_dir() / "ad_concat.safetensors")
    assert "The case changed" in panel.whatif.whatif_label.text() and panel.whatif.patient_record == {}


def test_new_voxels_in_the_same_layer_are_a_new_case(panel, qtbot):
    _predict(panel, qtbot)
    layer = panel.patient.current_layer()
    layer.data = np.ascontiguousarray(layer.data[::-1])  # e.g. a console edit or another plugin
    assert panel.last_result is None and panel.result_view.stale and "scan" in panel.result_view.label.text()


def test_an_overlay_stays_stale_when_its_scan_is_opened_again(panel, qtbot):
    """Issue 27's sequence: Predict and Explain SYN_DEMO_01, load SYN_DEMO_04's
    record, open SYN_DEMO_01 again: the same voxels and record, but another
    layer; the first layer's overlays stay STALE."""
    _predict(panel, qtbot)
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy and panel.explainer.last_explanation is not None, timeout=120_000)
    overlays = [layer for layer in panel.viewer.layers if OVERLAY_KEY in layer.metadata]
    assert len(overlays) == 2 and not any(o.name.startswith(STALE_PREFIX) for o in overlays)
    assert panel.patient.load_record(sample_data_dir() / "subjects.csv", "SYN_DEMO_04")
    assert all(o.name.startswith(STALE_PREFIX) for o in overlays)
    panel.viewer.open_sample(PLUGIN, "SYN_DEMO_01")
    assert panel.patient.current_layer().name == "SYN_DEMO_01 (SYNTHETIC) [1]"
    assert all(o.name.startswith(STALE_PREFIX) for o in overlays), [o.name for o in overlays]
    _check_invariants(panel)
    panel.patient.layer_combo.setCurrentIndex(0)  # back to the layer they were computed on, with its record
    panel.patient.load_record(sample_data_dir() / "subjects.csv", "SYN_DEMO_01")
    assert not any(o.name.startswith(STALE_PREFIX) for o in overlays)
    _check_invariants(panel)


def test_the_whatif_follows_an_edited_record(panel, qtbot):
    """After Predict, the form says 85 where the patient was 62: the sliders
    start from 85 and say that the result is stale; Predict clears that."""
    _predict(panel, qtbot)
    whatif = panel.whatif
    assert whatif.patient_record["AGE"] == 62 and not whatif.stale_label.isVisibleTo(panel)
    panel.patient.editors["AGE"].set_value(85)
    assert whatif.patient_record["AGE"] == 85 and whatif.whatif_record()["AGE"] == 85
    assert whatif.stale_label.isVisibleTo(panel) and "STALE until you click Predict" in whatif.stale_label.text()
    whatif.set_whatif_value("APOE4", 2)  # a slider move from the form's values
    whatif.update_whatif()
    assert whatif.whatif_record()["AGE"] == 85 and whatif.whatif_record()["APOE4"] == 2
    _predict(panel, qtbot)
    assert panel.last_result.record["AGE"] == 85 and not whatif.stale_label.isVisibleTo(panel)
    _check_invariants(panel)


def test_export_before_any_exploration_is_refused(panel, tmp_path):
    from napari_hyperfusion._qt.whatif_section import NOTHING_TO_EXPORT, NOTHING_TO_SUMMARISE
    from napari_hyperfusion.errors import HyperFusionError

    with pytest.raises(HyperFusionError, match="Nothing to export yet"):
        panel.whatif.export_exploration(tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
    panel.whatif._ask_export()  # the button: said before any file dialog
    panel.whatif._ask_summary()
    assert panel.errors[-2:] == [NOTHING_TO_EXPORT, NOTHING_TO_SUMMARISE]
