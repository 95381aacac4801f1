"""Calibrate the input gate (napari_hyperfusion/data/input_qc.py) on
SYNTHETIC subjects and deliberately corrupted versions of them.

Every subject is measured as it is, after acquisition changes the models
must tolerate (voxel size 1-3 mm, blur, bias field, contrast, noise), after
small and large misregistrations (rotations about a random axis, shifts in
a random direction), mirrored left-right, with inverted contrast and
replaced by noise. For each variant it prints the gate's measures (median
and range over the subjects) and how many scans it passed, warned about and
refused, under the model's training statistics. A Markdown table.

    python scripts/calibrate_input_qc.py --ad-cohort data/ad_test1000/cohort.csv \
        --age-cohort data/ba_test24/participants.tsv --n 20
    python scripts/calibrate_input_qc.py --n 2        # the shipped samples only: quick
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import pandas as pd

from napari_hyperfusion.data import perturb
from napari_hyperfusion.data.input_qc import check_input
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.io.model_file import read_info
from napari_hyperfusion.resources import models_dir, sample_data_dir

EXPECTED = {"acquisition": "ok", "small misregistration": "any", "misaligned": "refuse",
            "degraded": "warn", "wrong input": "refuse", "undetectable": "(not detected)"}  # fmt: skip


def _axis(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def variants(rng: np.random.Generator) -> list[tuple[str, str, callable]]:
    """``(group, name, scan -> scan)``; random axes and directions per subject."""

    def rotate(deg):
        return lambda s: perturb.move(s, rotate_deg=tuple(_axis(rng) * deg))

    def shift(mm):
        return lambda s: perturb.move(s, shift_mm=tuple(_axis(rng) * mm))

    return [
        ("acquisition", "as generated", lambda s: s),
        ("acquisition", "1 mm voxels", lambda s: perturb.resample_iso(s, 1.0)),
        ("acquisition", "3 mm voxels", lambda s: perturb.resample_iso(s, 3.0)),
        ("acquisition", "blur FWHM 3 mm", lambda s: perturb.blur(s, 3.0)),
        ("acquisition", "bias field +-20 %", lambda s: perturb.bias_field(s, 0.2, rng)),
        ("acquisition", "contrast power 0.7 / 1.4", lambda s: perturb.gamma(s, 0.7 if rng.random() < 0.5 else 1.4)),
        ("acquisition", "noise 5 %", lambda s: perturb.rician_noise(s, 0.05, rng)),
        ("small misregistration", "rotated 3 deg", rotate(3)),
        ("small misregistration", "shifted 3 mm", shift(3)),
        ("small misregistration", "rotated 5 deg", rotate(5)),
        ("small misregistration", "shifted 5 mm", shift(5)),
        ("misaligned", "rotated 10 deg", rotate(10)),
        ("misaligned", "rotated 20 deg", rotate(20)),
        ("misaligned", "shifted 10 mm", shift(10)),
        ("misaligned", "shifted 20 mm", shift(20)),
        ("wrong input", "inverted contrast", perturb.invert_contrast),
        ("wrong input", "noise volume", lambda s: perturb.pure_noise(s, rng)),
        ("degraded", "noise 30 %", lambda s: perturb.rician_noise(s, 0.30, rng)),
        ("undetectable", "mirrored left-right", perturb.flip_lr),
    ]


def subjects(ad: str, age: str, n: int) -> list[str]:
    paths = []
    for table, column, sep in ((ad, "IMAGE", ","), (age, "image", "\t")):
        frame = pd.read_csv(table, sep=sep)
        folder = pd.io.common.stringify_path(table).rsplit("/", 1)[0] if "/" in table else "."
        paths += [f"{folder}/{p}" for p in frame[column].head(n)]
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ad-cohort", default=str(sample_data_dir() / "subjects.csv"))
    parser.add_argument("--age-cohort", default=str(sample_data_dir() / "brain_age" / "participants.tsv"))
    parser.add_argument("--n", type=int, default=5, help="subjects from each cohort (the first n rows)")
    parser.add_argument("--model", default=str(models_dir() / "ad_hyperfusion.safetensors"),
                        help="whose training statistics decide voxel size and sharpness warnings")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    trained = read_info(args.model).input_stats.get("scan")
    rows: dict[tuple[str, str], list] = {}
    for i, path in enumerate(subjects(args.ad_cohort, args.age_cohort, args.n)):
        scan = load_scan(path)
        for group, name, fn in variants(np.random.default_rng([args.seed, i])):
            rows.setdefault((group, name), []).append(check_input(fn(scan), trained))
    print("| group (expected) | variant | NCC median (range) | coverage median (min) | sharpness median (range) "
          "| ok / warn / refuse |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for (group, name), qcs in rows.items():
        ncc = np.array([q.ncc for q in qcs])
        cov = np.array([q.coverage for q in qcs])
        sharp = np.array([q.sharpness for q in qcs])
        verdicts = Counter(q.verdict for q in qcs)
        print(f"| {group} ({EXPECTED[group]}) | {name} | {np.median(ncc):.2f} ({ncc.min():.2f}-{ncc.max():.2f}) "
              f"| {np.median(cov):.2f} ({cov.min():.2f}) | {np.median(sharp):.2f} ({sharp.min():.2f}-{sharp.max():.2f}) "
              f"| {verdicts['ok']} / {verdicts['warn']} / {verdicts['refuse']} |")  # fmt: skip
    n = len(next(iter(rows.values())))
    print(f"\n{n} SYNTHETIC subjects x {len(rows)} variants; training statistics of {args.model}; "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
