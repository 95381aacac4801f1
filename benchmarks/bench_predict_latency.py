"""Click-to-result latency of the panel's Predict for each shipped model.

    python benchmarks/bench_predict_latency.py [--device all|cpu|cuda] [--repeats 5]

cold: open the model file and predict (the first click after choosing a
model); warm: predict with the model already loaded (every later click).
Both include reading the scan from the layer, resampling it onto the model
grid and the network; they are the work the panel's worker thread does for
a sample subject (the Qt redraw adds a few ms). Median of ``--repeats``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import devices, machine_line, print_table

from napari_hyperfusion.data.preprocess import scan_from_array
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.resources import shipped_models
from napari_hyperfusion.samples import open_subject, subject_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(machine_line())
    rows = []
    for device in devices(args.device):
        for path in shipped_models():
            key = "sub-old" if "brain_age" in path.stem else "SYN_DEMO_01"
            data, kwargs, _ = open_subject(key)[0]
            affine = np.asarray(kwargs["metadata"]["affine"])
            record = subject_record(key)
            cold, warm = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                model = load_model(path, device)
                predict_subject(model, scan_from_array(data, affine), record)
                cold.append((time.perf_counter() - start) * 1e3)
            for _ in range(args.repeats):
                start = time.perf_counter()
                predict_subject(model, scan_from_array(data, affine), record)
                warm.append((time.perf_counter() - start) * 1e3)
            rows.append([device.type, path.stem, statistics.median(cold), statistics.median(warm)])
    print_table(["device", "model", "cold ms (load + predict)", "warm ms (predict)"], rows)


if __name__ == "__main__":
    main()
