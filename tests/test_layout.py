"""The panel fits a laptop screen, in a real napari window at 1366 x 768 and
1920 x 1200, in the states a user sees: after Predict, after an explanation,
after a slider move and a response curve. Nothing scrolls sideways, no
control or text is cut, and Predict, Cancel and the answer stay in view."""

from __future__ import annotations

import pytest
from conftest import dock_panel
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QAbstractButton, QComboBox, QLabel, QSlider, QWidget

from napari_hyperfusion._qt.plain import PlainCanvas
from napari_hyperfusion.resources import models_dir

SIZES = [(1366, 768), (1920, 1200)]


def _visible_rect(widget: QWidget, ancestor: QWidget) -> QRect:
    return QRect(widget.mapTo(ancestor, QPoint(0, 0)), widget.size())


def _check_tab(panel) -> list[str]:
    """What is cut or hidden sideways in the scroll area, as readable lines."""
    problems = []
    scroll = panel.scroll
    inner, viewport = scroll.widget(), scroll.viewport()
    if scroll.horizontalScrollBar().maximum() > 0:
        problems.append(f"scrolls sideways by {scroll.horizontalScrollBar().maximum()} px")
    width = viewport.width()
    for widget in inner.findChildren(QWidget):
        if not widget.isVisibleTo(panel) or not isinstance(widget, QLabel | QAbstractButton | QComboBox | QSlider):
            continue
        rect = _visible_rect(widget, inner)
        if rect.right() > width:
            problems.append(f"{type(widget).__name__} {widget.objectName() or _text(widget)!r} ends at {rect.right()}")
        if isinstance(widget, QLabel) and widget.text():
            if widget.wordWrap():
                need = widget.heightForWidth(widget.width())
                if need > widget.height() + 2:
                    problems.append(f"label {_text(widget)!r} is cut: {widget.height()} of {need} px high")
            elif widget.sizeHint().width() > widget.width() + 2:
                problems.append(f"label {_text(widget)!r} is cut: {widget.width()} of {widget.sizeHint().width()} px")
    for canvas in inner.findChildren(PlainCanvas):
        if not canvas.isVisibleTo(panel):
            continue
        figure = canvas.figure
        renderer = canvas.get_renderer()
        box = figure.get_tightbbox(renderer)  # inches, like the figure's size
        w, h = figure.get_size_inches()
        slack = 2 / figure.dpi  # two pixels
        if box is not None and (box.x0 < -slack or box.y0 < -slack or box.x1 > w + slack or box.y1 > h + slack):
            name = canvas.objectName() or type(canvas.parent()).__name__
            problems.append(f"chart {name}: content {box.bounds} runs out of its figure (0, 0, {w:.2f}, {h:.2f})")
    return problems


def _text(widget: QWidget) -> str:
    return (widget.text() if hasattr(widget, "text") else "")[:40]


# risk: long label names; brain age: the form's longest label and the gap chart's two-line caption;
# SYN_DEMO_04: CSF not known, the longest slider value labels ("not known (filled: ...) (patient's)")
CASES = [(size, model, None) for model in ("ad_hyperfusion", "brain_age_hyperfusion") for size in SIZES]
CASES += [((1366, 768), "risk_hyperfusion", None), ((1366, 768), "ad_hyperfusion", "SYN_DEMO_04")]
# the sample each model is shown on, and the what-if move: (field, value) pairs, then the curve's field
WALKS = {
    "brain_age_hyperfusion": ("sub-old", [("PTGENDER", "Female")], "PTGENDER"),
}
AD_WALK = ("SYN_DEMO_01", [("APOE4", 0), ("AGE", 82.0)], "APOE4")  # the longest narration: an unexpected direction


@pytest.mark.parametrize(
    "size, model, subject", CASES, ids=lambda c: f"{c[0]}x{c[1]}" if isinstance(c, tuple) else (c or "its sample")
)
def test_every_tab_fits_after_predict_explain_and_a_slider_move(
    size, model, subject, make_napari_viewer, qtbot, errors
):
    sample, moves, curve_field = WALKS.get(model, AD_WALK)
    subject = subject or sample
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*size)
    panel = dock_panel(viewer, subject)
    assert panel.open_model(models_dir() / f"{model}.safetensors")
    qtbot.wait(50)
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy and panel.explainer.last_explanation is not None, timeout=120_000)
    for name, value in moves:
        panel.whatif.set_whatif_value(name, value)
    panel.whatif.update_whatif()
    panel.whatif.curve_field.setCurrentIndex(panel.whatif.curve_field.findData(curve_field))
    panel.whatif.show_response_curve()
    window = viewer.window._qt_window
    # the fixed bar: Predict, Cancel and the headline answer are on screen, not scrolled away
    for widget in (panel.predict_button, panel.jobs.cancel_button, panel.result_view.headline):
        rect = _visible_rect(widget, window)
        assert window.rect().contains(rect), (widget, rect, window.rect())
        assert not widget.visibleRegion().isEmpty()
    assert panel.result_view.headline.text().startswith("Prediction: ")
    problems = {}
    for i in range(panel.tabs.count()):
        panel.tabs.setCurrentIndex(i)
        qtbot.wait(30)
        found = _check_tab(panel)
        if found:
            problems[panel.tabs.tabText(i)] = found
    assert not problems, problems
    assert not errors
