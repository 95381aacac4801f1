"""Lecture scenarios: the file format (checked in full, named errors) and
stepping through a shipped scenario in a real panel."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import dock_panel

from napari_hyperfusion._qt.scenario_player import shipped_scenarios, state_at
from napari_hyperfusion.analysis.scenario import ScenarioError, check_values, load_scenario
from napari_hyperfusion.data.schema import adni_schema
from napari_hyperfusion.samples import SUBJECTS


def test_the_shipped_scenarios_load_and_fold_into_states():
    paths = {p.stem: p for p in shipped_scenarios()}
    assert set(paths) == {"age_and_the_same_brain", "apoe4_with_and_without_csf", "tau_without_its_ptau"}
    for path in paths.values():
        scenario = load_scenario(path, subjects=tuple(SUBJECTS))
        for step in scenario.steps:
            check_values(step, adni_schema(), path.name)
    age = load_scenario(paths["age_and_the_same_brain"], subjects=tuple(SUBJECTS))
    assert age.title == "Age and the same brain" and len(age.steps) == 4
    assert state_at(age, 1).values == {"AGE": 60.0} and state_at(age, 1).subject == "SYN_DEMO_04"
    third = state_at(age, 2)
    assert third.values == {"AGE": 88.0} and third.curve == "AGE" and third.plane == "axial"
    last = state_at(age, 3)
    assert last.values == {} and last.overlay == "saliency" and state_at(age, 2).overlay is None
    apoe = load_scenario(paths["apoe4_with_and_without_csf"], subjects=tuple(SUBJECTS))
    assert state_at(apoe, 2).subject == "SYN_DEMO_04" and state_at(apoe, 2).values == {}  # a new patient starts plain
    assert [state_at(apoe, i).truth for i in range(4)] == [False, True, False, True]
    tau = load_scenario(paths["tau_without_its_ptau"], subjects=tuple(SUBJECTS))
    assert state_at(tau, 1).values == {"TAU": 600.0} and state_at(tau, 1).curve == "TAU" and state_at(tau, 1).truth
    assert state_at(tau, 2).values == {"TAU": 600.0, "PTAU": 60.0}  # the step keeps the tau the step before set


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps: []", "'steps' must be a list of at least one step"),
        ("steps:\n  - say: hello", "step 1: the first step names a 'subject'"),
        ("steps:\n  - subject: SYN_DEMO_99", "step 1: unknown subject 'SYN_DEMO_99'"),
        ("steps:\n  - subject: SYN_DEMO_01\n  - sett: {AGE: 3}", "step 2: unknown key(s) sett"),
        ("steps:\n  - subject: SYN_DEMO_01\n    set: {AGE: [1, 2]}", "step 1: AGE = [1, 2] is not a number"),
        ("steps:\n  - subject: SYN_DEMO_01\n    plane: oblique", "plane 'oblique' is not one of axial"),
        ("steps:\n  - subject: SYN_DEMO_01\n    overlay: lime", "overlay 'lime' is not one of saliency"),
        ("steps:\n  - subject: SYN_DEMO_01\n    truth: maybe", "truth is true or false, got 'maybe'"),
        ("title: [unclosed", "is not valid YAML"),
        ("- just a list", "expected 'title', 'model' and 'steps'"),
        ("!!python/object/apply:os.system ['echo hacked']", "is not valid YAML"),
    ],
)
def test_a_bad_scenario_file_names_the_step(text, message, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_scenario(path, subjects=tuple(SUBJECTS))


def test_values_the_model_cannot_take_are_refused_at_their_step(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("steps:\n  - subject: SYN_DEMO_01\n    set: {AGEE: 80}\n  - set: {AGE: 500}\n")
    scenario = load_scenario(path)
    with pytest.raises(ScenarioError, match="step 1: the model reads no field 'AGEE'"):
        check_values(scenario.steps[0], adni_schema(), "s.yaml, step 1")
    with pytest.raises(ScenarioError, match="step 2: Age = 500 is outside"):
        check_values(scenario.steps[1], adni_schema(), "s.yaml, step 2")


def test_a_lecture_steps_through_with_next_and_back(make_napari_viewer, qtbot, errors):
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    player = panel.lecture
    path = next(p for p in shipped_scenarios() if p.stem == "age_and_the_same_brain")
    assert player.load(path)
    player.go(0)  # opens SYN_DEMO_04, predicts, then shows his own values
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    assert panel.patient.current_layer().metadata["subject_id"] == "SYN_DEMO_04"
    assert player.text.text().startswith("Step 1 of 4: SYN_DEMO_04, a synthetic 74-year-old man")
    assert panel.whatif.whatif_record()["AGE"] == 74
    player.next()
    assert panel.whatif.whatif_record()["AGE"] == pytest.approx(60, abs=0.5)
    assert panel.whatif.last_story[0].startswith("At Age 60")
    assert panel.tabs.currentWidget() is panel.whatif
    player.next()
    assert panel.whatif.last_curve is not None and panel.whatif.last_curve.field == "AGE"
    assert "At Age 88" in panel.whatif.last_story[0] and " P(" in panel.whatif.last_story[0]
    player.back()  # exact: the state of step 2 again
    assert player.index == 1 and panel.whatif.whatif_record()["AGE"] == pytest.approx(60, abs=0.5)
    assert not player.back_button.isEnabled() or player.index > 0
    bad = path.parent.parent / "nope.yaml"
    assert not player.load(bad) and "Cannot use the scenario" in errors[-1]
    assert player.scenario is not None and player.index == 1  # the running lecture is kept


def test_a_step_that_asks_about_the_truth_shows_it(make_napari_viewer, qtbot, errors):
    """'APOE4, with and without CSF' asks what the truth says: its steps 2
    and 4 draw the generator's exact answer beside the model's curve, a new
    patient starts without it, and Back restores it exactly."""
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    player = panel.lecture
    path = next(p for p in shipped_scenarios() if p.stem == "apoe4_with_and_without_csf")
    assert player.load(path)
    player.go(0)
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    assert not panel.whatif.truth_box.isChecked() and panel.whatif.last_truth is None
    player.next()
    assert panel.whatif.truth_box.isChecked() and panel.whatif.last_curve.field == "APOE4"
    assert panel.whatif.last_truth is not None and panel.whatif.last_truth.shape == (3, 3)
    labels = [line.get_label() for line in panel.whatif.whatif_figure.axes[0].get_lines()]
    assert "AD, ground truth" in labels
    player.next()  # SYN_DEMO_04: a new patient, predicted, truth off until asked
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    assert not panel.whatif.truth_box.isChecked()
    player.back()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    assert panel.whatif.truth_box.isChecked() and panel.whatif.last_truth is not None
    assert not errors


def test_the_tau_lecture_says_what_the_model_and_the_truth_show(make_napari_viewer, qtbot, errors):
    """'Tau without its p-tau' tells the class that outside the data the
    model and the truth part and inside they agree: true of the shipped
    model, the band and the sentence are on screen at that step."""
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    player = panel.lecture
    assert player.load(next(p for p in shipped_scenarios() if p.stem == "tau_without_its_ptau"))
    player.go(0)
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    whatif = panel.whatif

    def model_and_truth_at_the_whatif() -> tuple[int, int]:
        session = whatif.whatif_session()
        model = session.predict(whatif.whatif_record())
        curve = whatif.last_curve
        truth = whatif.last_truth[int(np.argmin(np.abs(np.asarray(curve.values) - whatif.whatif_record()["TAU"])))]
        return int(np.argmax(model)), int(np.argmax(truth))

    player.next()  # tau 600, p-tau 19: outside the data
    assert whatif.last_curve.field == "TAU" and whatif.last_truth is not None
    model, truth = model_and_truth_at_the_whatif()
    assert model != truth  # "compare the model with the ground truth there"
    assert any(line.startswith("Outside the training data as a whole") for line in whatif.last_story)
    assert [p for p in whatif.whatif_figure.axes[0].patches if p.get_label().startswith("outside")]
    player.next()  # p-tau 60: inside, and they agree
    model, truth = model_and_truth_at_the_whatif()
    assert model == truth
    assert not any("as a whole" in line for line in whatif.last_story)
    assert not errors


def _lecture_state(panel) -> dict:
    """What the screen shows for a lecture step, compared between passes."""
    from napari_hyperfusion.analysis.overlays import OVERLAY_KEY

    whatif = panel.whatif
    layer = panel.patient.current_layer()
    overlays = sorted(
        lyr.name for lyr in panel.viewer.layers if OVERLAY_KEY in lyr.metadata and not lyr.name.startswith("[STALE]")
    )
    return {
        "subject": layer.metadata.get("subject_id") if layer is not None else None,
        "model": panel.model.info.name,
        "whatif": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in whatif.whatif_record().items()},
        "curve": whatif.last_curve.field if whatif.last_curve is not None else None,
        "truth": whatif.truth_box.isChecked() and whatif.last_truth is not None,
        "overlays": overlays,
        "plane": panel.view_controls.plane.currentText(),
        "caption": panel.lecture_caption.text(),
    }


@pytest.mark.parametrize("path", shipped_scenarios(), ids=lambda p: p.stem)
def test_back_shows_exactly_what_the_forward_pass_showed(path, make_napari_viewer, qtbot, errors):
    """Every shipped scenario, forward to the end and back to the start with
    PageDown / PageUp on the viewer's canvas: every step's view (subject,
    what-if values, curve, ground truth, maps, plane, text) equals the
    forward pass's, and the step's text stays in view on the tab it shows."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    panel = dock_panel(viewer, "SYN_DEMO_01")
    player = panel.lecture
    assert player.load(path)
    canvas = viewer.window._qt_viewer.canvas.native

    def settle():
        qtbot.wait(20)
        qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
        qtbot.wait(20)

    player.go(0)
    settle()
    forward = [_lecture_state(panel)]
    for _ in range(len(player.scenario.steps) - 1):
        qtbot.keyClick(canvas, Qt.Key.Key_PageDown)
        settle()
        forward.append(_lecture_state(panel))
        assert panel.lecture_caption.isVisible() and panel.lecture_caption.text() == player.text.text()
    assert player.index == len(player.scenario.steps) - 1
    for index in range(len(forward) - 2, -1, -1):
        qtbot.keyClick(canvas, Qt.Key.Key_PageUp)
        settle()
        assert player.index == index
        assert _lecture_state(panel) == forward[index], f"step {index + 1}"
    assert not errors
