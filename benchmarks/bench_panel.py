"""Click-to-pixels times of the real panel, and a memory soak.

    python benchmarks/bench_panel.py [--repeats 5] [--soak 100]

Drives the HyperFusion panel in a real napari window (under a virtual X
server when there is no display) with the shipped AD model and the sample
subjects, and times each action from the button press (the Qt click) to
the painted result:

- Predict: until the result chart has been drawn (matplotlib's draw event);
- Saliency: until the overlay layers exist and napari's canvas has painted
  (the EHR-field attribution, which Explain computes next, is not included);
- slider move: until the what-if plot has been repainted (blit);
- switch scan / switch model: until the panel has taken the new case.

cold: the first time (after opening the model / scan), warm: the median of
``--repeats`` later times. The soak runs ``--soak`` rounds of Predict +
Saliency + three slider moves on one scan and prints resident memory every
10 rounds; the slope after warm-up is reported in MB per round.
"""

from __future__ import annotations

import argparse
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
    _app_loop(lambda: True)

    def click(button) -> float:
        start = time.perf_counter()
        QTest.mouseClick(button, Qt.MouseButton.LeftButton)
        return start

    def predict() -> float:
        before = painted.result
        start = click(panel.predict_button)
        _app_loop(lambda: not panel.busy and panel.last_result is not None and painted.result > before)
        return painted.result - start

    def saliency() -> float:
        combo = panel.explainer.method_combo
        combo.setCurrentIndex(combo.findData("saliency"))
        before, shown = painted.canvas, panel.explainer._shown_image
        start = click(panel.explainer.explain_button)
        _app_loop(lambda: panel.explainer._shown_image is not shown)  # the overlays are placed
        _app_loop(lambda: painted.canvas > before)
        overlay = painted.canvas - start
        _app_loop(lambda: not panel.busy)  # the EHR attribution follows (not part of this time)
        return overlay

    slider_values = iter(range(10_000))

    def slider() -> float:
        control = panel.whatif.sliders["AGE"]
        before = painted.whatif
        start = time.perf_counter()
        control.setValue((next(slider_values) * 37) % control.maximum())
        _app_loop(lambda: painted.whatif > before)
        return painted.whatif - start

    def switch_scan(index: int) -> float:
        start = time.perf_counter()
        panel.patient.layer_combo.setCurrentIndex(index)
        _app_loop(lambda: True)
        return time.perf_counter() - start

    def switch_model(path) -> float:
        start = time.perf_counter()
        panel.open_model(path)
        _app_loop(lambda: True)
        return time.perf_counter() - start

    rows = []

    def measure(name: str, action, *a) -> None:
        cold = action(*a)
        warm = [action(*a) for _ in range(args.repeats)]
        rows.append([name, cold * 1e3, statistics.median(warm) * 1e3, max(warm) * 1e3])

    measure("Predict", predict)
    measure("Saliency overlay", saliency)
    measure("slider move (what-if repaint)", slider)
    viewer.open_sample("napari-hyperfusion", "SYN_DEMO_02")
    _app_loop(lambda: True)
    toggle = iter(range(10_000))
    measure("switch scan", lambda: switch_scan(next(toggle) % 2))
    models = [models_dir() / "ad_concat.safetensors", models_dir() / "ad_hyperfusion.safetensors"]
    measure("switch model", lambda: switch_model(models[next(toggle) % 2]))
    print("\nclick to painted result, AD HyperFusion (shipped), SYNTHETIC sample subjects:")
    print_table(["action", "cold ms", "warm median ms", "warm max ms"], rows)

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
    viewer.close()


if __name__ == "__main__":
    main()
