"""What a running job shows: nothing that animates or flickers while it is
fast (each frame re-composes napari's whole OpenGL window and slowed a
0.2 s Predict to 0.45 s), the moving bar and its step line once it is slow,
and its outcome never overwritten by a late step line."""

from __future__ import annotations

import time

import pytest

from napari_hyperfusion._qt.jobs import BUSY_ANIMATION_AFTER_MS, STATUS_AFTER_MS, JobRunner


def _job(seconds: float, steps: int = 3):
    def job():
        for i in range(steps):
            yield f"step {i + 1} of {steps}"
            time.sleep(seconds / steps)
        return "answer"

    return job


def _run(qtbot, runner: JobRunner, job) -> tuple[list[str], list[tuple[int, int]], list]:
    """Start ``job``; record every status line and progress range it showed."""
    shown, ranges, results = [], [], []
    runner.status.setText("")

    def watch():
        text = runner.status.text()
        if not shown or shown[-1] != text:
            shown.append(text)
        bar = (runner.progress.minimum(), runner.progress.maximum())
        if not ranges or ranges[-1] != bar:
            ranges.append(bar)

    assert runner.start(job, lambda value: (results.append(value), runner.status.setText("done")), "starting", "Failed")
    while runner.busy:
        watch()
        qtbot.wait(5)
    watch()
    return shown, ranges, results


def test_a_fast_job_shows_no_animation_and_no_step_lines(qtbot):
    runner = JobRunner()
    qtbot.addWidget(runner)
    start = time.perf_counter()
    shown, ranges, results = _run(qtbot, runner, _job(0.03))
    if time.perf_counter() - start > 0.8 * STATUS_AFTER_MS / 1000:  # a stalled machine made it a slow job
        pytest.skip("the 30 ms job took longer than the status delay on this (busy) machine")
    assert results == ["answer"]
    assert (0, 0) not in ranges  # the moving (indeterminate) bar never started
    assert not any(text.startswith("step") for text in shown), shown
    assert shown[-1] == "done"


def test_a_slow_job_shows_the_moving_bar_and_its_latest_step(qtbot):
    runner = JobRunner()
    qtbot.addWidget(runner)
    seconds = 3 * max(BUSY_ANIMATION_AFTER_MS, STATUS_AFTER_MS) / 1000
    shown, ranges, results = _run(qtbot, runner, _job(seconds))
    assert results == ["answer"]
    assert (0, 0) in ranges and ranges[-1] == (0, 1)  # moving while slow, at rest after
    assert any(text.startswith("step") for text in shown), shown
    assert shown[-1] == "done"  # the outcome, not a step line that arrived late


def test_a_step_line_pending_when_the_job_ends_never_replaces_its_outcome(qtbot):
    runner = JobRunner()
    qtbot.addWidget(runner)

    def job():
        yield "a step line that is still waiting for its 0.25 s"
        return "answer"

    shown, _, results = _run(qtbot, runner, job)
    qtbot.wait(STATUS_AFTER_MS + 100)  # past the step line's timer
    assert results == ["answer"] and runner.status.text() == "done", shown


def test_the_ehr_attribution_starts_after_the_saliency_overlay_is_drawn(make_napari_viewer, qtbot, monkeypatch):
    """The overlay is what the user waits for: the attribution's threads must not take the cores the
    window needs to draw it."""
    from conftest import dock_panel

    from napari_hyperfusion._qt import explain_section
    from napari_hyperfusion.analysis.overlays import OVERLAY_KEY
    from napari_hyperfusion.resources import models_dir

    viewer = make_napari_viewer()
    panel = dock_panel(viewer, "SYN_DEMO_01")
    assert panel.open_model(models_dir() / "ad_hyperfusion.safetensors")
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=120_000)
    overlays_then = []
    real = explain_section.attribute_tabular

    def attribute_tabular(*args, **kwargs):  # runs in the worker
        overlays_then.append(sum(OVERLAY_KEY in layer.metadata for layer in list(viewer.layers)))
        return real(*args, **kwargs)

    monkeypatch.setattr(explain_section, "attribute_tabular", attribute_tabular)
    monkeypatch.setattr(explain_section, "OVERLAY_WAIT_S", 60.0)  # a loaded CI machine may draw slowly
    combo = panel.explainer.method_combo
    combo.setCurrentIndex(combo.findData("saliency"))
    panel.explainer.explain()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert overlays_then and overlays_then[0] >= 1  # the maps were in the viewer before the attribution began
