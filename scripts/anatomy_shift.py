"""Do the shipped models hold up on brains whose shape they never saw?

Every subject of a ``make-cohort`` table is drawn twice: with the template's
anatomy (what the shipped models were trained on) and, from the same seed,
with ``--anatomy varied`` (each brain its own smooth shape; the records,
poses and nuisance are the same). Each model predicts both tables; the
report gives, per model, the score on each [95 % bootstrap interval], the
paired difference (varied minus template, the same resamples), how often
the answer changes, and how often the typicality check flags the image
(``ood_flags`` from the image's distance to the training scans).

    hyperfusion make-cohort --task ad --n 1000 --seed 2026 --out data/ad_test1000 --jobs 2
    hyperfusion make-cohort --task ad --n 1000 --seed 2026 --anatomy varied --out data/ad_test1000_varied --jobs 2
    python scripts/anatomy_shift.py --template data/ad_test1000/cohort.csv \
        --varied data/ad_test1000_varied/cohort.csv --model models/ad_hyperfusion.safetensors --out reports/anatomy

Predictions are kept in ``--out`` (one CSV per model and table) and reused
when the model file and table have not changed (``--resume``).
SYNTHETIC data only: the generator's truth decides the labels.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from napari_hyperfusion.data.dataset import TASK_SPECS, read_cohort
from napari_hyperfusion.errors import HyperFusionError
from napari_hyperfusion.infer.batch import predict_to_csv
from napari_hyperfusion.io.atomic import write_text_atomically
from napari_hyperfusion.io.model_file import load_model


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def _varied(table: pd.DataFrame) -> bool:
    return "ANATOMY" in table or "anatomy" in table


def check_pairs(template: pd.DataFrame, varied: pd.DataFrame) -> str | None:
    """Why the two tables cannot be compared (``None`` when they can): they
    must hold the same subjects with the same records, the first with the
    template anatomy and the second varied."""
    same = [c for c in template.columns if not c.upper().startswith(("REALISED_", "ANATOMY"))]
    if len(template) != len(varied) or not template[same].equals(varied.reindex(columns=same)):
        return (
            "the two tables do not hold the same subjects and records: make both with the same "
            "--task, --n and --seed, one of them with --anatomy varied"
        )
    if _varied(template):
        return "--template was made with --anatomy varied; give the table of the same seed without it"
    if not _varied(varied):
        return "--varied is not a table made with --anatomy varied (it has no ANATOMY column)"
    return None


def _predict(model_path: Path, table: Path, out: Path, resume: bool) -> pd.DataFrame:
    digest = hashlib.sha256(model_path.read_bytes() + table.read_bytes()).hexdigest()[:12]
    target = out / f"{model_path.stem}__{table.parent.name}__{digest}.csv"
    if not (resume and target.exists()):
        model = load_model(model_path, device="cpu")
        predict_to_csv(model, table, target, jobs=2, overwrite=True)
    return pd.read_csv(target)


def _score(kind: str, y: np.ndarray, values: np.ndarray, idx: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    if kind == "classification":
        return float(balanced_accuracy_score(y[idx], values[idx].argmax(1)))
    return float(np.abs(values[idx, 0] - y[idx]).mean())


def compare(model_path: Path, template: Path, varied: Path, out: Path, resume: bool, n_boot: int = 1000) -> dict:
    """One model's row of the report (see the module docstring)."""
    model = load_model(model_path, device="cpu")
    info = model.info
    task = {"ad_classification": "ad", "brain_age": "brain_age"}.get(info.task)
    if task is None:
        raise HyperFusionError(
            f"{model_path.name} is a {info.task} model: the generator's labels exist for AD and brain age"
        )
    spec = TASK_SPECS[task]
    if info.is_classifier and list(info.outputs) != list(spec.classes):
        raise HyperFusionError(f"{model_path.name} has outputs {info.outputs}, not {spec.classes}")
    y = read_cohort(template, spec, info.schema, need_target=True, need_images=False).y  # checked, aliases mapped
    preds = [_predict(model_path, t, out, resume) for t in (template, varied)]
    if info.is_classifier:
        kind = "classification"
        values = [p[[f"prob_{c}" for c in info.outputs]].to_numpy(float) for p in preds]
    else:
        kind = "regression"
        column = next(c for c in preds[0].columns if c.startswith("predicted_"))
        values = [p[[column]].to_numpy(float) for p in preds]
    rows = np.flatnonzero(np.isfinite(values[0]).all(1) & np.isfinite(values[1]).all(1))  # the gate refused none
    if info.is_classifier:
        changed = float(np.mean(values[0][rows].argmax(1) != values[1][rows].argmax(1)))
        shift = float(np.abs(values[0][rows] - values[1][rows]).max(1).mean())
    else:
        changed = float("nan")
        shift = float(np.abs(values[0][rows] - values[1][rows]).mean())
    rng = np.random.default_rng(0)
    boot = np.empty((n_boot, 2))
    for b in range(n_boot):
        idx = rows[rng.integers(0, len(rows), len(rows))]
        boot[b] = [_score(kind, y, v, idx) for v in values]
    point = [_score(kind, y, v, rows) for v in values]
    diff = boot[:, 1] - boot[:, 0]
    flagged = [float(p["ood_flags"].fillna("").astype(str).str.contains("image", case=False).mean()) for p in preds]
    typical = [float(np.nanmedian(p["image_typicality_pct"].to_numpy(float))) for p in preds]
    return {
        "model": str(model_path),
        "metric": "balanced accuracy" if kind == "classification" else "MAE (years)",
        "n": len(rows),
        "template": point[0],
        "template_ci": np.percentile(boot[:, 0], [2.5, 97.5]),
        "varied": point[1],
        "varied_ci": np.percentile(boot[:, 1], [2.5, 97.5]),
        "diff": point[1] - point[0],
        "diff_ci": np.percentile(diff, [2.5, 97.5]),
        "changed": changed,
        "shift": shift,
        "flagged": flagged,
        "typical": typical,
    }


def render(rows: list[dict], command: str) -> str:
    lines = [
        "# Shipped models on brains of unseen shape (SYNTHETIC data)",
        "",
        f"Command: `{command}`",
        "",
        "| model | metric | subjects | template anatomy | varied anatomy | varied minus template (paired) "
        "| answers changed | mean change of the output (largest class probability, or years) "
        "| image flagged: template / varied "
        "| median image typicality percentile: template / varied |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]"  # noqa: E731
        changed = "-" if np.isnan(r["changed"]) else f"{100 * r['changed']:.1f} %"
        lines.append(
            f"| {r['model']} | {r['metric']} | {r['n']} | {r['template']:.3f} {ci(r['template_ci'])} "
            f"| {r['varied']:.3f} {ci(r['varied_ci'])} | {r['diff']:+.3f} [{r['diff_ci'][0]:+.3f}, "
            f"{r['diff_ci'][1]:+.3f}] | {changed} | {r['shift']:.3f} "
            f"| {100 * r['flagged'][0]:.1f} % / {100 * r['flagged'][1]:.1f} % "
            f"| {r['typical'][0]:.0f} / {r['typical'][1]:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", required=True, type=Path, help="a make-cohort table (template anatomy)")
    parser.add_argument("--varied", required=True, type=Path, help="the same --task, --n, --seed with --anatomy varied")
    parser.add_argument("--model", action="append", required=True, type=Path, help="a model file (repeatable)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the predictions and report.md")
    parser.add_argument("--resume", action="store_true", help="reuse predictions of the same model and table")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    args = parser.parse_args(argv)
    if args.bootstrap < 1:
        parser.error("--bootstrap must be at least 1")
    for path in (args.template, args.varied, *args.model):
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    why = check_pairs(_read(args.template), _read(args.varied))
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        rows = [compare(m, args.template, args.varied, args.out, args.resume, args.bootstrap) for m in args.model]
    except HyperFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = render(rows, "python scripts/anatomy_shift.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    write_text_atomically(args.out / "report.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
