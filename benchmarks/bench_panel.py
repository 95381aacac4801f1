"""Click-to-pixels times of the real panel, and a memory soak.

    python benchmarks/bench_panel.py [--repeats 5] [--soak 100]

Drives the HyperFusion panel in a real napari window (under a virtual X
server when there is no display) with the shipped AD model and the sample
subjects, and times each action from the press (a Qt click, a slider value,
a checkbox tick) to the changed pixels, three ways:

- **inside**: until the panel's result has been painted (matplotlib's draw
  or blit of the chart, napari's canvas draw) and the job has ended;
- **screen**: from outside the panel: the region that should change is
  grabbed from the X server (``QScreen.grabWindow``, what a camera would
  see) after every pass of the event loop until its pixels differ from
  before the press; checks the inside figure (grabbing costs a few ms, so
  it reads a little longer);
- **panel says**: the figure the panel itself shows (Predict: "... ms from
  the click"; slider: the compute time in the what-if text).

With "Three planes" off and then on (the same actions, one run), every
action is timed until the event loop is idle again (no rebuild or point
update pending, 20 passes without work); "longest block" is the longest
single stretch the UI thread was busy (what freezes the window). The
difference is what the two side canvases add to napari's own work.

cold: the first time (after opening the model / scan), warm: the median of
``--repeats`` later times. The soak runs ``--soak`` rounds of Predict +
Saliency + three slider moves on one scan and prints resident memory every
10 rounds; the slope after warm-up is reported in MB per round.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import time

import psutil
from common import machine_line, print_table, with_display


def _app_loop(predicate, timeout: float = 300.0) -> float:
    """Process Qt events until ``predicate()``; returns the time it became true."""
    from qtpy.QtWidgets import QApplication

    deadline = time.perf_counter() + timeout
    while not predicate():
        QApplication.processEvents()
        if time.perf_counter() > deadline:
            raise TimeoutError("the panel did not finish in time")
        time.sleep(0.001)
    return time.perf_counter()


def _screen_pixels(widget):
    """``widget``'s region as the X server shows it (not as the widget would
    paint itself now)."""
    from qtpy.QtGui import QGuiApplication

    shown = widget.visibleRegion().boundingRect()  # the part not scrolled away or covered
    corner = widget.mapToGlobal(shown.topLeft())
    screen = QGuiApplication.primaryScreen()
    return screen.grabWindow(0, corner.x(), corner.y(), shown.width(), shown.height()).toImage()


def _until_screen_changes(widget, before, start: float, done, timeout: float = 60.0) -> float | None:
    """Seconds from ``start`` until ``done()`` and ``widget``'s screen pixels
    differ from ``before``; ``None`` when the action finished but the region
    did not change within ``timeout`` (e.g. scrolled out of view)."""
    from qtpy.QtWidgets import QApplication

    deadline = start + timeout
    while True:
        QApplication.processEvents()
        if done() and _screen_pixels(widget) != before:
            return time.perf_counter() - start
        if time.perf_counter() > deadline:
            if not done():
                raise TimeoutError("the panel did not finish in time")
            return None


def _until_idle(busy, start: float) -> tuple[float, float]:
    """Run the event loop until it is idle (``busy()`` false and 20 passes
    without work); returns (seconds from ``start`` to the last work, longest
    single pass)."""
    from qtpy.QtWidgets import QApplication

    quiet, last_work, longest = 0, start, 0.0
    while quiet < 20:
        t0 = time.perf_counter()
        QApplication.processEvents()
        t1 = time.perf_counter()
        longest = max(longest, t1 - t0)
        if t1 - t0 > 0.003 or busy():
            last_work, quiet = t1, 0
        else:
            quiet += 1
            time.sleep(0.001)
    return last_work - start, longest


class Painted:
    """Records when a matplotlib canvas or napari's canvas last painted."""

    def __init__(self, panel, viewer) -> None:
        self.result = self.whatif = self.canvas = 0.0
        panel.result_view.canvas.mpl_connect("draw_event", lambda e: self._set("result"))
        panel.whatif.whatif_canvas.mpl_connect("draw_event", lambda e: self._set("whatif"))
        original = panel.whatif._blit_whatif

        def blit() -> None:
            original()
            self._set("whatif")

        panel.whatif._blit_whatif = blit
        viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda e: self._set("canvas"))

    def _set(self, what: str) -> None:
        setattr(self, what, time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--soak", type=int, default=100, help="Predict + Saliency + 3 slider rounds (0: none)")
    parser.add_argument("--think", type=float, default=0.0,
                        help="seconds between choosing MedFusionNet and clicking Predict (0: at once, the worst case)")  # fmt: skip
    with_display(run, parser.parse_args())


def run(args: argparse.Namespace) -> None:
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_hyperfusion.resources import models_dir

    print(machine_line())
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1600, 1100)
    viewer.open_sample("napari-hyperfusion", "SYN_DEMO_01")
    _, panel = viewer.window.add_plugin_dock_widget("napari-hyperfusion", "HyperFusion explorer")
    painted = Painted(panel, viewer)
    canvas_widget = viewer.window._qt_viewer.canvas.native
    _app_loop(lambda: True)

    def click(button) -> float:
        start = time.perf_counter()
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        return start

    def settle() -> None:
        _until_idle(lambda: panel.busy, time.perf_counter())

    ages = iter(range(10_000))

    def predict():
        # a new age each time (the panel keeps the results of recent records: an age seen before
        # would show its result at once), so that the headline (the region watched) changes on screen
        record = dict(panel.patient.record())
        record["AGE"] = 40 + next(ages) % 70  # 40-109: inside the valid 18-110
        panel.patient.set_record(record)
        settle()
        before_paint, before_pixels = painted.result, _screen_pixels(panel.result_view.headline)
        start = click(panel.predict_button)
        screen = _until_screen_changes(
            panel.result_view.headline, before_pixels, start,
            lambda: not panel.busy and panel.last_result is not None and painted.result > before_paint,
        )  # fmt: skip
        return painted.result - start, screen, panel.last_result.extra["click_to_result_s"]

    targets = iter(range(10_000))

    def saliency():
        panel.tabs.setCurrentWidget(panel.explainer)
        combo = panel.explainer.method_combo
        combo.setCurrentIndex(combo.findData("saliency"))
        target = panel.explainer.target_combo  # another class each time: the map (and the pixels) change
        target.setCurrentIndex((next(targets) % 2) * (target.count() - 1))
        settle()
        before_paint, shown = painted.canvas, panel.explainer._shown_image
        before_pixels = _screen_pixels(canvas_widget)
        start = click(panel.explainer.explain_button)
        screen = _until_screen_changes(
            canvas_widget, before_pixels, start,
            lambda: panel.explainer._shown_image is not shown and painted.canvas > before_paint,
        )  # fmt: skip
        inside = painted.canvas - start
        settle()  # the EHR attribution follows (not part of this time)
        return inside, screen, panel.explainer._image_seconds

    def slider():
        panel.tabs.setCurrentWidget(panel.whatif)
        whatif = panel.whatif
        if whatif.last_curve is None or whatif.last_curve.field != "AGE":  # the star moves along the age curve
            whatif.curve_field.setCurrentIndex(whatif.curve_field.findData("AGE"))
            whatif.show_response_curve()
        canvas = whatif.whatif_canvas
        panel.scroll.ensureWidgetVisible(canvas, 0, 0)  # the curve, where the star and the line move
        settle()
        control = panel.whatif.sliders["AGE"]
        before_paint, before_pixels = painted.whatif, _screen_pixels(canvas)
        start = time.perf_counter()
        span = control.maximum() - control.minimum()
        control.setValue(control.minimum() + (control.value() - control.minimum() + span // 3 + 1) % (span + 1))
        screen = _until_screen_changes(canvas, before_pixels, start, lambda: painted.whatif > before_paint)
        said = re.search(r"([0-9.]+) ms from cached features", panel.whatif.whatif_label.text())
        return painted.whatif - start, screen, float(said.group(1)) / 1e3 if said else None

    def panel_action(action):
        def run_it():
            settle()
            before = _screen_pixels(panel)
            start = time.perf_counter()
            action()
            acted = time.perf_counter() - start  # the action's own (synchronous) part
            screen = _until_screen_changes(panel, before, start, lambda: not panel.busy)
            inside, _ = _until_idle(lambda: panel.busy, start)
            return max(acted, inside), screen, None

        return run_it

    rows = []

    def fmt(value) -> str:
        return "-" if value is None else f"{value * 1e3:.0f}"

    def measure(name: str, action) -> None:
        cold = action()
        warm = [action() for _ in range(args.repeats)]
        inside, screen = [w[0] for w in warm], [w[1] for w in warm if w[1] is not None] or [None]
        said = [w[2] for w in warm if w[2] is not None]
        rows.append([name, fmt(cold[0]), fmt(statistics.median(inside)), fmt(max(inside)),
                     fmt(statistics.median(screen) if screen[0] is not None else None), fmt(statistics.median(said)) if said else "-"])  # fmt: skip

    measure("Predict", predict)
    measure("Saliency overlay", saliency)
    measure("slider move (what-if repaint)", slider)
    viewer.open_sample("napari-hyperfusion", "SYN_DEMO_02")
    _app_loop(lambda: True)
    toggle = iter(range(10_000))
    measure("switch scan", panel_action(lambda: panel.patient.layer_combo.setCurrentIndex(next(toggle) % 2)))
    models = [models_dir() / "ad_concat.safetensors", models_dir() / "ad_hyperfusion.safetensors"]
    measure("switch model", panel_action(lambda: panel.open_model(models[next(toggle) % 2])))
    print("\nclick to changed pixels, AD HyperFusion (shipped), SYNTHETIC sample subjects (ms):")
    print_table(["action", "cold", "warm median", "warm max", "screen (outside) median", "panel says"], rows)

    three: dict[str, list[list[float]]] = {}  # action -> [[until idle, longest block] with planes off, on]
    view = panel.view_controls

    def ortho_busy() -> bool:
        return panel.busy or (view.ortho is not None and view.ortho.busy)

    collections: list[tuple[int, float]] = []  # (generation, seconds) of every garbage collection
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            collections.append((info["generation"], time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)
    full_gc: dict[str, list[list[tuple[float, int]]]] = {}  # action -> (seconds, count) of full collections

    def with_planes(name: str, action, on: bool) -> None:
        settle()
        collections.clear()
        start = time.perf_counter()
        action()
        acted = time.perf_counter() - start  # the action's own (synchronous) part
        until, longest = _until_idle(ortho_busy, start)
        three.setdefault(name, [[], []])[on].append((max(until, acted), max(longest, acted)))
        full = [seconds for generation, seconds in collections if generation == 2]
        full_gc.setdefault(name, [[], []])[on].append((sum(full), len(full)))

    def layer_actions(on: bool) -> None:
        for round_ in range(2):
            layer = viewer.layers[0]
            with_planes("rename a layer", lambda: setattr(layer, "name", f"{layer.name}_{round_}"), on)
            with_planes("change contrast", lambda: setattr(layer, "contrast_limits", [0, 150 + round_]), on)
            with_planes("open a sample", lambda: viewer.open_sample("napari-hyperfusion", "SYN_DEMO_03"), on)
            with_planes("remove a layer", lambda: viewer.layers.remove(viewer.layers[-1]), on)
            with_planes("move the crosshair point", lambda: setattr(viewer.dims, "point", (0, -20 + round_, 10)), on)
        with_planes("Predict", lambda: click(panel.predict_button), on)

    layer_actions(False)  # the same actions without the side canvases: napari's own cost, same run
    with_planes("tick 'Three planes'", lambda: view.three_planes.setChecked(True), True)
    layer_actions(True)
    with_planes("untick 'Three planes'", lambda: view.three_planes.setChecked(False), True)

    def span(values: list[float], signed: bool = False) -> str:
        low, high = (
            f"{min(values) * 1e3:{'+' if signed else ''}.0f}",
            f"{max(values) * 1e3:{'+' if signed else ''}.0f}",
        )
        return low if low == high else f"{low} to {high}"

    rows3 = []
    for name, (off, on) in three.items():
        cells = [span([u for u, _ in runs]) + " / " + span([b for _, b in runs]) if runs else "-" for runs in (off, on)]
        added = span([b - b0 for (_, b0), (_, b) in zip(off, on)], signed=True) if off and on else "-"  # by round
        collected = [
            f"{span([t for t, _ in full_gc[name][side]])} ({'/'.join(str(n) for _, n in full_gc[name][side])})"
            if full_gc[name][side] else "-"
            for side in (0, 1)
        ]  # fmt: skip
        rows3.append([name, *cells, added, " / ".join(collected)])
    print(
        "\nwith 'Three planes' off and on, from the action until the event loop is idle / the longest single"
        " block of the UI thread (ms; two rounds, low to high):"
    )
    print_table(
        ["action", "off: until idle / longest", "on: until idle / longest", "on adds to the longest",
         "full garbage collections ms (how many, by round), off / on"],
        rows3,
    )  # fmt: skip
    gc.callbacks.remove(on_gc)

    if args.soak:
        process = psutil.Process()
        panel.patient.layer_combo.setCurrentIndex(0)
        _app_loop(lambda: True)
        memory = []
        for round_ in range(1, args.soak + 1):
            predict()
            saliency()
            for _ in range(3):
                slider()
            if round_ % 10 == 0 or round_ == 1:
                memory.append((round_, process.memory_info().rss / 2**20))
        print(f"\nsoak: {args.soak} rounds of Predict + Saliency + 3 slider moves, resident memory:")
        print_table(["round", "RSS MiB"], memory)
        if len(memory) >= 3:
            (r0, m0), (r1, m1) = memory[1], memory[-1]
            print(f"\nafter warm-up (round {r0} -> {r1}): {(m1 - m0) / max(r1 - r0, 1):+.2f} MiB per round")
    first_note_predict(panel, click, settle, args.think)
    viewer.close()


def first_note_predict(panel, click, settle, think: float) -> None:
    """The first Predict with a model that reads notes, in this process
    (the note encoder not yet loaded): choose the shipped MedFusionNet, wait
    ``think`` seconds (the user reading the form; the encoder loads in the
    background meanwhile), click Predict; click to the result's pixels."""
    from napari_hyperfusion.data.notes import encoder_available, encoder_loaded
    from napari_hyperfusion.resources import models_dir

    if not encoder_available():
        print("\nfirst MedFusionNet Predict: skipped (the note encoder, the [notes] extra, is not installed)")
        return
    if encoder_loaded():
        print("\nfirst MedFusionNet Predict: skipped (the note encoder was loaded earlier in this process)")
        return
    settle()
    chosen = time.perf_counter()
    panel.open_model(models_dir() / "risk_medfusion.safetensors")
    opened = time.perf_counter() - chosen
    if not panel.patient.note_text():
        panel.patient.note_edit.setPlainText("Family notes missed appointments. Father diagnosed with dementia.")
    _app_loop(lambda: time.perf_counter() - chosen >= think)
    loaded_before_click = encoder_loaded()
    headline = panel.result_view.headline
    before_pixels = _screen_pixels(headline)
    start = click(panel.predict_button)
    screen = _until_screen_changes(headline, before_pixels, start, lambda: not panel.busy and panel.last_result)
    said = panel.last_result.extra.get("click_to_result_s")
    print(f"\nfirst MedFusionNet Predict in this process, clicked {think:g} s after choosing the model "
          f"(note encoder loaded by the click: {'yes' if loaded_before_click else 'no'}):")  # fmt: skip
    print_table(
        ["screen (outside) ms", "panel says ms", "choosing the model ms (synchronous)"],
        [["-" if screen is None else f"{screen * 1e3:.0f}", "-" if said is None else f"{said * 1e3:.0f}",
          f"{opened * 1e3:.0f}"]],
    )  # fmt: skip


if __name__ == "__main__":
    main()
