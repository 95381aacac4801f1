"""Learning curves on fresh SYNTHETIC subjects: balanced accuracy (AD) or MAE
(brain age) against the number of training subjects, per method, beside the
Bayes limits of the test subjects.

Each training size takes the first N subjects of one fixed random order of
the training table (so the sizes are nested), splits them 80 / 20 into
training and validation rows (stratified), fits the EHR schema on the
training rows, trains each method with the config's settings (early
stopping on the validation rows) and predicts the test table. One row per
(method, size) is appended to ``OUT/rows.csv`` the moment it is finished,
with the test predictions in ``OUT/predictions/``; ``--resume`` skips what
is there, so a long run can be stopped and continued. ``OUT/learning_curve.md``
is rewritten after every row: the table with a 95 % bootstrap interval per
score and, for every size, the paired difference of the first method from
each other one.

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
import torch

from napari_hyperfusion.data.dataset import load_images, read_cohort
from napari_hyperfusion.infer.cohort import predict_views
from napari_hyperfusion.io.atomic import write_text_atomically
from napari_hyperfusion.io.csv_text import to_csv_text
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.devices import resolve_device
from napari_hyperfusion.synth.truth import limits_for
from napari_hyperfusion.train.evaluate import LOGISTIC, parse_method
from napari_hyperfusion.train.logistic import select_logistic
from napari_hyperfusion.train.loop import (
    TrainConfig,
    apply_overrides,
    base_schema,
    fit,
    grid_for,
    load_config_file,
    pretrain_embedding,
    selection_metric,
    split_indices,
    task_scores,
)
from napari_hyperfusion.train.run import network_config, prepare_data


def paired_bootstrap(
    y: np.ndarray, preds: list[np.ndarray], score, n: int = 1000, seed: int = 0
) -> np.ndarray:
    """Scores of each prediction on ``n`` resamples of the same test rows:
    ``[n, len(preds)]`` (a difference of two columns is a paired difference)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(preds)))
    for b in range(n):
        idx = rng.integers(0, len(y), len(y))
        out[b] = [score(y[idx], p[idx]) for p in preds]
    return out


def _score_fn(cfg: TrainConfig):
    spec = cfg.spec
    main = selection_metric(spec)
    return main, (lambda y, p: task_scores(spec, y, p)[main])


def report(out: Path, cfg: TrainConfig, y_test: np.ndarray, limits: dict[str, np.ndarray], command: str) -> str:
    """The Markdown table of every finished row, with bootstrap intervals."""
    rows = pd.read_csv(out / "rows.csv")
    main, score = _score_fn(cfg)
    names = list(limits) + [f"{r.method}@{r.size}" for r in rows.itertuples()]
    preds = list(limits.values()) + [np.load(out / "predictions" / f"{r.method}_{r.size}.npy") for r in rows.itertuples()]
    boot = paired_bootstrap(y_test, preds, score)
    lines = [
        f"{cfg.task} task, SYNTHETIC data: tested on {len(y_test)} fresh subjects; 95 % bootstrap intervals "
        f"(1,000 resamples of the test subjects).",
        "",
        f"| method | training subjects (train + validation) | {main} [95 % CI] | best epoch | seconds |",
        "|---|---|---|---|---|",
    ]
    for j, name in enumerate(limits):
        low, high = np.percentile(boot[:, j], [2.5, 97.5])
        lines.append(f"| {name} | - | {score(y_test, preds[j]):.3f} [{low:.3f}, {high:.3f}] | - | - |")
    for j, r in enumerate(rows.itertuples(), start=len(limits)):
        low, high = np.percentile(boot[:, j], [2.5, 97.5])
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
                    low, high = np.percentile(d, [2.5, 97.5])
                    lines.append(f"| {size} | {other} | {point:+.3f} [{low:+.3f}, {high:+.3f}] |")
    lines += ["", f"Produced by `{command}`."]
    text = "\n".join(lines) + "\n"
    write_text_atomically(out / "learning_curve.md", text)
    return text


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
    data.update(cohort=str(Path(args.train_cohort).resolve()), progress=False, resume=False)
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
    device = resolve_device(cfg.device)
    cohort = read_cohort(cfg.cohort, spec, base_schema(cfg.task), need_target=True, need_images=True)
    tests = read_cohort(args.test_cohort, spec, base_schema(cfg.task), need_target=True, need_images=True)
    if max(sizes) > len(cohort):
        print(f"the training table has {len(cohort)} subjects, fewer than {max(sizes)}", file=sys.stderr)
        return 2
    order = np.random.default_rng(args.seed).permutation(len(cohort))[: max(sizes)]
    need_images = any(parse_method(m, cfg).fusion != "tabular" for m in methods if m != LOGISTIC)
    grid = grid_for(cfg)
    t0 = time.perf_counter()
    pool = cohort.subset(order)
    views = load_images(pool, grid, jobs=cfg.jobs) if need_images else None
    test_views = load_images(tests, grid, jobs=cfg.jobs) if need_images else None
    print(f"images loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    limits = {
        name: np.asarray(fn(tests.table.reset_index(drop=True)))
        for name, fn in limits_for(cfg.task, tests.table.columns).items()
    }
    test_idx = np.arange(len(tests))
    for size in sizes:
        idx = np.arange(size)
        val_rel, train_rel = split_indices(pool.y[idx], [0.2], args.seed, spec.is_classification)
        train_idx, val_idx = idx[train_rel], idx[val_rel]
        schema = base_schema(cfg.task).fit(pool.subset(train_idx).table, source=f"first {size}: training rows")
        for method in methods:
            if (method, size) in done:
                continue
            run_cfg = replace(parse_method(method, cfg), seed=args.seed)
            mcfg, _ = network_config(run_cfg, pool, train_idx, schema)
            train = prepare_data(pool, views, schema, train_idx, mcfg)
            val = prepare_data(pool, views, schema, val_idx, mcfg)
            test = prepare_data(tests, test_views, schema, test_idx, mcfg)
            start = time.perf_counter()
            best_epoch = None
            if method == LOGISTIC:
                model = select_logistic(train.tabular, train.y, val.tabular, val.y, len(spec.classes))
                pred = model.predict_proba(test.tabular)
            else:
                torch.manual_seed(run_cfg.seed)
                net = build_model(mcfg)
                pretrain_embedding(net, train, val, run_cfg, device)
                result = fit(net, train, val, run_cfg, device)
                net.load_state_dict(result.best_state)
                pred = predict_views(net, test.views, test.tabular, spec.kind, device=device).values
                best_epoch = result.best_epoch
            seconds = time.perf_counter() - start
            np.save(out / "predictions" / f"{method}_{size}.npy", np.asarray(pred, dtype=np.float32))
            scores = task_scores(spec, tests.y, pred)
            row = {"method": method, "size": size, "n_train": len(train_idx), "n_val": len(val_idx),
                   "best_epoch": best_epoch, "seconds": round(seconds, 1), **scores}  # fmt: skip
            path = out / "rows.csv"
            text = to_csv_text(pd.DataFrame([row]), header=not path.exists())
            with path.open("a", newline="") as sink:
                sink.write(text)
            main_metric = selection_metric(spec)
            print(f"{method:12s} n={size:5d} test {main_metric} {scores[main_metric]:.3f} ({seconds:.0f} s)", flush=True)
            report(out, cfg, tests.y, limits, command)
    print(report(out, cfg, tests.y, limits, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
