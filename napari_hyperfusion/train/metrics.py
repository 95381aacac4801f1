"""Metrics and fold ensembles as the HyperFusion paper reports them.

Classification: balanced accuracy, macro precision, macro F1, macro
one-vs-rest AUC and per-class recall (scikit-learn's definitions).
Multilabel: per-label AUC, average precision and F1, macro/micro F1 and
the Hamming loss at per-label thresholds (chosen on validation rows by
:func:`choose_thresholds`). Regression: MAE and R^2. Ensembles combine fold
models' softmax outputs,
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
    "multilabel_metrics",
    "choose_thresholds",
    "binary_entropy_weighted_ensemble",
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
    return metric not in ("mae", "hamming_loss")


def _safe(score, *args) -> float:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a label with one class only: NaN, said once in the docstring
        try:
            value = float(score(*args))
        except ValueError:
            return float("nan")
    return value


def multilabel_metrics(
    y: np.ndarray, probs: np.ndarray, labels: list[str] | tuple[str, ...], thresholds: list[float] | None = None
) -> dict[str, float]:
    """Metrics of per-label probabilities ``probs [N, L]`` against 0/1
    ``y [N, L]``: ``auc_<label>``, ``ap_<label>`` (average precision),
    ``f1_<label>``, their macro means ``auc_macro`` and ``ap_macro``,
    ``f1_macro``, ``f1_micro``, ``hamming_loss`` (share of wrong label
    decisions) and ``subset_accuracy`` (all labels right). Decisions are
    ``probs >= thresholds`` (0.5 by default). AUC/AP are NaN for a label
    that is constant in ``y``."""
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    cut = np.full(len(labels), 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    pred = (probs >= cut).astype(int)
    out: dict[str, float] = {}
    aucs, aps = [], []
    for j, name in enumerate(labels):
        auc = _safe(roc_auc_score, y[:, j], probs[:, j])
        ap = _safe(average_precision_score, y[:, j], probs[:, j]) if y[:, j].any() else float("nan")
        out[f"auc_{name}"], out[f"ap_{name}"] = auc, ap
        out[f"f1_{name}"] = float(f1_score(y[:, j], pred[:, j], zero_division=0))
        aucs.append(auc)
        aps.append(ap)
    out["auc_macro"] = float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")
    out["ap_macro"] = float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else float("nan")
    out["f1_macro"] = float(f1_score(y, pred, average="macro", zero_division=0))
    out["f1_micro"] = float(f1_score(y, pred, average="micro", zero_division=0))
    out["hamming_loss"] = float((pred != y).mean())
    out["subset_accuracy"] = float((pred == y).all(1).mean())
    return out


def choose_thresholds(y: np.ndarray, probs: np.ndarray) -> list[float]:
    """Per label, the threshold on ``probs [N, L]`` that maximises F1 on
    ``y [N, L]`` (candidates: the observed probabilities; 0.5 for a label
    without positives). Fit on validation rows, never on test rows."""
    y = np.asarray(y).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    out = []
    for j in range(y.shape[1]):
        if not y[:, j].any():
            out.append(0.5)
            continue
        order = np.argsort(-probs[:, j])
        p, t = probs[order, j], y[order, j]
        tp = np.cumsum(t)
        fp = np.cumsum(~t)
        f1 = 2 * tp / (tp + fp + t.sum())
        # only cut between distinct values: ties share a decision
        last = np.r_[p[1:] != p[:-1], True]
        best = int(np.argmax(np.where(last, f1, -1)))
        nxt = p[best + 1] if best + 1 < len(p) else 0.0
        out.append(float((p[best] + nxt) / 2))
    return out


def binary_entropy_weighted_ensemble(members: np.ndarray) -> np.ndarray:
    """The 1/entropy ensemble for independent labels: ``members [M, N, L]``
    sigmoid outputs, each label weighted by ``1 / H(p)`` of its Bernoulli."""
    p = np.clip(np.asarray(members, dtype=np.float64), _EPS, 1 - _EPS)
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    weights = 1.0 / (entropy + 1e-6)
    weights /= weights.sum(0, keepdims=True)
    return (weights * p).sum(0)


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
