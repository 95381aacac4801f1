"""Paired bootstrap over test subjects: how sure a difference between two
models' scores on the *same* subjects is.

Resampling the test rows once and scoring every model on that resample keeps
the pairing: the spread of a difference of two columns is the spread of the
difference, which is much smaller than that of either score when the models
agree on most subjects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .loop import selection_metric, task_scores

__all__ = ["paired_bootstrap", "main_score", "interval"]

Score = Callable[[np.ndarray, np.ndarray], float]


def paired_bootstrap(
    y: np.ndarray, preds: Sequence[np.ndarray], score: Score, n: int = 1000, seed: int = 0
) -> np.ndarray:
    """Scores of each prediction on ``n`` resamples of the same test rows.

    Args:
        y: targets ``[N]`` (class index or value) or ``[N, L]`` (multilabel).
        preds: predictions, each ``[N, K]``, on the same rows in the same order.
        score: ``score(y_resampled, pred_resampled) -> float``.
        n: resamples.
        seed: the resampling generator's seed (the same seed, the same resamples).

    Returns:
        ``[n, len(preds)]``; a difference of two columns is a paired difference.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((n, len(preds)))
    for b in range(n):
        idx = rng.integers(0, len(y), len(y))
        out[b] = [score(y[idx], p[idx]) for p in preds]
    return out


def main_score(spec) -> tuple[str, Score]:
    """The task's main metric as a fast function (a bootstrap calls it
    thousands of times): balanced accuracy of the argmax, the MAE, or
    :func:`~napari_hyperfusion.train.loop.task_scores`' main metric.

    Args:
        spec: the task's :class:`~napari_hyperfusion.data.labels.TaskSpec`.

    Returns:
        ``(metric name, score(y, pred) -> float)``.
    """
    from sklearn.metrics import balanced_accuracy_score

    main = selection_metric(spec)
    if main == "balanced_accuracy":
        return main, (lambda y, p: balanced_accuracy_score(y, np.asarray(p).argmax(1)))
    if main == "mae":
        return main, (lambda y, p: float(np.abs(np.asarray(p)[:, 0] - y).mean()))
    if main == "auc_macro":
        return main, _auc_macro
    return main, (lambda y, p: task_scores(spec, y, p)[main])


def _auc_macro(y: np.ndarray, p: np.ndarray) -> float:
    """The mean AUC over the labels that have both outcomes in ``y [N, L]``
    (as :func:`~napari_hyperfusion.train.metrics.multilabel_metrics` skips the others)."""
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    return float(np.mean(aucs)) if aucs else float("nan")


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap values ``[n]``."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)
