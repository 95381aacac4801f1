"""A class-weighted multinomial logistic regression on the encoded EHR: the
plain statistical baseline every fusion network has to beat.

It reads exactly what the networks read (the schema's encoding: z-scored
values, filled where missing, a 0/1 "was missing" indicator per feature that
can be missing, one-hot sex), is fitted on the same training rows, and is
solved to convergence by L-BFGS (a convex problem: no epochs, no early
stopping, no seed). The L2 strength is chosen on the validation rows from a
short grid, as the networks choose their epoch there.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 4)); y = (x[:, 0] > 0).astype(int)
    >>> model = fit_logistic(x, y, n_classes=2)
    >>> model.predict_proba(x).shape
    (300, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LogisticModel", "fit_logistic", "select_logistic", "L2_GRID"]

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class LogisticModel:
    """``softmax(x @ weight.T + bias)``: ``weight [K, F]``, ``bias [K]``."""

    weight: np.ndarray
    bias: np.ndarray
    l2: float

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, K]`` of encoded rows ``x [N, F]``."""
        logits = np.asarray(x, dtype=np.float64) @ self.weight.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-2, balanced: bool = True
) -> LogisticModel:
    """Fit by L-BFGS to the minimum of the (class-weighted) mean cross
    entropy plus ``l2 / 2 * ||weight||^2`` (the bias is not penalised).

    Args:
        x: encoded rows ``[N, F]`` (float).
        y: class indices ``[N]``.
        n_classes: ``K``.
        l2: penalty strength per row (scikit-learn's ``C`` is ``1 / (l2 N)``).
        balanced: weight each class by ``N / (K n_k)``, as the networks'
            class-weighted loss does, so that balanced accuracy is the target.

    Returns:
        The fitted :class:`LogisticModel`.
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    counts = np.bincount(np.asarray(y), minlength=n_classes).astype(np.float64)
    if balanced:
        class_w = len(y) / (n_classes * np.maximum(counts, 1))
    else:
        class_w = np.ones(n_classes)
    w_rows = torch.as_tensor(class_w)[yt]
    w_rows = w_rows / w_rows.sum()
    weight = torch.zeros(n_classes, xt.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logp = torch.log_softmax(xt @ weight.T + bias, dim=1)
        loss = -(w_rows * logp[torch.arange(len(yt)), yt]).sum() + 0.5 * l2 * (weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogisticModel(weight.detach().numpy().copy(), bias.detach().numpy().copy(), float(l2))


def select_logistic(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    grid: tuple[float, ...] = L2_GRID,
) -> LogisticModel:
    """Fit one model per L2 strength in ``grid`` on the training rows and
    keep the one with the best validation balanced accuracy (ties: the
    stronger penalty). Shapes as in :func:`fit_logistic`."""
    best, best_score = None, -1.0
    for l2 in sorted(grid, reverse=True):
        model = fit_logistic(x_train, y_train, n_classes, l2)
        pred = model.predict_proba(x_val).argmax(1)
        recalls = [np.mean(pred[y_val == k] == k) for k in range(n_classes) if np.any(y_val == k)]
        score = float(np.mean(recalls))
        if score > best_score + 1e-12:
            best, best_score = model, score
    assert best is not None
    return best
