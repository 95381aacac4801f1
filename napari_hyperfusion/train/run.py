"""One training run from a :class:`TrainConfig` to a model file.

Reads and checks the cohort, splits it (stratified, seeded), fits the
schema on the training rows only, loads the images on the model grid,
trains with early stopping (optionally after pretraining the EHR
embedding), and writes into ``cfg.out``:

- ``model.safetensors``: the best weights with schema, grid, metrics,
  provenance and the training inputs' statistics (out-of-distribution flags
  and the input gate; written atomically, by rank 0 only);
- ``history.csv``: loss and validation metrics per epoch;
- ``train_config.json``: the resolved settings;
- ``checkpoint.pt``: the last epoch's state, for ``--resume``;
- ``risk_features.md`` / ``.csv`` (MedFusionNet): stage 1's tests.

For the multilabel risk task, MedFusionNet's stage 1 (risk-feature
selection) runs on the training rows only, and each label's decision
threshold is the one that maximises F1 on the validation rows.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..data.dataset import Cohort, CohortError, load_images, read_cohort
from ..data.notes import ENCODER_NAME, NOTE_DIM
from ..data.risk_features import select_risk_features
from ..data.schema import TabularSchema
from ..errors import TrainConfigError
from ..infer.cohort import predict_views
from ..infer.typicality import fit_input_stats
from ..infer.weight_map import fit_weight_map
from ..io.atomic import write_text_atomically
from ..io.csv_text import to_csv_text
from ..io.model_file import ModelInfo, save_model
from ..nn.build import build_model
from ..nn.devices import resolve_device
from .loop import (
    FitResult,
    TrainConfig,
    TrainingData,
    base_schema,
    data_digest,
    dist_info,
    fingerprint_of,
    fit,
    grid_for,
    init_distributed,
    model_config_for,
    pretrain_embedding,
    split_indices,
    task_scores,
)
from .metrics import choose_thresholds

__all__ = [
    "TrainOutcome",
    "train_and_save",
    "check_out_folder",
    "weight_map_targets",
    "RUN_FILES",
    "is_synthetic",
    "task_metrics",
    "network_config",
    "risk_selection_for",
]


@dataclass
class TrainOutcome:
    """What a run produced: the model file (``None`` on ranks > 0), the
    trained network (best weights), the fit and the held-out test metrics."""

    model_path: Path | None
    net: torch.nn.Module
    fit: FitResult
    test_metrics: dict[str, float]
    n_train: int
    n_val: int
    n_test: int


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_metrics(
    net: torch.nn.Module,
    data: TrainingData,
    cohort: Cohort,
    device: torch.device,
    thresholds: list[float] | None = None,
) -> dict[str, float]:
    """Metrics of ``net`` on ``data`` (views averaged)."""
    spec = cohort.spec
    pred = predict_views(net, data.views, data.tabular, spec.kind, device=device)  # type: ignore[arg-type]
    return task_scores(spec, data.y, pred.values, thresholds)


def prepare_data(
    cohort: Cohort, views: np.ndarray | None, schema: TabularSchema, index: np.ndarray, config=None
) -> TrainingData:
    part = cohort.subset(index)
    return TrainingData.from_cohort(part, schema, None if views is None else views[index], config)


def risk_selection_for(cfg: TrainConfig, cohort: Cohort, train_idx: np.ndarray, schema: TabularSchema):
    """Stage 1 on the training rows only (``None`` unless MedFusionNet)."""
    if cfg.fusion != "medfusion":
        return None
    rows = cohort.subset(train_idx)
    return select_risk_features(
        rows.table, rows.y, cohort.spec.labels, schema, top_n=cfg.risk_top_n, alpha=cfg.risk_alpha,
        correction=cfg.risk_correction, fitted_on=f"{len(train_idx)} training rows of {cohort.source.name}",
    )  # fmt: skip


def network_config(cfg: TrainConfig, cohort: Cohort, train_idx: np.ndarray, schema: TabularSchema):
    """``(ModelConfig, RiskSelection or None)`` for a run: stage 1's kept
    columns and the note's width go into MedFusionNet's config."""
    selection = risk_selection_for(cfg, cohort, train_idx, schema)
    columns = selection.columns(schema) if selection is not None else None
    note_dim = NOTE_DIM if cfg.fusion == "medfusion" and cfg.use_note else 0
    return model_config_for(cfg, schema, cohort.y[train_idx], columns, note_dim), selection


def is_synthetic(cohort: Cohort) -> bool:
    """True when the table says every row is synthetic (our generator's
    ``SYNTHETIC`` / ``synthetic`` column); real data has no such column."""
    for column in ("SYNTHETIC", "synthetic"):
        if column in cohort.table:
            return bool(cohort.table[column].astype(str).str.lower().isin(["true", "1"]).all())
    return False


RUN_FILES = ("model.safetensors", "history.csv", "train_config.json", "checkpoint.pt",
             "risk_features.md", "risk_features.csv")  # fmt: skip


def weight_map_targets(spec, y: np.ndarray) -> tuple[list, str, str]:
    """``(targets, target_kind, target_name)`` for :func:`fit_weight_map`:
    the class name, the target in its unit, or the number of positive labels."""
    if spec.is_multilabel:
        return [float(v) for v in np.asarray(y).sum(1)], "number", "positive risk labels"
    if spec.is_classification:
        return [spec.classes[int(v)] for v in y], "class", "diagnosis"
    return [float(v) for v in y], "number", f"{spec.outputs[0]} ({spec.unit})" if spec.unit else spec.outputs[0]


def check_out_folder(out: Path, resume: bool, overwrite: bool, rank: int = 0) -> None:
    """Refuse to mix two runs in one folder.

    A new run into a folder that holds an earlier run's files would leave a
    model from one run beside the history of another. ``resume`` needs the
    earlier run's checkpoint; ``overwrite`` removes the earlier run's files
    (rank 0) and starts again, except its model, which the new one replaces
    atomically when it is written (a killed run loses no model).

    Raises:
        TrainConfigError: the folder holds a run and neither was asked for,
            or ``resume`` without a checkpoint.
    """
    found = [name for name in RUN_FILES if (out / name).exists()]
    if resume and overwrite:
        raise TrainConfigError("--resume continues the run in 'out' and --overwrite discards it: choose one")
    if resume:
        if not (out / "checkpoint.pt").exists():
            raise TrainConfigError(f"nothing to resume: {out / 'checkpoint.pt'} does not exist (drop --resume)")
        return
    if found and not overwrite:
        raise TrainConfigError(
            f"{out} holds an earlier run ({', '.join(found)}); choose another 'out' (--set out=PATH), "
            "continue that run with --resume, or replace it with --overwrite"
        )
    if found and rank == 0:
        # the earlier model stays usable until this run writes its own (atomically, at the end): a run
        # killed before then leaves it in place; the rest of the earlier run goes now
        for name in found:
            if name != "model.safetensors":
                (out / name).unlink()
        if "model.safetensors" in found:
            print(
                f"--overwrite: the earlier {out / 'model.safetensors'} is kept until this run writes its own",
                file=sys.stderr,
            )


def train_and_save(cfg: TrainConfig, command: str = "", overwrite: bool = False) -> TrainOutcome:
    """Run ``cfg`` end to end; see the module docstring for what is written.
    ``out`` must hold no earlier run unless ``cfg.resume`` (continue it) or
    ``overwrite`` (replace it): :func:`check_out_folder`."""
    if not cfg.cohort:
        raise CohortError("no cohort table given (set 'cohort' in the config or --set cohort=PATH)")
    if not cfg.out:
        raise CohortError("no output folder given (set 'out' in the config or --set out=PATH)")
    out = Path(cfg.out)
    device = init_distributed(resolve_device(cfg.device))
    rank, world = dist_info()
    check_out_folder(out, cfg.resume, overwrite, rank)
    spec = cfg.spec
    uses_image = cfg.fusion != "tabular"
    cohort = read_cohort(cfg.cohort, spec, base_schema(cfg.task), need_target=True, need_images=uses_image)
    assert cohort.y is not None
    fractions = [cfg.test_fraction, cfg.val_fraction] if cfg.test_fraction > 0 else [cfg.val_fraction]
    parts = split_indices(cohort.y, fractions, cfg.seed, spec.is_classification)
    test_idx, val_idx, train_idx = parts if cfg.test_fraction > 0 else [np.array([], dtype=np.int64), *parts]
    train_rows = cohort.subset(train_idx)
    schema = base_schema(cfg.task).fit(
        train_rows.table, source=f"{len(train_idx)} training rows of {cohort.source.name}"
    )

    mcfg, selection = network_config(cfg, cohort, train_idx, schema)
    views = None
    if uses_image:
        grid = grid_for(cfg)
        bar = None
        if cfg.progress and rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=len(cohort), desc="load scans", unit="scan", leave=False)
        views = load_images(cohort, grid, jobs=cfg.jobs, progress=(lambda i, n: bar.update(1)) if bar else None)
        if bar:
            bar.close()
    train = prepare_data(cohort, views, schema, train_idx, mcfg)
    val = prepare_data(cohort, views, schema, val_idx, mcfg)

    torch.manual_seed(cfg.seed)
    net = build_model(mcfg)
    out.mkdir(parents=True, exist_ok=True)
    pretrain = pretrain_embedding(net, train, val, cfg, device)
    train_ids, val_ids = [cohort.ids[i] for i in train_idx], [cohort.ids[i] for i in val_idx]
    fingerprint = fingerprint_of(cfg, train_ids, val_ids, data_digest(train, val))
    result = fit(net, train, val, cfg, device, checkpoint=out / "checkpoint.pt", fingerprint=fingerprint,
                 desc=f"train {cfg.fusion}")  # fmt: skip
    net.load_state_dict(result.best_state)
    thresholds: list[float] = []
    if spec.is_multilabel:
        val_pred = predict_views(net, val.views, val.tabular, spec.kind, device=device)
        thresholds = choose_thresholds(val.y, val_pred.values)
        result.val_metrics = task_scores(spec, val.y, val_pred.values, thresholds)
    test_metrics: dict[str, float] = {}
    if len(test_idx):
        test_data = prepare_data(cohort, views, schema, test_idx, mcfg)
        test_metrics = task_metrics(net, test_data, cohort, device, thresholds or None)

    model_path = None
    if rank == 0:
        # what "typical input" means for this model: the training rows only (infer/typicality.py)
        scan_sample = (
            [cohort.image_paths[i] for i in train_idx[:: max(1, len(train_idx) // 60)]] if uses_image else None
        )
        input_stats = fit_input_stats(
            net, schema, train_rows.table, train.views, device, scans=scan_sample,
            source=f"{len(train_idx)} training rows of {cohort.source.name}",
        )  # fmt: skip
        wmap = fit_weight_map(net, train.tabular, *weight_map_targets(spec, train.y),
                              fitted_on=f"{len(train_idx)} training rows of {cohort.source.name}")  # fmt: skip
        if wmap is not None:
            input_stats["weight_map"] = wmap.to_dict()
        metrics: dict[str, Any] = {
            "validation": result.val_metrics,
            "best_epoch": result.best_epoch,
            "n_train": len(train_idx),
            "n_validation": len(val_idx),
            "split_seed": cfg.seed,
        }
        if test_metrics:
            metrics.update({"test": test_metrics, "n_test": len(test_idx)})
        if pretrain is not None:
            metrics["pretrain_validation"] = pretrain.val_metrics
        info = ModelInfo(
            name=cfg.name or f"{cfg.fusion} {spec.name} model (synthetic data)",
            task=spec.model_task,
            config=mcfg,
            schema=schema,
            outputs=spec.outputs,
            output_unit=spec.unit,
            description=f"{cfg.fusion} on {mcfg.backbone}, trained by 'hyperfusion train' on {cohort.source.name}",
            synthetic_data=is_synthetic(cohort),
            image=grid_for(cfg).to_dict() if uses_image else {},
            metrics=metrics,
            thresholds=thresholds,
            feature_selection=selection.to_dict() if selection is not None else {},
            note_encoder=ENCODER_NAME if mcfg.uses_note else "",
            input_stats=input_stats,
            provenance={
                "trained_with": f"napari-hyperfusion {__version__}, torch {torch.__version__}",
                "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
                "cohort": cohort.source.name,
                "cohort_sha256": _sha256(cohort.source),
                "command": command,
                "device": f"{device.type} x {world}",
                "platform": platform.platform(terse=True),
                "train_config": {k: v for k, v in cfg.to_dict().items() if k not in ("cohort", "out")},
            },
        )
        dtype = torch.float16 if cfg.save_dtype == "float16" else None
        model_path = save_model(out / "model.safetensors", net.cpu(), info, dtype=dtype)
        net.to(device)
        history = pd.DataFrame(result.history)
        write_text_atomically(out / "history.csv", to_csv_text(history))
        write_text_atomically(out / "train_config.json", json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        if selection is not None:
            write_text_atomically(out / "risk_features.md", selection.to_markdown())
            write_text_atomically(out / "risk_features.csv", to_csv_text(selection.to_frame(), float_format=None))
    return TrainOutcome(model_path, net, result, test_metrics, len(train_idx), len(val_idx), len(test_idx))
