"""How much each shipped image model's output moves when the same brain is
acquired differently (SYNTHETIC subjects): other voxel sizes, blur, bias
field, contrast, noise and a small residual misregistration.

For each model and perturbation it prints the mean and the 90th percentile
of the absolute change over the subjects (against the scan as generated,
1.7-1.9 mm; the first row compares the 1 mm and 2 mm copies with each
other): in years for brain age, in
percentage points of the predicted class's probability for the AD models
(and of each label's probability for the risk model). A Markdown table.

    python scripts/check_robustness.py --ad-cohort data/ad_test1000/cohort.csv \
        --age-cohort data/ba_test24/participants.tsv --n 24
    python scripts/check_robustness.py --n 2 --models brain_age_hyperfusion   # quick
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_hyperfusion.data import perturb
from napari_hyperfusion.data.dataset import TASK_SPECS, read_cohort
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.resources import models_dir, sample_data_dir

MODELS = {
    "ad_hyperfusion": "ad",
    "ad_imaging": "ad",
    "ad_concat": "ad",
    "brain_age_hyperfusion": "brain_age",
    "risk_medfusion": "risk",
}
PAIR = "1 mm vs 2 mm voxels"
COHORT_TASK = {"ad": "ad", "brain_age": "brain_age", "risk": "ad"}  # the risk model reads the AD tables


def perturbations(seed: int) -> dict[str, callable]:
    def rng():
        return np.random.default_rng(seed)

    return {
        "1 mm voxels": lambda s: perturb.resample_iso(s, 1.0),
        "2 mm voxels": lambda s: perturb.resample_iso(s, 2.0),
        "3 mm voxels": lambda s: perturb.resample_iso(s, 3.0),
        "blur FWHM 2 mm": lambda s: perturb.blur(s, 2.0),
        "bias field +-20 %": lambda s: perturb.bias_field(s, 0.2, rng()),
        "contrast power 0.8": lambda s: perturb.gamma(s, 0.8),
        "contrast power 1.25": lambda s: perturb.gamma(s, 1.25),
        "noise 3 %": lambda s: perturb.rician_noise(s, 0.03, rng()),
        "misregistered 2 deg, 2 mm": lambda s: perturb.move(s, (2.0, 0.0, 0.0), (0.0, 2.0, 0.0)),
    }


def change(model, before, after) -> float:
    """Absolute change of the output: years, or probability points."""
    a, b = np.asarray(before.values), np.asarray(after.values)
    if model.info.task == "brain_age":
        return float(abs(b[0] - a[0]))
    if model.info.task == "ad_classification":
        top = int(np.argmax(a))
        return float(abs(b[top] - a[top]) * 100)
    return float(np.abs(b - a).mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ad-cohort", default=str(sample_data_dir() / "subjects.csv"))
    parser.add_argument("--age-cohort", default=str(sample_data_dir() / "brain_age" / "participants.tsv"))
    parser.add_argument("--n", type=int, default=5, help="subjects per cohort (the first n rows)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated shipped model names")
    parser.add_argument("--models-dir", default=str(models_dir()), help="where the model files are")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-file",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="score this file in NAME's place (e.g. a model trained with other settings); repeatable",
    )
    args = parser.parse_args()
    if any("=" not in item for item in args.model_file):
        parser.error("--model-file takes NAME=PATH")
    files = dict(item.split("=", 1) for item in args.model_file)
    for name, path in files.items():
        if name not in args.models.split(","):
            parser.error(f"--model-file {name}=...: {name} is not one of --models ({args.models})")
        if not Path(path).is_file():
            parser.error(f"--model-file {name}={path}: no such file")
    started = time.perf_counter()
    cohorts = {"ad": Path(args.ad_cohort), "brain_age": Path(args.age_cohort)}
    names = [m for m in args.models.split(",") if m]
    table: dict[str, dict[str, list[float]]] = {}
    units = {}
    for name in names:
        model = load_model(Path(files.get(name) or Path(args.models_dir) / f"{name}.safetensors"), "cpu")
        task = COHORT_TASK[MODELS[name]]
        cohort = read_cohort(cohorts[task], TASK_SPECS[task], model.info.schema, need_target=False)
        units[name] = "years" if model.info.task == "brain_age" else "points"
        rows = table.setdefault(name, {})
        for i in range(min(args.n, len(cohort))):
            scan = load_scan(cohort.image_paths[i])  # the gate is off: this measures the model, not the input
            record = cohort.table.iloc[i].to_dict()
            base = predict_subject(model, scan, record, gate=False)
            seen = {}
            for label, fn in perturbations(args.seed + i).items():
                seen[label] = predict_subject(model, fn(scan), record, gate=False)
                rows.setdefault(label, []).append(change(model, base, seen[label]))
            # the same brain stored at two resolutions: the pair the issue names, not each against the original
            rows.setdefault(PAIR, []).append(change(model, seen["1 mm voxels"], seen["2 mm voxels"]))
    labels = [PAIR, *perturbations(0)]
    shown = {n: f"{n} from {files[n]}" if n in files else n for n in names}  # a replaced file says so
    print(f"| perturbation | {' | '.join(f'{shown[n]} ({units[n]})' for n in names)} |")
    print(f"|---|{'---|' * len(names)}")
    for label in labels:
        cells = []
        for name in names:
            values = np.asarray(table[name][label])
            cells.append(f"{values.mean():.1f} (p90 {np.percentile(values, 90):.1f})")
        print(f"| {label} | {' | '.join(cells)} |")
    n = {name: len(next(iter(table[name].values()))) for name in names}
    print(f"\nmean absolute change (90th percentile); subjects per model: {n}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
