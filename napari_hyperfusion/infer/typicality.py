"""How typical a case's inputs are of what its model was trained on.

A model file stores, in ``ModelInfo.input_stats`` (written by
``hyperfusion train`` from the training rows only):

* ``ehr``: each numeric field's range and 1st / 99th percentiles, each
  categorical field's levels;
* ``image``: the training scans' image features (the network's own
  encoder output, averaged over space and views) as a mean, the top
  principal directions with their variances, the residual variance and
  quantiles of the training scans' squared Mahalanobis distance;
* ``scan``: the training scans' largest voxel edge and sharpness range
  (for the input gate, :mod:`napari_hyperfusion.data.input_qc`).

:func:`assess` reports, for one case, every EHR value outside the training
range and where the image's distance falls among the training scans'; a
distance above the training 99th percentile is flagged. Flags do not stop a
prediction: they are shown on the result and written into exports.

Example:
    >>> pred = predict_views(model.net, views, tabular, model.info.kind, with_features=True)
    >>> typical = assess(model, record, pred.features)
    >>> typical.flags          # ["AGE 104 is above the training range 55-91"]
    >>> typical.image_percentile   # 62.0: more atypical than 62 % of training scans
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data.input_qc import measure_input
from ..data.schema import TabularSchema
from ..io.model_file import LoadedModel
from ..nn.base import pool_features

__all__ = ["Typicality", "fit_input_stats", "image_descriptor", "assess", "assess_rows", "QUANTILES"]

QUANTILES = np.r_[np.linspace(0, 95, 20), 99.0, 100.0]  # percent; the tail where flags are decided
N_COMPONENTS = 8
MAX_WIDTH = 256  # features kept per scan (the statistics live in the model file's JSON header)
FLAG_PERCENTILE = 99.0


@dataclass
class Typicality:
    """``flags``: one sentence per atypical input (empty when all are
    typical); ``image_distance``: squared Mahalanobis distance of the
    image features; ``image_percentile``: the share of training scans that
    are closer (0-100; ``nan`` without stored statistics)."""

    flags: list[str] = field(default_factory=list)
    image_distance: float = float("nan")
    image_percentile: float = float("nan")
    out_of_range: list[str] = field(default_factory=list)
    available: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.available:
            return "typicality: this model file stores no training statistics"
        image = (
            f"image more atypical than {self.image_percentile:.0f} % of training scans"
            if np.isfinite(self.image_percentile)
            else "no image"
        )
        return f"typicality: {image}" + (f"; FLAGGED: {'; '.join(self.flags)}" if self.flags else "; inputs typical")


@torch.no_grad()
def image_descriptor(net: torch.nn.Module, views: np.ndarray, device: torch.device, batch_size: int = 16) -> np.ndarray:
    """The network's image features, averaged over space and views.

    Args:
        net: a :class:`~napari_hyperfusion.nn.base.FusionNet` in eval mode.
        views: ``[N, V, D, H, W]`` model-grid views (float16 or float32).
        device: where ``net`` is.
    Returns:
        float64 ``[N, F]`` (:func:`~napari_hyperfusion.nn.base.pool_features`,
        narrowed by :func:`narrow`).
    """
    out = []
    n, v = views.shape[:2]
    for start in range(0, n, batch_size):
        chunk = torch.as_tensor(np.asarray(views[start : start + batch_size], dtype=np.float32), device=device)
        b = chunk.shape[0]
        pooled = pool_features(net.encode_image(chunk.reshape(b * v, 1, *chunk.shape[2:])))
        out.append(pooled.reshape(b, v, -1).mean(1).cpu().double().numpy())
    return narrow(np.concatenate(out)) if out else np.zeros((0, 0))


def narrow(x: np.ndarray) -> np.ndarray:
    """Pooled features ``[N, F]`` at most ``MAX_WIDTH`` wide: wider ones
    (flattened maps, e.g. before generated FC layers) average neighbours."""
    if x.shape[1] <= MAX_WIDTH:
        return x
    return np.stack([c.mean(axis=1) for c in np.array_split(x, MAX_WIDTH, axis=1)], axis=1)


def _image_stats(x: np.ndarray) -> dict[str, Any]:
    mean = x.mean(axis=0)
    centred = x - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = int(min(N_COMPONENTS, len(s) - 1, x.shape[1]))
    variances = s[:k] ** 2 / max(len(x) - 1, 1)
    residual = centred - centred @ vt[:k].T @ vt[:k]
    residual_var = float((residual**2).sum() / max((len(x) - 1) * max(x.shape[1] - k, 1), 1))
    stats = {
        "mean": mean.tolist(),
        "components": vt[:k].tolist(),
        "variances": variances.tolist(),
        "residual_var": max(residual_var, 1e-12),
    }
    d2 = _distance(stats, x)
    stats["distance_quantiles"] = np.percentile(d2, QUANTILES).tolist()
    stats["n"] = len(x)
    return stats


def _distance(stats: Mapping[str, Any], x: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance: in the principal subspace plus the
    residual, each per its own variance; ``[N]``."""
    centred = np.atleast_2d(x) - np.asarray(stats["mean"])
    basis = np.asarray(stats["components"])
    scores = centred @ basis.T
    residual = centred - scores @ basis
    within = (scores**2 / np.maximum(np.asarray(stats["variances"]), 1e-12)).sum(axis=1)
    return within + (residual**2).sum(axis=1) / float(stats["residual_var"])


def _ehr_stats(schema: TabularSchema, table: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in schema.fields:
        if f.name not in table:
            continue
        parsed = [f.parse(v) for v in table[f.name]]
        present = [v for v in parsed if v is not None]
        if f.kind != "category":
            values = np.asarray(present, dtype=float)
            if len(values):
                low, high = np.percentile(values, [1, 99])
                out[f.name] = {"min": float(values.min()), "max": float(values.max()),
                               "p1": float(low), "p99": float(high)}  # fmt: skip
        else:
            out[f.name] = {"levels": sorted({str(v) for v in present})}
    return out


def fit_input_stats(
    net: torch.nn.Module,
    schema: TabularSchema,
    table: pd.DataFrame,
    views: np.ndarray | None,
    device: torch.device,
    scans: list | None = None,
    source: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The statistics :func:`assess` and the input gate need, from the
    training rows only.

    Args:
        net: the trained network (eval mode).
        schema: the model's schema.
        table: the training rows (schema columns).
        views: their model-grid views ``[N, V, D, H, W]``, or ``None``.
        device: where ``net`` is.
        scans: callables or paths giving training :class:`Scan` objects
            for the gate's voxel-size and sharpness ranges (a subsample
            is enough); ``None`` to skip.
        source: what the rows were (shown by ``hyperfusion info``).
    Returns:
        a JSON-friendly dict for ``ModelInfo.input_stats``.
    """
    stats: dict[str, Any] = {"fitted_on": source, "ehr": _ehr_stats(schema, table)}
    if views is not None and len(views) > N_COMPONENTS + 1:
        was_training = net.training
        net.eval()
        stats["image"] = _image_stats(image_descriptor(net, views, device))
        net.train(was_training)
    if scans:
        from ..data.preprocess import load_scan

        measures = []
        for i, item in enumerate(scans):
            measures.append(measure_input(load_scan(item) if not callable(item) else item()))
            if progress:
                progress(i + 1, len(scans))
        sharp = np.array([m.sharpness for m in measures])
        stats["scan"] = {
            "voxel_mm_max": float(max(m.voxel_mm for m in measures)),
            "sharpness": [float(np.percentile(sharp, 1)), float(np.percentile(sharp, 99))],
            "ncc_p1": float(np.percentile([m.ncc for m in measures], 1)),
            "n": len(measures),
        }
    return stats


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def assess(model: LoadedModel, record: Mapping[str, Any], features: np.ndarray | None) -> Typicality:
    """How typical one case's inputs are (see the module docstring).

    Args:
        model: the loaded model (its ``info.input_stats``).
        record: the filled record (every schema field has a value).
        features: the case's pooled image features ``[1, F]``
            (``predict_views(..., with_features=True).features``) or ``None``.
    Returns:
        :class:`Typicality`; ``available`` is False for a model file
        without statistics (nothing can be said, and the result says so).
    """
    return assess_rows(model, [record], features)[0]


def assess_rows(model: LoadedModel, records: list[Mapping[str, Any]], features: np.ndarray | None) -> list[Typicality]:
    """:func:`assess` for ``N`` cases at once (``features [N, F]``)."""
    stats = model.info.input_stats
    if not stats:
        return [Typicality(available=False) for _ in records]
    results = [_ehr_flags(stats.get("ehr", {}), record) for record in records]
    image = stats.get("image")
    if image and features is not None:
        x = narrow(features)
        if x.shape[1] != len(image["mean"]):  # statistics of another feature layout: say nothing rather than guess
            return results
        d2 = _distance(image, x)
        quantiles = np.asarray(image["distance_quantiles"])
        p99 = float(np.interp(FLAG_PERCENTILE, QUANTILES, quantiles))
        for result, distance in zip(results, d2):
            result.image_distance = float(distance)
            result.image_percentile = float(np.interp(distance, quantiles, QUANTILES))
            if distance > p99:
                far = "beyond every training scan" if distance > quantiles[-1] else "beyond 99 % of them"
                result.flags.append(f"the image features are far from the training scans' ({far})")
    return results


def _ehr_flags(ehr: Mapping[str, Any], record: Mapping[str, Any]) -> Typicality:
    flags, out_of_range = [], []
    for name, field_stats in ehr.items():
        value = record.get(name)
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            continue
        if "levels" in field_stats:
            if str(value) not in field_stats["levels"]:
                flags.append(f"{name} {value!s} was never seen in training ({', '.join(field_stats['levels'])})")
                out_of_range.append(name)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        low, high = field_stats["min"], field_stats["max"]
        if number < low or number > high:
            side = "below" if number < low else "above"
            flags.append(f"{name} {_fmt(number)} is {side} the training range {_fmt(low)}-{_fmt(high)}")
            out_of_range.append(name)
    return Typicality(flags=flags, out_of_range=out_of_range)
