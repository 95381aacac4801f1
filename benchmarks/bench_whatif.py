"""What-if slider latency: decode from cached features vs a full forward.

    xvfb-run -a python benchmarks/bench_whatif.py [--device all|cpu|cuda] [--moves 200]

For each shipped image model, on a sample subject, in one run:
- full forward: resample + encode + decode for a changed record (what a
  slider would cost without the cache);
- slider compute: the panel's ``update_whatif`` work without drawing
  (decode for the what-if and the patient's record, the weight change);
- UI update: the panel's whole ``update_whatif`` until Qt has painted it
  (numbers, the response-curve marker and the kernel-change heat map,
  blitted), in a real napari window;
- response curve: 64 values of one field in one batched decode.
Medians and 95th percentiles over ``--moves`` random slider positions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import devices, machine_line, print_table, with_display


def pct(values, q):
    return float(np.percentile(values, q))


def full_pass_ms(model, scan, records) -> list[float]:
    """What a slider move would cost without the cache: resample, encode, decode."""
    from napari_hyperfusion.infer.subject import predict_subject

    times = []
    for r in records:
        start = time.perf_counter()
        predict_subject(model, scan, r)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def slider_ms(session, patient, records) -> list[float]:
    """The panel's per-move work: decode the what-if and the patient's record, the weight change."""
    times = []
    for r in records:
        start = time.perf_counter()
        session.predict(r)
        session.predict(patient)
        session.weight_change(patient, r)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def paper_size_row(device, rng, moves: int) -> list:
    """The paper's AD network (64 x 96 x 64 at 1 mm, 16 base filters),
    untrained: what the cache saves at the paper's size."""
    import torch

    from napari_hyperfusion.analysis.whatif import WhatIfSession
    from napari_hyperfusion.data.preprocess import ModelGrid, load_scan
    from napari_hyperfusion.data.schema import adni_schema
    from napari_hyperfusion.io.model_file import LoadedModel, ModelInfo
    from napari_hyperfusion.nn.build import build_model
    from napari_hyperfusion.nn.config import paper_ad_config
    from napari_hyperfusion.resources import sample_data_dir
    from napari_hyperfusion.samples import subject_record

    config = paper_ad_config()
    grid = ModelGrid(crop="hippocampus", shape=config.input_shape, spacing_mm=1.0)
    info = ModelInfo("paper-size AD (untrained)", "ad_classification", config, adni_schema(), ["CN", "MCI", "AD"],
                     image=grid.to_dict())  # fmt: skip
    model = LoadedModel(build_model(config).to(device).eval(), info, None, "paper", device)  # type: ignore[arg-type]
    scan, record = load_scan(sample_data_dir() / "SYN_DEMO_01.nii.gz"), subject_record("SYN_DEMO_01")
    records = [{**record, "AGE": float(rng.uniform(60, 90))} for _ in range(moves)]
    full = full_pass_ms(model, scan, records[:5])
    session = WhatIfSession(model, scan, "paper")
    with torch.no_grad():
        compute = slider_ms(session, record, records)
    med_full, med = statistics.median(full), statistics.median(compute)
    return [device.type, "paper-size AD (untrained)", med_full, med, pct(compute, 95), med_full / med, "-", "-", "-"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all")
    parser.add_argument("--moves", type=int, default=200)
    with_display(run, parser.parse_args())


def run(args: argparse.Namespace) -> None:
    import napari

    from napari_hyperfusion.analysis.whatif import WhatIfSession
    from napari_hyperfusion.data.preprocess import load_scan
    from napari_hyperfusion.io.model_file import load_model
    from napari_hyperfusion.resources import models_dir, sample_data_dir
    from napari_hyperfusion.samples import SUBJECTS, subject_record

    print(machine_line())
    rows = []
    rng = np.random.default_rng(0)
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer()
    app = QApplication.instance()
    _, panel = viewer.window.add_plugin_dock_widget("napari-hyperfusion", "HyperFusion explorer")
    for device in devices(args.device):
        for name, key, field in (("ad_hyperfusion", "SYN_DEMO_01", "AGE"), ("ad_concat", "SYN_DEMO_01", "AGE"),
                                 ("brain_age_hyperfusion", "sub-old", "PTGENDER")):  # fmt: skip
            model = load_model(models_dir() / f"{name}.safetensors", device)
            scan, record = load_scan(sample_data_dir() / SUBJECTS[key][0]), subject_record(key)
            field_spec = model.info.schema[field]
            moves = [({**record, field: float(rng.uniform(60, 90))} if field_spec.kind == "number"
                      else {**record, field: str(rng.choice(field_spec.categories))}) for _ in range(args.moves)]  # fmt: skip
            full = full_pass_ms(model, scan, moves[:20])
            session = WhatIfSession(model, scan, key)
            session.predict(record)
            compute = slider_ms(session, record, moves)
            curve = []
            for _ in range(10):
                start = time.perf_counter()
                session.response_curve(record, "AGE" if "AGE" in model.info.schema.names else field, n=64)
                curve.append((time.perf_counter() - start) * 1e3)
            # the whole panel update, plots drawn, in a napari viewer
            viewer.layers.clear()
            viewer.open_sample("napari-hyperfusion", key)
            panel.device_combo.setCurrentText(device.type)
            panel.open_model(model.path)
            panel.predict()  # caches the scan's features in its worker, as a user's click does
            while panel.busy or panel.last_result is None:
                app.processEvents()
                time.sleep(0.005)
            ui = []
            slider = panel.whatif.sliders[field]
            for _ in range(min(args.moves, 50)):
                if hasattr(slider, "maximum"):
                    slider.blockSignals(True)
                    slider.setValue(int(rng.integers(0, slider.maximum() + 1)))
                    slider.blockSignals(False)
                start = time.perf_counter()
                panel.whatif.update_whatif()
                app.processEvents()  # the label and the blitted plot are painted
                ui.append((time.perf_counter() - start) * 1e3)
            rows.append([device.type, name, statistics.median(full), statistics.median(compute), pct(compute, 95),
                         statistics.median(full) / statistics.median(compute), statistics.median(curve),
                         statistics.median(ui), pct(ui, 95)])  # fmt: skip
        rows.append(paper_size_row(device, rng, args.moves))
    print_table(["device", "model", "full forward ms", "slider ms (median)", "slider ms (p95)", "speed-up",
                 "curve 64 pts ms", "UI update ms (median)", "UI update ms (p95)"], rows)  # fmt: skip
    viewer.close()


if __name__ == "__main__":
    main()
