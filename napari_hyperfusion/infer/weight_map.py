"""The weight-space map: every subject's generated weights as a point in 2D.

A HyperFusion network gives each subject its own parameters for the
generated layers, ``P(e) = A e + c`` for the hypernetwork embedding ``e`` of
the subject's EHR values. The map is the principal-component projection of
those parameter vectors (all generated layers, weights and biases,
concatenated) over the training cohort: subjects whose networks are alike
lie close together, and a slider that changes the EHR values moves the
subject through the space of networks.

Because ``P`` is affine in ``e``, the projection is exact in embedding
space, and nothing of the size of the parameters needs storing: with
``A = Q R`` (``Q`` orthonormal columns, ``R`` from ``A^T A``), the centred
parameters are ``(E - mean) R^T Q^T``, whose principal axes are those of the
small matrix ``(E - mean) R^T``. The stored map is the embedding mean, a
``[k, emb_dim]`` projection (k <= 2, fewer when the embedding has fewer
directions), the share of the parameters' variance each axis holds, and the
training subjects' points with their targets. It is fitted once, at the
end of training, and written into the model file (``input_stats``).

Example:
    >>> from napari_hyperfusion.io.model_file import load_model
    >>> model = load_model("models/ad_hyperfusion.safetensors", device="cpu")  # doctest: +SKIP
    >>> wmap = WeightMap.from_dict(model.info.input_stats["weight_map"])  # doctest: +SKIP
    >>> wmap.project(model.net.embed(tabular)).shape  # doctest: +SKIP
    (1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["WeightMap", "fit_weight_map", "generator_matrix", "generated_vector", "MAX_POINTS"]

MAX_POINTS = 1000  # training subjects drawn on the map (a seeded subsample above this)


@torch.no_grad()
def generated_vector(net: torch.nn.Module, e: torch.Tensor) -> torch.Tensor:
    """Every generated layer's parameters for embeddings ``e [B, emb_dim]``,
    concatenated: ``[B, n_parameters]`` (layers in ``net.hyper_layers()`` order)."""
    parts = []
    for layer in net.hyper_layers().values():
        w, b = layer.generate(e)
        parts.append(w.reshape(e.shape[0], -1))
        if b is not None:
            parts.append(b.reshape(e.shape[0], -1))
    return torch.cat(parts, dim=1)


@torch.no_grad()
def generator_matrix(net: torch.nn.Module, emb_dim: int, device: torch.device | str = "cpu") -> np.ndarray:
    """``A^T A`` (``[emb_dim, emb_dim]``, float64) for ``P(e) = A e + c``,
    from ``emb_dim + 1`` generations (the embedding's unit vectors and
    zero), one layer at a time so that no ``[emb_dim, n_parameters]`` array
    is kept."""
    gram = np.zeros((emb_dim, emb_dim))
    basis = torch.cat([torch.zeros(1, emb_dim), torch.eye(emb_dim)]).to(device)
    for layer in net.hyper_layers().values():
        w, b = layer.generate(basis)
        for part in (w, b):
            if part is None:
                continue
            flat = part.reshape(emb_dim + 1, -1).double()
            columns = (flat[1:] - flat[:1]).cpu().numpy()  # A's columns, for this layer
            gram += columns @ columns.T
    return gram


@dataclass
class WeightMap:
    """A fitted weight-space map.

    Attributes:
        mean: embedding mean of the fitting rows, ``[emb_dim]``.
        projection: ``[k, emb_dim]``: ``point = projection @ (e - mean)``,
            in units of the generated parameters (the PCA scores).
        explained: share of the generated parameters' variance on each
            axis, ``[k]`` (sums to at most 1).
        points: the fitting subjects' points, ``[n, k]`` (at most
            :data:`MAX_POINTS`).
        targets: each point's target: a class name, or a number in the
            task's unit.
        target_kind: ``"class"`` or ``"number"``.
        target_name: what the targets are (``"diagnosis"``, ``"age (years)"``).
        layers: the generated layers the parameters come from.
        n_parameters: how many generated parameters one subject has.
        fitted_on: what the fitting rows were.
    """

    mean: np.ndarray
    projection: np.ndarray
    explained: np.ndarray
    points: np.ndarray
    targets: list[Any] = field(default_factory=list)
    target_kind: str = "class"
    target_name: str = ""
    layers: list[str] = field(default_factory=list)
    n_parameters: int = 0
    fitted_on: str = ""

    @property
    def dims(self) -> int:
        return int(self.projection.shape[0])

    def project(self, embedding: torch.Tensor | np.ndarray) -> np.ndarray:
        """Points ``[B, k]`` of embeddings ``[B, emb_dim]``."""
        e = embedding.detach().cpu().numpy() if isinstance(embedding, torch.Tensor) else np.asarray(embedding)
        return (e.astype(np.float64) - self.mean) @ self.projection.T

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(), "projection": self.projection.tolist(), "explained": self.explained.tolist(),
            "points": self.points.round(6).tolist(), "targets": list(self.targets), "target_kind": self.target_kind,
            "target_name": self.target_name, "layers": list(self.layers), "n_parameters": int(self.n_parameters), "fitted_on": self.fitted_on,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightMap:
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            projection=np.asarray(data["projection"], dtype=np.float64).reshape(-1, len(data["mean"])),
            explained=np.asarray(data["explained"], dtype=np.float64),
            points=np.asarray(data["points"], dtype=np.float64).reshape(len(data["points"]), -1),
            targets=list(data.get("targets", [])),
            target_kind=str(data.get("target_kind", "class")),
            target_name=str(data.get("target_name", "")),
            layers=list(data.get("layers", [])),
            n_parameters=int(data.get("n_parameters", 0)),
            fitted_on=str(data.get("fitted_on", "")),
        )


@torch.no_grad()
def fit_weight_map(
    net: torch.nn.Module,
    tabular: np.ndarray | torch.Tensor,
    targets: Sequence[Any],
    target_kind: str = "class",
    target_name: str = "",
    fitted_on: str = "",
    seed: int = 0,
) -> WeightMap | None:
    """Fit the map on encoded rows (the training rows).

    Args:
        net: a network with generated layers (``net.hyper_layers()``).
        tabular: the rows' encoded network input, ``[N, input_dim]``.
        targets: each row's target (class name or number), ``[N]``.
        target_kind: ``"class"`` or ``"number"``.
        target_name: what the targets are, for the legend.
        fitted_on: what the rows were, for the legend.
        seed: for the subsample of drawn points above :data:`MAX_POINTS`.

    Returns:
        The :class:`WeightMap`, or ``None`` for a network that generates
        nothing (a baseline) or rows whose networks are all the same.
    """
    layers = list(net.hyper_layers())
    if not layers or net.embedding is None:
        return None
    device = next(net.parameters()).device
    tab = torch.as_tensor(np.asarray(tabular, dtype=np.float32), device=device)
    was_training = net.training
    net.eval()
    try:
        e = net.embed(tab).double().cpu().numpy()
        gram = generator_matrix(net, e.shape[1], device)
        n_parameters = int(generated_vector(net, net.embed(tab[:1])).shape[1])
    finally:
        net.train(was_training)
    # A^T A = U diag(lam) U^T, so R = diag(sqrt(lam)) U^T gives ||A x|| = ||R x||
    lam, u = np.linalg.eigh(gram)
    r = np.sqrt(np.clip(lam, 0, None))[:, None] * u.T
    mean = e.mean(0)
    y = (e - mean) @ r.T  # the centred parameters in an orthonormal basis of A's range
    _, s, vt = np.linalg.svd(y, full_matrices=False)
    total = float((s**2).sum())
    if total <= 1e-12 * max(1.0, float(lam.max(initial=0.0))):
        return None
    k = int(min(2, (s**2 > 1e-9 * total).sum()))
    projection = vt[:k] @ r  # [k, emb_dim]
    points = (e - mean) @ projection.T
    order = np.arange(len(points))
    if len(points) > MAX_POINTS:
        order = np.sort(np.random.default_rng(seed).choice(len(points), MAX_POINTS, replace=False))
    return WeightMap(
        mean=mean,
        projection=projection,
        explained=(s[:k] ** 2) / total,
        points=points[order],
        targets=[targets[i] if target_kind == "class" else float(targets[i]) for i in order],
        target_kind=target_kind,
        target_name=target_name,
        layers=layers,
        n_parameters=n_parameters,
        fitted_on=fitted_on,
    )
