"""Learning curves on fresh SYNTHETIC subjects: balanced accuracy (AD) or MAE
(brain age) against the number of training subjects, per method, beside the
Bayes limits of the test subjects.

Each training size N takes the first N subjects of one fixed random order of
the training table (so the sizes are nested) and writes them as a table of
their own (``OUT/subsets/first_N.csv``; the whole table when N is its size). Every network is then trained by
``hyperfusion train``'s own code on that table (validation 20 %, no test
split: the test subjects are the fresh ones), so each point is a complete
model file (``OUT/models/METHOD_N/model.safetensors``, with its training
statistics and weight-space map) that could ship as it is; it predicts the
test table as ``hyperfusion predict`` does (input gate included). The
logistic regression is fitted on exactly the same training and validation
rows. One row per (method, size) is appended to ``OUT/rows.csv`` the moment
it is finished, with the test predictions in ``OUT/predictions/``;
``--resume`` keeps what is there (and a network killed mid-training resumes
from its checkpoint), so a long run can be stopped and continued.
``OUT/learning_curve.md`` is rewritten after every row: the table with a
95 % bootstrap interval per score and, for every size, the paired
difference of the first method from each other one.

    python scripts/learning_curve.py models/configs/ad_hyperfusion.toml \\
        --train-cohort data/ad5000/cohort.csv --test-cohort data/ad_test1000/cohort.csv \\
        --sizes 500,1000,2000,5000 --methods hyperfusion,concat,logistic --out reports/learning_curve_ad --resume
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from napari_hyperfusion.data.dataset import read_cohort
from napari_hyperfusion.infer.cohort import predict_cohort
from napari_hyperfusion.io.atomic import write_text_atomically
from napari_hyperfusion.io.csv_text import to_csv_text
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.synth.truth import limits_for
from napari_hyperfusion.train.bootstrap import interval, main_score, paired_bootstrap
from napari_hyperfusion.train.evaluate import LOGISTIC, parse_method
from napari_hyperfusion.train.logistic import select_logistic
from napari_hyperfusion.train.loop import (
    TrainConfig,
    apply_overrides,
    base_schema,
    load_config_file,
    selection_metric,
    split_indices,
    task_scores,
)
from napari_hyperfusion.train.run import network_config, prepare_data, train_and_save


def report(out: Path, cfg: TrainConfig, y_test: np.ndarray, limits: dict[str, np.ndarray], command: str) -> str:
    """The Markdown table of every finished row, with bootstrap intervals."""
    rows = pd.read_csv(out / "rows.csv")
    main, score = main_score(cfg.spec)
    preds = list(limits.values()) + [
        np.load(out / "predictions" / f"{r.method}_{r.size}.npy") for r in rows.itertuples()
    ]
    boot = paired_bootstrap(y_test, preds, score)
    lines = [
        f"{cfg.task} task, SYNTHETIC data: tested on {len(y_test)} fresh subjects; 95 % bootstrap intervals "
        f"(1,000 resamples of the test subjects).",
        "",
        f"| method | training subjects (train + validation) | {main} [95 % CI] | best epoch | seconds |",
        "|---|---|---|---|---|",
    ]
    for j, name in enumerate(limits):
        low, high = interval(boot[:, j])
        lines.append(f"| {name} | - | {score(y_test, preds[j]):.3f} [{low:.3f}, {high:.3f}] | - | - |")
    for j, r in enumerate(rows.itertuples(), start=len(limits)):
        low, high = interval(boot[:, j])
        epoch = "-" if pd.isna(r.best_epoch) else int(r.best_epoch)
        lines.append(
            f"| {r.method} | {r.size} | {score(y_test, preds[j]):.3f} [{low:.3f}, {high:.3f}] | {epoch} | "
            f"{r.seconds:.0f} |"
        )
    methods = list(dict.fromkeys(rows.method))
    if len(methods) > 1:
        first = methods[0]
        lines += ["", f"Paired differences, {first} minus each other method at the same size ({main}):", "",
                  "| size | other method | difference [95 % CI] |", "|---|---|---|"]  # fmt: skip
        for size in sorted(set(rows["size"])):
            at = {r.method: i for i, r in enumerate(rows.itertuples(), start=len(limits)) if r.size == size}
            if first not in at:
                continue
            for other in methods[1:]:
                if other in at:
                    d = boot[:, at[first]] - boot[:, at[other]]
                    point = score(y_test, preds[at[first]]) - score(y_test, preds[at[other]])
                    low, high = interval(d)
                    lines.append(f"| {size} | {other} | {point:+.3f} [{low:+.3f}, {high:+.3f}] |")
    lines += ["", f"Produced by `{command}`."]
    text = "\n".join(lines) + "\n"
    write_text_atomically(out / "learning_curve.md", text)
    return text


def _subset_table(source: Path, order: np.ndarray, size: int, out: Path, image_column: str) -> Path:
    """The first ``size`` rows of ``order`` as a table of their own, image paths
    absolute; the whole table is used as it is (so the largest point is exactly
    ``hyperfusion train`` on it, with the config's validation split)."""
    if size == len(order):
        return source
    path = out / "subsets" / f"first_{size}{source.suffix}"
    if path.exists():
        return path
    sep = "\t" if source.suffix.lower() in (".tsv", ".tab") else ","
    table = pd.read_csv(source, sep=sep, dtype=str, keep_default_na=False).iloc[order[:size]]
    table[image_column] = [str((source.parent / v).resolve()) for v in table[image_column]]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, table.to_csv(sep=sep, index=False))
    return path


def _train_network(cfg: TrainConfig, folder: Path, command: str) -> tuple[Path, int | None, float]:
    """``hyperfusion train`` on ``cfg``: (model file, best epoch, seconds);
    a finished folder is reused, a killed one resumes from its checkpoint."""
    model = folder / "model.safetensors"
    if model.exists():
        return model, None, float("nan")
    resume = (folder / "checkpoint.pt").exists()
    run = replace(cfg, out=str(folder), resume=resume)
    start = time.perf_counter()
    outcome = train_and_save(run, command=command, overwrite=not resume)
    return outcome.model_path, outcome.fit.best_epoch, time.perf_counter() - start


def _logistic(cfg: TrainConfig, table: Path, tests) -> np.ndarray:
    """The EHR logistic regression on the rows ``hyperfusion train`` would use."""
    spec = cfg.spec
    cohort = read_cohort(table, spec, base_schema(cfg.task), need_target=True, need_images=False)
    val_idx, train_idx = split_indices(cohort.y, [cfg.val_fraction], cfg.seed, spec.is_classification)
    schema = base_schema(cfg.task).fit(cohort.subset(train_idx).table)
    mcfg, _ = network_config(replace(cfg, fusion="tabular"), cohort, train_idx, schema)
    train = prepare_data(cohort, None, schema, train_idx, mcfg)
    val = prepare_data(cohort, None, schema, val_idx, mcfg)
    test = prepare_data(tests, None, schema, np.arange(len(tests)), mcfg)
    model = select_logistic(train.tabular, train.y, val.tabular, val.y, len(spec.classes))
    return model.predict_proba(test.tabular)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a training config (its task and settings; cohort and out are replaced)")
    parser.add_argument("--train-cohort", required=True, help="the table the training subjects are drawn from")
    parser.add_argument("--test-cohort", required=True, help="fresh test subjects (a make-cohort table)")
    parser.add_argument("--sizes", default="500,1000,2000,5000", help="training sizes (train + validation rows)")
    parser.add_argument("--methods", default="hyperfusion,concat,logistic", help="methods, first is compared")
    parser.add_argument("--out", required=True, help="the output folder")
    parser.add_argument("--set", action="append", default=[], help="config overrides, e.g. --set epochs=30")
    parser.add_argument("--seed", type=int, default=0, help="the order and split seed")
    parser.add_argument("--resume", action="store_true", help="keep finished rows and add the missing ones")
    args = parser.parse_args(argv)
    command = "python scripts/learning_curve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data = apply_overrides(load_config_file(args.config), args.set)
    data.update(cohort=str(Path(args.train_cohort).resolve()), progress=False, resume=False, test_fraction=0.0,
                seed=args.seed)  # fmt: skip
    cfg = TrainConfig.from_dict(data)
    spec = cfg.spec
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for method in methods:
        parse_method(method, cfg)
    out = Path(args.out)
    if (out / "rows.csv").exists() and not args.resume:
        print(f"{out}/rows.csv exists: add --resume to continue it, or choose another --out", file=sys.stderr)
        return 2
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    done = set()
    if (out / "rows.csv").exists():
        done = {(r.method, int(r.size)) for r in pd.read_csv(out / "rows.csv").itertuples()}
    source = Path(args.train_cohort)
    pool = read_cohort(source, spec, base_schema(cfg.task), need_target=True, need_images=False)
    tests = read_cohort(args.test_cohort, spec, base_schema(cfg.task), need_target=True, need_images=False)
    if max(sizes) > len(pool):
        print(f"{source} has {len(pool)} subjects, fewer than {max(sizes)}", file=sys.stderr)
        return 2
    order = np.random.default_rng(args.seed).permutation(len(pool))
    limits = {
        name: np.asarray(fn(tests.table.reset_index(drop=True)))
        for name, fn in limits_for(cfg.task, tests.table.columns).items()
    }
    for size in sizes:
        table = _subset_table(source, order, size, out, spec.image_column)
        for method in methods:
            if (method, size) in done:
                continue
            start = time.perf_counter()
            best_epoch = None
            if method == LOGISTIC:
                pred = _logistic(cfg, table, tests)
            else:
                run_cfg = replace(parse_method(method, cfg), cohort=str(table.resolve()))
                model_path, best_epoch, _ = _train_network(run_cfg, out / "models" / f"{method}_{size}", command)
                model = load_model(model_path, device=cfg.device)
                frame = predict_cohort(model, args.test_cohort, jobs=cfg.jobs)
                columns = [f"prob_{c}" for c in spec.classes] if spec.classes else [c for c in frame if
                                                                                   c.startswith("predicted_")][:1]  # fmt: skip
                pred = frame[columns].to_numpy(float)
                if not np.isfinite(pred).all():
                    print(f"{method} n={size}: the input gate refused test scans; see {model_path}", file=sys.stderr)
                    return 2
            seconds = time.perf_counter() - start
            np.save(out / "predictions" / f"{method}_{size}.npy", np.asarray(pred, dtype=np.float32))
            scores = task_scores(spec, tests.y, pred)
            row = {"method": method, "size": size, "best_epoch": best_epoch, "seconds": round(seconds, 1), **scores}
            path = out / "rows.csv"
            text = to_csv_text(pd.DataFrame([row]), header=not path.exists())
            with path.open("a", newline="") as sink:
                sink.write(text)
            main_metric = selection_metric(spec)
            print(
                f"{method:12s} n={size:5d} test {main_metric} {scores[main_metric]:.3f} ({seconds:.0f} s)", flush=True
            )
            report(out, cfg, tests.y, limits, command)
    print(report(out, cfg, tests.y, limits, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
