"""Every failure of every job ends it, in a real viewer with every shipped
model: a failure injected into Predict, each Explain method, Prepare, the
response curve and the twin view leaves the buttons usable, Cancel off, and
a notification naming what failed. A torch error (a ``RuntimeError``) in a
worker used to vanish: superqt drops it without ending the job."""

from __future__ import annotations

import importlib.util
import time

import pytest
from conftest import dock_panel

from napari_hyperfusion._qt import explain_section
from napari_hyperfusion._qt import panel as panel_module
from napari_hyperfusion.analysis import explain, whatif
from napari_hyperfusion.errors import ImageError
from napari_hyperfusion.resources import models_dir

SUBJECT = {  # model -> the sample subject it reads
    "ad_hyperfusion": "SYN_DEMO_01",
    "ad_imaging": "SYN_DEMO_01",
    "ad_concat": "SYN_DEMO_01",
    "brain_age_hyperfusion": "sub-old",
    "risk_hyperfusion": "SYN_DEMO_01",
    "risk_medfusion": "SYN_DEMO_01",
}
MODELS = [pytest.param(n, marks=pytest.mark.notes) if n == "risk_medfusion" else n for n in SUBJECT]


def _boom(*args, **kwargs):
    raise RuntimeError("injected torch failure: CUDA error: device-side assert triggered")


def _ended(panel, qtbot, errors, failure: str, job: bool = True) -> None:
    """The job ended, the panel is usable and the user was told (in the
    status line too, for a worker's job)."""
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    assert not panel.jobs.cancel_button.isEnabled()
    assert panel.predict_button.isEnabled() and panel.explainer.explain_button.isEnabled()
    assert errors and errors[-1].startswith(failure), errors
    assert "injected torch failure" in errors[-1] and "\n" not in errors[-1]
    assert not job or panel.status.text().startswith(failure)


@pytest.fixture
def make_panel(make_napari_viewer, errors):
    def make(name: str):
        panel = dock_panel(make_napari_viewer(), SUBJECT[name])
        assert panel.open_model(models_dir() / f"{name}.safetensors")
        return panel

    return make


@pytest.mark.parametrize("name", MODELS)
def test_a_failure_in_every_job_ends_it_with_a_message(name, make_panel, qtbot, errors, monkeypatch):
    panel = make_panel(name)
    # Predict
    with monkeypatch.context() as patch:
        patch.setattr(panel_module, "predict_subject_and_features", _boom)
        panel.predict()
        _ended(panel, qtbot, errors, "Cannot predict: unexpected RuntimeError")
    assert panel.last_result is None
    panel.predict()  # the real one: what the explanations and sliders start from
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=120_000)
    # every Explain method, failing in the image map and (after it) in the EHR attribution
    combo = panel.explainer.method_combo
    uses_image = panel.model.info.config.uses_image
    for i in range(combo.count()):
        combo.setCurrentIndex(i)
        with monkeypatch.context() as patch:
            patch.setattr(explain_section, "attribute_image" if uses_image else "attribute_tabular", _boom)
            panel.explain()
            _ended(panel, qtbot, errors, "Cannot explain: unexpected RuntimeError")
    if uses_image and panel.model.info.config.uses_tabular:
        with monkeypatch.context() as patch:
            patch.setattr(explain_section, "attribute_tabular", _boom)
            panel.explain()
            _ended(panel, qtbot, errors, "Cannot explain: unexpected RuntimeError")
    # the response curve and the twin view compute on the UI thread
    whatif_section = panel.whatif
    with monkeypatch.context() as patch:
        patch.setattr(whatif.WhatIfSession, "response_curve", _boom)
        whatif_section.curve_field.setCurrentIndex(0)
        whatif_section.curve_button.click()
        _ended(panel, qtbot, errors, "Cannot draw the response curve: unexpected RuntimeError", job=False)
    if uses_image:
        with monkeypatch.context() as patch:
            patch.setattr(explain, "attribute_image", _boom)
            whatif_section.twin_button.click()
            _ended(panel, qtbot, errors, "Cannot show the twin view: unexpected RuntimeError", job=False)
    # and after all of it, the panel still works
    count = len(errors)
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.status.text() == "done", timeout=120_000)
    assert len(errors) == count


@pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="Prepare needs the [prep] extra")
def test_a_failure_in_prepare_ends_it(make_panel, qtbot, errors, monkeypatch):
    from napari_hyperfusion.data import registration

    panel = make_panel("ad_hyperfusion")
    monkeypatch.setattr(registration, "prepare_scan", _boom)
    panel.preparer.prepare()
    _ended(panel, qtbot, errors, "Cannot prepare: unexpected RuntimeError")


def test_cancel_ends_a_job_that_fails_after_it(make_panel, qtbot, errors, monkeypatch):
    """Cancel, then the worker fails as it stops (a torch call interrupted):
    the job still ends, as cancelled, and Predict works again."""
    panel = make_panel("ad_hyperfusion")

    def stuck(*args, **kwargs):  # runs in the worker thread
        deadline = time.monotonic() + 60
        while not panel.jobs.should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(panel_module, "predict_subject_and_features", stuck)
    panel.predict()
    qtbot.waitUntil(lambda: panel.busy, timeout=5_000)
    panel.cancel()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert panel.status.text().startswith("Cancelled") and panel.predict_button.isEnabled()


def test_a_user_error_in_a_job_is_said_without_calling_it_a_bug(make_panel, qtbot, errors, monkeypatch):
    panel = make_panel("ad_hyperfusion")

    def refuse(*args, **kwargs):
        raise ImageError("the scan is empty")

    monkeypatch.setattr(panel_module, "predict_subject_and_features", refuse)
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)
    assert errors[-1] == "Cannot predict: the scan is empty"
