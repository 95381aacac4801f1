"""A simple baseline for the brain-age model: ridge regression on the voxels.

The network reads the whole brain on a 4 mm grid (40 x 48 x 40 voxels,
the model file's own preprocessing). A linear model on the same voxels,
plus sex, is the simplest learner that can read volumes from them (a
voxel's intensity falls as tissue gives way to CSF). It is fitted on the
model's own training rows (the config's split), its ridge penalty chosen
on the model's validation rows, and scored on fresh subjects: MAE in
years and the slope of the prediction on age, beside the model's.

    python scripts/brain_age_baseline.py models/configs/brain_age_hyperfusion.toml \
        --test-cohort data/ba_test200/participants.tsv --model models/brain_age_hyperfusion.safetensors

``--set KEY=VALUE`` changes the config as ``hyperfusion train --set`` does
(``--set cohort=data/ba1500/participants.tsv``: the rows another model
trained on).

SYNTHETIC data only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from napari_hyperfusion.data.dataset import load_images, read_cohort
from napari_hyperfusion.data.preprocess import ModelGrid
from napari_hyperfusion.errors import HyperFusionError
from napari_hyperfusion.infer.cohort import predict_views
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.train.loop import (
    TrainConfig,
    apply_overrides,
    base_schema,
    grid_for,
    load_config_file,
    split_indices,
)

PENALTIES = (1e1, 3e1, 1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)


def _features(views: np.ndarray, sex: np.ndarray) -> np.ndarray:
    """``[N, voxels + 1]``: every voxel of the first view, and sex (1 = male)."""
    flat = views[:, 0].reshape(len(views), -1).astype(np.float32)
    return np.hstack([flat, sex[:, None].astype(np.float32)])


def _sex(cohort) -> np.ndarray:
    return cohort.table["PTGENDER"].astype(str).str.upper().str.startswith("M").to_numpy(float)


def fit_ridge(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray):
    """Kernel-form ridge on standardised features (N << voxels), penalty
    chosen by validation MAE. Returns ``(predict, penalty, val_mae)``."""
    mu, sd = x.mean(0), x.std(0) + 1e-3
    z, z_val = (x - mu) / sd, (x_val - mu) / sd
    gram, cross = z @ z.T, z_val @ z.T
    best = None
    for penalty in PENALTIES:
        alpha = np.linalg.solve(gram + penalty * np.eye(len(gram)), y - y.mean())
        mae = float(np.abs(cross @ alpha + y.mean() - y_val).mean())
        if best is None or mae < best[2]:
            best = (alpha, penalty, mae)
    alpha, penalty, mae = best
    return (lambda x_new: ((x_new - mu) / sd) @ z.T @ alpha + y.mean()), penalty, mae


def _summary(name: str, y: np.ndarray, pred: np.ndarray) -> str:
    slope = float(np.polyfit(y, pred, 1)[0])
    return f"| {name} | {np.abs(pred - y).mean():.2f} | {slope:.2f} |"


def _model_rows(cfg: TrainConfig, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` rows exactly as ``hyperfusion train`` splits
    them (a test part, when the config has one, is left out of both)."""
    if cfg.test_fraction > 0:
        _, val_idx, train_idx = split_indices(y, [cfg.test_fraction, cfg.val_fraction], cfg.seed, False)
    else:
        val_idx, train_idx = split_indices(y, [cfg.val_fraction], cfg.seed, False)
    return train_idx, val_idx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the brain-age model's training config (its cohort, grid and split)")
    parser.add_argument("--test-cohort", required=True, help="fresh subjects (a make-cohort brain_age table)")
    parser.add_argument(
        "--model", action="append", default=[], help="a brain-age model file to score beside the baseline (repeatable)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="change the config (repeatable)"
    )
    args = parser.parse_args(argv)
    for path in [args.config, args.test_cohort, *args.model]:
        if not Path(path).is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    try:
        return _run(args)
    except HyperFusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    cfg = TrainConfig.from_dict(apply_overrides(load_config_file(args.config), args.set))
    if cfg.task != "brain_age":
        print(f"error: {args.config} is a {cfg.task} config, not a brain-age one", file=sys.stderr)
        return 2
    schema = base_schema("brain_age")
    train_all = read_cohort(cfg.cohort, cfg.spec, schema, need_target=True, need_images=True)
    test = read_cohort(args.test_cohort, cfg.spec, schema, need_target=True, need_images=True)
    train_idx, val_idx = _model_rows(cfg, train_all.y)
    grid = grid_for(cfg)
    views, test_views = load_images(train_all, grid, jobs=cfg.jobs), load_images(test, grid, jobs=cfg.jobs)
    x = _features(views, _sex(train_all))
    x_test = _features(test_views, _sex(test))
    y = train_all.y.astype(float)
    predict, penalty, val_mae = fit_ridge(x[train_idx], y[train_idx], x[val_idx], y[val_idx])
    lines = [
        f"Fresh subjects: {len(test)} of {Path(args.test_cohort).name}; trained on {len(train_idx)} rows of "
        f"{Path(cfg.cohort).name} (penalty {penalty:g} chosen on {len(val_idx)} validation rows, MAE {val_mae:.2f})",
        "",
        "| model | MAE (years) | slope of prediction on age |",
        "|---|---|---|",
        _summary("ridge regression on the 4 mm voxels + sex", test.y, predict(x_test)),
    ]
    for path in args.model:
        model = load_model(path, device="cpu")
        if model.info.task != "brain_age":
            raise HyperFusionError(f"{path} is a {model.info.task} model, not a brain-age one")
        own_grid = ModelGrid.from_dict(model.info.image)  # the file's own preprocessing
        own = test_views if own_grid == grid else load_images(test, own_grid, jobs=cfg.jobs)
        tabular = model.info.schema.encode_frame(test.table)
        pred = predict_views(model.net, own, tabular, "regression", device=model.device).values[:, 0]
        lines.append(_summary(path, test.y, pred))
    if penalty in (PENALTIES[0], PENALTIES[-1]):
        lines += ["", f"The penalty chosen ({penalty:g}) is at an end of the grid searched: widen PENALTIES."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
