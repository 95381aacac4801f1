"""Training one model: configuration, data split, the loop, early stopping,
resuming and distributed data parallel.

The loop is the same on one CPU, one GPU (mixed precision on CUDA) and
several processes launched by ``torchrun`` (gloo on CPU, NCCL on CUDA).
It is deterministic and independent of the number of processes: each
optimizer step takes the same ``batch_size`` subjects in the same
micro-batches, and every micro-batch seeds dropout and augmentation from
``(seed, epoch, micro-batch)``, so two processes compute the gradient one
process computes with ``accumulate=2`` (up to float summation order and the
batch-norm running statistics, which DDP takes from rank 0).

Preprocessing statistics (the schema's normalisation and filling, the
regression target's scale) come from the training rows only.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data.dataset import TASK_SPECS, Cohort, TaskSpec
from ..data.perturb import augment_view
from ..data.preprocess import ModelGrid
from ..data.schema import TabularSchema, adni_schema, brain_age_schema
from ..errors import TrainConfigError
from ..infer.cohort import predict_views
from ..io.atomic import atomic_write
from ..nn.base import FusionNet
from ..nn.build import build_model
from ..nn.config import ModelConfig, brain_age_hyper_sites
from ..nn.devices import dist_info, init_distributed  # noqa: F401  (re-exported: train.run, tests)
from ..nn.hyper import auto_form_override
from .metrics import classification_metrics, multilabel_metrics, regression_metrics

__all__ = [
    "TrainConfig",
    "TrainConfigError",
    "TrainingData",
    "FitResult",
    "load_config_file",
    "apply_overrides",
    "split_indices",
    "kfold_indices",
    "model_config_for",
    "grid_for",
    "base_schema",
    "fit",
    "dist_info",
    "task_scores",
    "selection_metric",
    "multilabel_loss",
    "LOSSES",
    "LR_SCHEDULES",
    "lr_at_epoch",
]


# Task defaults: the AD models read the paper's hippocampus crops at 2 mm
# (48 x 64 x 48 mm, which holds the hippocampus with a margin); brain age
# reads the whole brain at 4 mm. Both sizes are chosen so that the shipped
# models train on the 2-core CPU in minutes.
_TASK_DEFAULTS = {
    "ad": {"crop": "hippocampus", "grid_shape": [24, 32, 24], "spacing_mm": 2.0},
    "brain_age": {"crop": "whole", "grid_shape": [40, 48, 40], "spacing_mm": 4.0},
    "risk": {"crop": "hippocampus", "grid_shape": [24, 32, 24], "spacing_mm": 2.0},
}
LOSSES = ("weighted_bce", "bce", "asl")
LR_SCHEDULES = ("constant", "cosine")
# settings added after files were trained: left out of a checkpoint's
# fingerprint at their defaults, so an older run still resumes
_LATER_SETTINGS = {"lr_schedule": "constant", "augment_rotate_deg": 0.0}


@dataclass
class TrainConfig:
    """Everything one training run needs; every key can come from a TOML or
    YAML file and be overridden on the command line (``--set key=value``).

    Units: ``lr`` per step, ``spacing_mm`` in mm, fractions in [0, 1),
    ``grad_clip`` the largest gradient norm (0: no clipping)."""

    task: str = "ad"
    cohort: str = ""
    out: str = ""
    name: str = ""
    # model
    fusion: str = "hyperfusion"
    hyper_sites: list[str] | None = None
    base_filters: int = 8
    dropout: float = 0.2
    emb_dim: int | None = None
    block_style: str = "ours"  # "paper": the HyperFusion authors' ResNet layout (docs/models.md)
    head_activation: str = "relu"  # or "leaky_relu": the head's units cannot all go off (docs/models.md)
    modulation_style: str = "ours"  # FiLM/DAFT: "paper" (the authors' baseline) or "ai-med" (DAFT as published)
    rescale_generators: bool = True  # hyperfan-in again after tabular pretraining
    crop: str | None = None
    grid_shape: list[int] | None = None
    spacing_mm: float | None = None
    # optimisation
    epochs: int = 30
    batch_size: int = 16
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 8
    grad_clip: float = 0.0
    lr_schedule: str = "constant"  # or "cosine": lr down to lr / 100 over ``epochs`` (lr_at_epoch)
    pretrain_tabular_epochs: int = 0
    augment: bool = True
    augment_rotate_deg: float = 0.0  # > 0: also rotate up to this per axis, shift by fractions of a voxel
    class_weights: bool = True
    select_on: str = "metric"  # the best epoch by the task's metric or by the (class-weighted) validation loss
    # multilabel risk task (MedFusionNet's stage 1, the note, the loss)
    loss: str = "weighted_bce"
    risk_top_n: int = 3
    risk_alpha: float = 0.05
    risk_correction: str = "fdr_bh"
    use_note: bool = True
    note_dropout: float = 0.2
    # data
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 0
    # machine
    device: str = "auto"
    amp: bool = True
    jobs: int = 2
    resume: bool = False
    save_dtype: str = "float16"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASK_SPECS:
            raise TrainConfigError(f"task must be one of {', '.join(TASK_SPECS)}, got {self.task!r}")
        for key, value in _TASK_DEFAULTS[self.task].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.accumulate >= 1, "accumulate must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 turns clipping off)"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}"),
            (0 <= self.augment_rotate_deg <= 15, "augment_rotate_deg must be between 0 and 15 degrees"),
            (0 < self.val_fraction < 1, "val_fraction must be between 0 and 1"),
            (0 <= self.test_fraction < 1 - self.val_fraction, "test_fraction must be >= 0 and leave training rows"),
            (self.pretrain_tabular_epochs >= 0, "pretrain_tabular_epochs must be >= 0"),
            (self.save_dtype in ("float16", "float32"), "save_dtype must be float16 or float32"),
            (self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}"),
            (self.risk_top_n >= 1, "risk_top_n must be >= 1"),
            (0 < self.risk_alpha <= 1, "risk_alpha must be in (0, 1]"),
            (
                self.risk_correction in ("fdr_bh", "bonferroni", "none"),
                "risk_correction must be fdr_bh, bonferroni or none",
            ),
            (0 <= self.note_dropout < 1, "note_dropout must be in [0, 1)"),
            (self.select_on in ("metric", "loss"), "select_on must be metric or loss"),
            (self.fusion != "medfusion" or self.task == "risk", "fusion medfusion is for the multilabel risk task"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(message)

    @property
    def spec(self) -> TaskSpec:
        return TASK_SPECS[self.task]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise TrainConfigError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(known)}")
        clean = {}
        for key, value in data.items():
            default = known[key].default
            if isinstance(default, bool) and not isinstance(value, bool):
                raise TrainConfigError(f"{key} must be true or false, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TrainConfigError(f"{key} must be a whole number, got {value!r}")
            if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise TrainConfigError(f"{key} must be a number, got {value!r}")
            if isinstance(default, str) and not isinstance(value, str):
                raise TrainConfigError(f"{key} must be text, got {value!r}")
            clean[key] = float(value) if isinstance(default, float) else value
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a flat TOML (``.toml``) or YAML (``.yaml``/``.yml``) file."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"{path}: no such config file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise TrainConfigError(f"{path.name}: use a .toml or .yaml config file")
    except TrainConfigError:
        raise
    except Exception as err:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise TrainConfigError(f"{path.name} is not valid {path.suffix[1:].upper()}: {err}") from None
    if not isinstance(data, dict) or any(isinstance(v, dict) for v in data.values()):
        raise TrainConfigError(f"{path.name}: expected flat 'key = value' settings without sections")
    # relative paths in a config file are relative to the file
    for key in ("cohort", "out"):
        if isinstance(data.get(key), str) and data[key] and not Path(data[key]).is_absolute():
            data[key] = str((path.parent / data[key]).resolve())
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["epochs=5", "fusion='film'"]`` onto ``data``; values are TOML
    (bare words are taken as text)."""
    import tomllib

    out = dict(data)
    for item in overrides:
        if "=" not in item:
            raise TrainConfigError(f"override {item!r} is not key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out


def base_schema(task: str) -> TabularSchema:
    return brain_age_schema() if task == "brain_age" else adni_schema()


def grid_for(cfg: TrainConfig) -> ModelGrid:
    return ModelGrid(crop=cfg.crop, shape=tuple(cfg.grid_shape), spacing_mm=cfg.spacing_mm)  # type: ignore[arg-type]


def model_config_for(
    cfg: TrainConfig,
    schema: TabularSchema,
    y_train: np.ndarray,
    tabular_columns: list[int] | None = None,
    note_dim: int = 0,
) -> ModelConfig:
    """The network config for ``cfg``; a regressor's output scale and shift
    are the training targets' SD and mean (training rows only). MedFusionNet
    takes stage 1's ``tabular_columns`` and the note's ``note_dim``."""
    common: dict[str, Any] = dict(
        fusion=cfg.fusion, tabular_dim=schema.n_features, input_shape=tuple(cfg.grid_shape),
        base_filters=cfg.base_filters, dropout=cfg.dropout, head_activation=cfg.head_activation,
    )  # fmt: skip
    if cfg.block_style != "ours":
        common["block_style"] = cfg.block_style
    if cfg.modulation_style != "ours":
        common["modulation_style"] = cfg.modulation_style
    if cfg.emb_dim is not None:
        common["emb_dim"] = cfg.emb_dim
    if cfg.hyper_sites is not None:
        common["hyper_sites"] = tuple(cfg.hyper_sites)
    try:
        if cfg.task == "risk" and cfg.fusion == "medfusion":
            return ModelConfig(
                backbone="medfusion", n_outputs=len(cfg.spec.labels), tabular_columns=tabular_columns,
                note_dim=note_dim, **common,
            )  # fmt: skip
        if cfg.task in ("ad", "risk"):
            return ModelConfig(backbone="preact_resnet", n_outputs=len(cfg.spec.outputs), **common)
        common.setdefault("hyper_sites", brain_age_hyper_sites())
        common.setdefault("emb_dim", 1)
        return ModelConfig(
            backbone="brain_age_cnn", n_outputs=1, embedding="fill",
            output_shift=float(np.mean(y_train)), output_scale=float(max(np.std(y_train), 1e-3)), **common,
        )  # fmt: skip
    except ValueError as err:
        raise TrainConfigError(str(err)) from None


# -- splits ------------------------------------------------------------------
def _strata(y: np.ndarray, classification: bool) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:  # multilabel: stratify by the pattern of labels
        return (y.astype(np.int64) * (2 ** np.arange(y.shape[1]))).sum(1)
    if classification:
        return y
    # regression: stratify by quintile so every split spans the age range
    edges = np.quantile(y, [0.2, 0.4, 0.6, 0.8])
    return np.searchsorted(edges, y)


def split_indices(y: np.ndarray, fractions: list[float], seed: int, classification: bool) -> list[np.ndarray]:
    """Stratified random split of ``range(len(y))`` into ``len(fractions) +
    1`` parts: one per fraction, the rest last. Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    strata = _strata(y, classification)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        start = 0
        for p, frac in enumerate(fractions):
            count = int(round(frac * len(idx)))
            parts[p].extend(idx[start : start + count])
            start += count
        parts[-1].extend(idx[start:])
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def kfold_indices(y: np.ndarray, k: int, seed: int, classification: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified ``k``-fold: ``[(train, val), ...]``, each row in exactly
    one validation fold."""
    rng = np.random.default_rng(seed)
    strata = _strata(y, classification)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(int(i))
        offset += len(idx)
    everything = np.arange(len(y))
    out = []
    for f in folds:
        val = np.sort(np.asarray(f, dtype=np.int64))
        out.append((np.setdiff1d(everything, val), val))
    return out


# -- data --------------------------------------------------------------------
@dataclass
class TrainingData:
    """Subjects ready for the network: ``views [N, V, D, H, W]`` float16
    (``None`` for the tabular-only model), ``tabular [N, T]`` float32 and
    ``y [N]`` (class index, or target in its unit)."""

    views: np.ndarray | None
    tabular: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def from_cohort(
        cls, cohort: Cohort, schema: TabularSchema, views: np.ndarray | None, config: ModelConfig | None = None
    ) -> TrainingData:
        """``tabular`` is the network's whole non-image input (with the note
        for a ``config`` that reads one)."""
        from ..data.model_inputs import encode_table

        assert cohort.y is not None
        if config is not None and config.uses_note:
            return cls(views=views, tabular=encode_table(config, schema, cohort.table, cohort.notes), y=cohort.y)
        return cls(views=views, tabular=schema.encode_frame(cohort.table), y=cohort.y)


def _augment(
    volume: np.ndarray, rng: np.random.Generator, flip: bool, spacing_mm: float, rotate_deg: float = 0.0
) -> np.ndarray:
    """What acquisitions vary (:func:`~napari_hyperfusion.data.perturb.augment_view`:
    blur, bias field, contrast, noise), then a residual misregistration, an
    optional left-right flip and an intensity gain and offset of +-10 %.

    The misregistration is a shift of up to 2 voxels per axis: whole voxels
    (edge planes repeated) when ``rotate_deg`` is 0, as the earlier files were
    trained; otherwise a rigid motion resampled linearly, a rotation of up to
    ``rotate_deg`` about each axis and a shift drawn in fractions of a voxel
    (a 2 mm shift is half a voxel of the 4 mm brain-age grid)."""
    out = augment_view(volume, rng, spacing_mm)
    if rotate_deg > 0:
        out = _rigid_motion(out, rng.uniform(-rotate_deg, rotate_deg, 3), rng.uniform(-2.0, 2.0, 3))
    else:
        for axis in range(3):
            shift = int(rng.integers(-2, 3))
            if shift:
                index = np.clip(np.arange(out.shape[axis]) - shift, 0, out.shape[axis] - 1)
                out = np.take(out, index, axis=axis)
    if flip and rng.random() < 0.5:
        out = out[::-1]
    return out * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)


def _rigid_motion(volume: np.ndarray, angles_deg: np.ndarray, shift_vox: np.ndarray) -> np.ndarray:
    """``volume`` rotated about its centre (degrees about each array axis)
    and shifted (voxels), linear interpolation, edges repeated."""
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    centre = (np.asarray(volume.shape, dtype=float) - 1) / 2
    # affine_transform maps output voxels to input voxels: the inverse motion
    offset = centre - rot.T @ (centre + shift_vox)
    return ndimage.affine_transform(volume, rot.T, offset=offset, order=1, mode="nearest").astype(np.float32)


def _batch_images(
    data: TrainingData, index: np.ndarray, cfg: TrainConfig, epoch: int, training: bool
) -> torch.Tensor | None:
    """Images of ``index`` as ``[B, 1, D, H, W]``: one view per subject, drawn
    at random in training (from the subject's own seeded generator)."""
    if data.views is None:
        return None
    batch = []
    for i in index:
        rng = np.random.default_rng([cfg.seed, epoch, int(i)])
        view = int(rng.integers(data.views.shape[1])) if training else 0
        volume = data.views[i, view].astype(np.float32)
        if training and cfg.augment:
            volume = _augment(volume, rng, cfg.crop == "whole", cfg.spacing_mm, cfg.augment_rotate_deg)
        batch.append(np.ascontiguousarray(volume))
    return torch.from_numpy(np.stack(batch))[:, None]


# -- distributed -------------------------------------------------------------
# -- the loop ----------------------------------------------------------------
@dataclass
class FitResult:
    """The best state (by the validation metric) and the per-epoch history."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_metric: float
    val_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    generator_rescale: dict[str, Any] | None = None  # pretraining: the hyperfan-in re-scaling it applied


def task_scores(
    spec: TaskSpec, y: np.ndarray, values: np.ndarray, thresholds: list[float] | None = None
) -> dict[str, float]:
    """The task's metrics of predictions ``values [N, K]`` (probabilities,
    or ``[N, 1]`` in the target's unit) against ``y [N]`` (``[N, L]`` for
    multilabel, decided at ``thresholds``)."""
    if spec.is_multilabel:
        return multilabel_metrics(y, values, spec.labels, thresholds)
    if spec.is_classification:
        return classification_metrics(y, values, spec.classes)
    return regression_metrics(y, np.asarray(values)[:, 0])


def selection_metric(spec: TaskSpec) -> str:
    """The validation metric that picks the best epoch (and the evaluation's
    headline): balanced accuracy, macro AUC (multilabel) or MAE."""
    return {"multiclass": "balanced_accuracy", "multilabel": "auc_macro"}.get(spec.kind, "mae")


def _score(
    net: FusionNet, data: TrainingData, spec: TaskSpec, device: torch.device, weights: torch.Tensor | None = None
) -> tuple[float, dict]:
    """Validation loss and metrics (see :func:`selection_metric`); a
    classifier's loss is weighted by the training loss's class ``weights``,
    so that it measures what balanced accuracy rewards."""
    pred = predict_views(net, data.views, data.tabular, spec.kind, batch_size=32, device=device)
    if spec.is_multilabel:
        p = np.clip(pred.values, 1e-7, 1 - 1e-7)
        loss = float(-(data.y * np.log(p) + (1 - data.y) * np.log(1 - p)).mean())
    elif spec.is_classification:
        probs = np.clip(pred.values, 1e-7, 1.0)
        nll = -np.log(probs[np.arange(len(data.y)), data.y])
        w = np.ones(len(data.y)) if weights is None else weights.detach().cpu().numpy()[data.y]
        loss = float((w * nll).sum() / w.sum())
    else:
        loss = float((((pred.values[:, 0] - data.y) / net.config.output_scale) ** 2).mean())
    return loss, task_scores(spec, data.y, pred.values)


def _class_weights(y: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    weights = len(y) / (k * np.maximum(counts, 1))
    return torch.tensor(weights / (weights * counts).sum() * len(y), dtype=torch.float32)


def _pos_weights(y: np.ndarray) -> torch.Tensor:
    """Per label ``negatives / positives`` on the training rows, clipped to
    [0.1, 10]: a rare label's positives count as much as its negatives."""
    pos = y.sum(0)
    return torch.tensor(np.clip((len(y) - pos) / np.maximum(pos, 1), 0.1, 10.0), dtype=torch.float32)


def multilabel_loss(
    logits: torch.Tensor, y: torch.Tensor, kind: str = "weighted_bce", pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample multilabel loss ``[B]`` (the mean over labels).

    - ``"bce"``: binary cross entropy per label;
    - ``"weighted_bce"``: the same with positives weighted by ``pos_weight
      [L]`` (negatives / positives on the training rows);
    - ``"asl"``: the asymmetric loss (Ridnik et al., ICCV 2021) with
      gamma+ = 0, gamma- = 4 and a 0.05 probability margin on negatives,
      which down-weights the many easy negatives of rare labels.

    Shapes: ``logits [B, L]``, ``y [B, L]`` 0/1 float."""
    logits, y = logits.float(), y.float()
    if kind == "asl":
        p = torch.sigmoid(logits)
        p_neg = (p - 0.05).clamp(min=0)
        loss_pos = y * torch.log(p.clamp(min=1e-8))
        loss_neg = (1 - y) * p_neg.pow(4) * torch.log((1 - p_neg).clamp(min=1e-8))
        return -(loss_pos + loss_neg).mean(1)
    weight = pos_weight if kind == "weighted_bce" else None
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=weight, reduction="none").mean(1)


def _sample_losses(
    out: torch.Tensor, y: torch.Tensor, net: FusionNet, weights: torch.Tensor | None, loss: str = "weighted_bce"
) -> torch.Tensor:
    """Per-sample loss: the multilabel loss, class-weighted cross entropy,
    or the squared error in units of the training targets' SD."""
    if y.dim() == 2:
        return multilabel_loss(out, y, loss, weights)
    if net.config.n_outputs > 1:
        return F.cross_entropy(out.float(), y, weight=weights, reduction="none")
    return ((out.float()[:, 0] - y) / net.config.output_scale) ** 2


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _forms_by_rule(train: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``train`` with hyper layers' ``form="auto"`` fixed by rule, not by
    timing: the forms differ in their last bits, and a choice made by the
    clock would make two runs with the same seed, data and config give
    different models (see :func:`..nn.hyper.set_auto_form_override`)."""

    @functools.wraps(train)
    def run(*args: Any, **kwargs: Any) -> Any:
        with auto_form_override("static"):
            return train(*args, **kwargs)

    return run


@_forms_by_rule
def fit(
    net: FusionNet,
    train: TrainingData,
    val: TrainingData,
    cfg: TrainConfig,
    device: torch.device,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    epochs: int | None = None,
    desc: str = "train",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train ``net`` on ``train``, select the epoch with the best validation
    metric (balanced accuracy or MAE), stop after ``cfg.patience`` epochs
    without improvement. With ``checkpoint``, the state is saved after each
    epoch and, when ``cfg.resume`` is set and ``fingerprint`` matches, a
    previous run continues from it. Returns the best state (on the CPU)."""
    spec = cfg.spec
    rank, world = dist_info()
    epochs = cfg.epochs if epochs is None else epochs
    net.to(device)
    model: torch.nn.Module = net
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    weights = None
    if spec.is_classification and cfg.class_weights:
        weights = _class_weights(train.y, len(spec.classes)).to(device)
    elif spec.is_multilabel:
        weights = _pos_weights(train.y).to(device)
    note_part = None
    if net.config.uses_note and cfg.note_dropout > 0:
        note_part = slice(net.config.tabular_dim, net.config.input_dim)
    y_all = torch.as_tensor(train.y)
    tab_all = torch.as_tensor(train.tabular)

    metric_name = selection_metric(spec)
    # the validation loss is smoother than balanced accuracy on a few hundred rows
    by_loss = cfg.select_on == "loss"
    higher = spec.kind != "regression" and not by_loss
    best_metric = -math.inf if higher else math.inf
    best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    best_epoch, bad_epochs, start_epoch = 0, 0, 1
    history: list[dict[str, float]] = []
    best_val: dict[str, float] = {}
    if checkpoint is not None and cfg.resume and checkpoint.exists():
        state = read_checkpoint(checkpoint)
        if state.get("fingerprint") != fingerprint:
            raise TrainConfigError(
                f"{checkpoint} belongs to a run with other settings or data (the settings, the split or the "
                "images and EHR values of its subjects differ); remove it or drop --resume"
            )
        try:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            best_state, best_metric = state["best_state"], state["best_metric"]
            best_epoch, bad_epochs, history = state["best_epoch"], state["bad_epochs"], state["history"]
            best_val = dict(state.get("best_val", {}))
            start_epoch = state["epoch"] + 1
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise TrainConfigError(f"{checkpoint} is damaged ({str(err)[:200]}); remove it or drop --resume") from None
        if bad_epochs >= cfg.patience:
            start_epoch = epochs + 1

    # a step needs >= 2 subjects per micro-batch (batch norm in training mode)
    micro_count = world * cfg.accumulate
    steps_per_epoch = len(train) // cfg.batch_size + (len(train) % cfg.batch_size >= 2 * micro_count)
    if cfg.batch_size < 2 * micro_count:
        raise TrainConfigError(
            f"batch_size {cfg.batch_size} is too small for {world} process(es) x accumulate {cfg.accumulate}: "
            f"every micro-batch needs at least 2 subjects"
        )
    if steps_per_epoch < 1:
        raise TrainConfigError(f"{len(train)} training subjects are fewer than one batch of {cfg.batch_size}")
    bar = None
    if cfg.progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=(epochs - start_epoch + 1) * steps_per_epoch, desc=desc, unit="step", leave=False)
    start_time = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, epochs + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at_epoch(cfg, epoch, epochs)
        net.train()
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        running, seen = 0.0, 0
        for step in range(steps_per_epoch):
            batch = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size].numpy()
            micros = np.array_split(batch, micro_count)
            mine = micros[rank * cfg.accumulate : (rank + 1) * cfg.accumulate]
            opt.zero_grad(set_to_none=True)
            for m, index in enumerate(mine):
                # dropout draws from a seed of the micro-batch, not of the process
                torch.manual_seed(hash((cfg.seed, epoch, step, rank * cfg.accumulate + m)) % (2**63))
                image = _batch_images(train, index, cfg, epoch, training=True)
                image = image.to(device) if image is not None else None
                tab, y = tab_all[index].to(device), y_all[index].to(device)
                if note_part is not None:  # the model must also cope without a note
                    dropped = torch.rand(len(index)) < cfg.note_dropout
                    tab = tab.clone()
                    tab[dropped.to(device), note_part] = 0.0
                sync = world > 1 and m < len(mine) - 1
                with model.no_sync() if sync else nullcontext():  # type: ignore[operator]
                    with torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext():
                        out = model(image, tab)
                    losses = _sample_losses(out, y, net, weights, cfg.loss)
                    # DDP averages over processes: scale so the step's gradient
                    # is that of the mean loss over the whole batch
                    loss = losses.sum() * world / len(batch)
                    scaler.scale(loss).backward()
                running += float(losses.detach().sum())
                seen += len(index)
            if cfg.grad_clip > 0:
                # the generated layers' gradients can spike early in training
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{running / max(seen, 1):.4f}", refresh=False)
            if should_stop is not None and should_stop():
                break
        if world > 1:  # the epoch's loss over every process's subjects
            totals = torch.tensor([running, float(seen)], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            running, seen = float(totals[0]), int(totals[1])
        val_loss, val_metrics = _score(net, val, spec, device, weights if spec.is_classification else None)
        metric = val_loss if by_loss else val_metrics[metric_name]
        row = {"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val_loss, **val_metrics}
        history.append(row)
        improved = metric > best_metric if higher else metric < best_metric
        if improved:
            best_metric, best_epoch, bad_epochs, best_val = metric, epoch, 0, dict(val_metrics)
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            bad_epochs += 1
        if bar is not None:
            name = {"balanced_accuracy": "bacc", "auc_macro": "AUC", "mae": "MAE"}[metric_name]
            bar.set_postfix(epoch=epoch, loss=f"{row['train_loss']:.4f}", **{f"val_{name}": f"{metric:.3f}"})
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint is not None and rank == 0:
            _save_checkpoint(checkpoint, {
                "fingerprint": fingerprint, "epoch": epoch, "model": net.state_dict(),
                "optimizer": opt.state_dict(), "best_state": best_state, "best_metric": best_metric,
                "best_epoch": best_epoch, "bad_epochs": bad_epochs, "history": history, "best_val": best_val,
            })  # fmt: skip
        if should_stop is not None and should_stop():
            break
        if bad_epochs >= cfg.patience:
            stopped_early = True
            break
    if bar is not None:
        bar.close()
    return FitResult(
        best_state=best_state, best_epoch=best_epoch, val_metrics=best_val,
        best_metric=best_val.get(metric_name, best_metric) if by_loss else best_metric,
        history=history, stopped_early=stopped_early, seconds=time.perf_counter() - start_time,
    )  # fmt: skip


def lr_at_epoch(cfg: TrainConfig, epoch: int, epochs: int) -> float:
    """The learning rate of ``epoch`` (1-based) of ``epochs``: ``cfg.lr``
    throughout, or with ``lr_schedule = "cosine"`` half a cosine from
    ``cfg.lr`` at the first epoch to ``cfg.lr / 100`` at the last, so that
    the last epochs average out the noise of the steps (a function of the
    epoch alone: a resumed run takes the same rates)."""
    if cfg.lr_schedule == "constant" or epochs <= 1:
        return cfg.lr
    floor = cfg.lr / 100
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / (epochs - 1)))


@_forms_by_rule
def pretrain_embedding(
    net: FusionNet, train: TrainingData, val: TrainingData, cfg: TrainConfig, device: torch.device
) -> FitResult | None:
    """The paper's two-stage option: train the tabular-only MLP (embedding
    -> linear) first and start ``net``'s embedding from its weights."""
    if cfg.pretrain_tabular_epochs < 1 or net.embedding is None or net.config.embedding != "mlp":
        return None
    tab_net = build_model(net.config.replace(fusion="tabular", hyper_sites=[]))
    no_images = TrainingData(None, train.tabular, train.y), TrainingData(None, val.tabular, val.y)
    result = fit(tab_net, *no_images, cfg, device, epochs=cfg.pretrain_tabular_epochs, desc="pretrain EHR MLP")
    tab_net.load_state_dict(result.best_state)
    net.embedding.load_state_dict(copy.deepcopy(tab_net.embedding.state_dict()))
    if cfg.rescale_generators and net.hyper_layers():
        # the generators were scaled for the untrained embedding's output; the
        # pretrained one has another second moment (measured 1.36x the target)
        from ..nn.hyper import rescale_generators

        net.to("cpu")
        result.generator_rescale = rescale_generators(net, torch.as_tensor(train.tabular))
    return result


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True`` (no code in
    it can run). Raises :class:`TrainConfigError` for a file that is not
    one of ours: truncated, another tool's, or a pickle of other objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling raises many types; each means "not a checkpoint"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise TrainConfigError(
            f"{path} is not a readable napari-hyperfusion training checkpoint ({type(err).__name__}: {first}); "
            "it was not run (checkpoints are read with weights_only=True). Remove it, or drop --resume"
        ) from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise TrainConfigError(f"{path} is not a napari-hyperfusion training checkpoint; remove it or drop --resume")
    return state


def data_digest(*parts: TrainingData) -> str:
    """SHA-256 of the numbers a run trains and validates on: the views, the
    encoded EHR rows and the targets, so that a cohort whose scans or
    values changed under the same IDs is not taken for the same data."""
    digest = hashlib.sha256()
    for data in parts:
        for array in (data.views, data.tabular, data.y):
            if array is not None:
                array = np.ascontiguousarray(array)
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def fingerprint_of(cfg: TrainConfig, train_ids: list[str], val_ids: list[str], data: str = "") -> str:
    """What a checkpoint must share with the run resuming it: the settings
    that shape training, the split, and the data's digest (:func:`data_digest`)."""
    # the cohort's path is not kept: its content is, in ``data`` (a moved cohort resumes, an edited one does not)
    skip = {"resume", "patience", "progress", "jobs", "device", "out", "cohort"}
    if cfg.lr_schedule == "constant":  # more epochs continue a constant-rate run; a schedule would change
        skip.add("epochs")
    kept = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in skip and not (k in _LATER_SETTINGS and v == _LATER_SETTINGS[k])
    }
    return json.dumps({"cfg": kept, "train": train_ids, "val": val_ids, "data": data}, sort_keys=True)
