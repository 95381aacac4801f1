"""Metrics and fold ensembles as the HyperFusion paper reports them.

Classification: balanced accuracy, macro precision, macro F1, macro
one-vs-rest AUC and per-class recall (scikit-learn's definitions).
Regression: MAE and R^2. Ensembles combine fold models' softmax outputs,
weighted by 1 / entropy (the paper's choice: confident members count more)
or plainly averaged.

Shapes: ``y [N]`` (class index or target), ``probs [N, K]``,
``pred [N]``; members ``[M, N, K]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "classification_metrics",
    "regression_metrics",
    "entropy_weighted_ensemble",
    "mean_ensemble",
    "higher_is_better",
]

_EPS = 1e-12


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Metrics of predicted class probabilities ``probs [N, K]`` against
    labels ``y [N]``. AUC is NaN when the labels miss a class."""
    from sklearn.metrics import (
        balanced_accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(y)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    pred = probs.argmax(1)
    out = {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "precision_macro": float(precision_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "f1_macro": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
    }
    try:
        norm = probs / probs.sum(1, keepdims=True)
        out["auc_macro_ovr"] = float(roc_auc_score(y, norm, multi_class="ovr", average="macro", labels=labels))
    except ValueError:
        out["auc_macro_ovr"] = float("nan")
    recalls = recall_score(y, pred, labels=labels, average=None, zero_division=0)
    for name, value in zip(classes, recalls):
        out[f"recall_{name}"] = float(value)
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE (in the target's unit) and R^2 of ``pred [N]`` against ``y [N]``."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"mae": float(np.abs(y - pred).mean()), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")}


def higher_is_better(metric: str) -> bool:
    return metric != "mae"


def entropy_weighted_ensemble(members: np.ndarray) -> np.ndarray:
    """Combine ``members [M, N, K]`` probabilities per subject with weights
    ``1 / H(p_m)`` (Shannon entropy, nats), normalised over members."""
    members = np.asarray(members, dtype=np.float64)
    entropy = -(members * np.log(members + _EPS)).sum(-1)  # [M, N]
    weights = 1.0 / (entropy + 1e-6)
    weights /= weights.sum(0, keepdims=True)
    return (weights[..., None] * members).sum(0)


def mean_ensemble(members: np.ndarray) -> np.ndarray:
    """Plain average over the member axis of ``[M, N, ...]``."""
    return np.asarray(members, dtype=np.float64).mean(0)
