"""Training throughput (subjects per second) of every architecture at the
shipped models' grids, through the real training loop.

    python benchmarks/bench_training.py [--device all|cpu|cuda] [--subjects 64] [--epochs 3]

Each architecture trains ``--epochs`` epochs on ``--subjects`` random
subjects (batch 16, augmentation on, Adam) through
:func:`napari_hyperfusion.train.loop.fit`; the first epoch is a warm-up and
throughput is taken over the rest. On CUDA the loop uses mixed precision.
AD: two 24 x 32 x 24 hippocampus views at 2 mm, 8 base filters; brain age:
40 x 48 x 40 at 4 mm. Ratios against the imaging-only model are measured
in the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import devices, machine_line, print_table

from napari_hyperfusion.data.schema import adni_schema, brain_age_schema
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.train.loop import TrainConfig, TrainingData, fit, model_config_for

ARCHS = [("ad", f) for f in ("hyperfusion", "imaging", "tabular", "concat", "film", "daft")] + [
    ("brain_age", f) for f in ("hyperfusion", "imaging", "tabular", "concat")
]


def fake_data(cfg: TrainConfig, n: int, n_features: int, seed: int) -> TrainingData:
    rng = np.random.default_rng(seed)
    views = rng.normal(size=(n, 2 if cfg.crop == "hippocampus" else 1, *cfg.grid_shape)).astype(np.float16)
    if cfg.task == "ad":
        tabular, y = rng.normal(size=(n, n_features)).astype(np.float32), rng.integers(0, 3, n)
    else:
        tabular = np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]
        y = rng.uniform(20, 90, n).astype(np.float32)
    return TrainingData(None if cfg.fusion == "tabular" else views, tabular, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all")
    parser.add_argument("--subjects", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (throughput is measured between epochs)")
    print(machine_line())
    for device in devices(args.device):
        rows, imaging = [], {}
        for task, fusion in ARCHS:
            cfg = TrainConfig(task=task, fusion=fusion, epochs=args.epochs, patience=args.epochs, progress=False,
                              device=device.type)  # fmt: skip
            schema = adni_schema() if task == "ad" else brain_age_schema()
            train = fake_data(cfg, args.subjects, schema.n_features, 0)
            val = fake_data(cfg, 16, schema.n_features, 1)
            torch.manual_seed(0)
            net = build_model(model_config_for(cfg, schema, train.y))
            stamps: list[float] = []
            fit(net, train, val, cfg, device, on_epoch=lambda row: stamps.append(time.perf_counter()))
            # epochs after the first (warm-up), validation of 16 subjects included
            throughput = args.subjects * (len(stamps) - 1) / (stamps[-1] - stamps[0])
            if fusion == "imaging":
                imaging[task] = throughput
            rows.append([task, fusion, "x".join(map(str, cfg.grid_shape)), throughput])
        table = [[*r, r[3] / imaging[r[0]]] for r in rows]
        print(f"\n{device.type}: training subjects per second (higher is better), ratio to imaging-only")
        print_table(["task", "fusion", "grid", "subjects/s", "vs imaging"], table)


if __name__ == "__main__":
    main()
