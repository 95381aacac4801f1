"""Batched inference: views and EHR vectors in, probabilities or years out.

A subject is seen through every view of the model grid (both hippocampus
crops for the AD models, the whole brain for brain age); its prediction is
the mean over views of the softmax (classification) or of the output
(regression), as in the paper's test-time averaging of both hemispheres.

Shapes: ``views [N, V, D, H, W]`` (float16 or float32, normalised),
``tabular [N, T]`` float32; result ``[N, K]`` probabilities or ``[N, 1]``
years, plus ``per_view [N, V, K]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import PredictionError
from ..nn.base import FusionNet, pool_features

__all__ = ["Prediction", "predict_views", "predict_cohort", "predict_rows", "read_model_cohort", "to_probabilities"]


@dataclass
class Prediction:
    """``values [N, K]``: class probabilities, or ``[N, 1]`` regression
    outputs in the target's unit; ``per_view [N, V, K]`` before averaging;
    ``features [N, F]``: the image features pooled over space and views
    (:func:`pool_features`), when asked for, else ``None``;
    ``image_features``: for one subject, when asked for, each view's
    :meth:`~napari_hyperfusion.nn.base.FusionNet.encode_image` output (what
    a what-if session caches), else ``None``."""

    values: np.ndarray
    per_view: np.ndarray
    features: np.ndarray | None = None
    image_features: list[dict[str, torch.Tensor]] | None = None


KINDS = ("multiclass", "multilabel", "regression")


def to_probabilities(outputs: torch.Tensor, kind: str) -> torch.Tensor:
    """Softmax for a classifier's logits, a sigmoid per label for a
    multilabel model, identity for a regressor."""
    if kind == "multiclass":
        return torch.softmax(outputs.float(), dim=-1)
    if kind == "multilabel":
        return torch.sigmoid(outputs.float())
    if kind == "regression":
        return outputs.float()
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


@torch.no_grad()
def predict_views(
    net: FusionNet,
    views: np.ndarray | torch.Tensor | None,
    tabular: np.ndarray | torch.Tensor,
    kind: str,
    batch_size: int = 16,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    with_features: bool = False,
    keep_image_features: bool = False,
) -> Prediction:
    """Run ``net`` (in eval mode) over subjects in batches of ``batch_size``.

    ``tabular`` is the full non-image input (``model_inputs``); ``kind`` is
    ``"multiclass"``, ``"multilabel"`` or ``"regression"``. ``views`` may be
    ``None`` for the tabular-only baseline. ``with_features`` also returns
    the pooled image features of the same pass (for the typicality flags;
    no second run of the image encoder). ``keep_image_features`` (one
    subject only) also returns each view's unpooled image features, so
    that a what-if session needs no second pass either."""
    was_training = net.training
    net.eval()
    device = torch.device(device) if device is not None else next(net.parameters()).device
    tab = torch.as_tensor(np.asarray(tabular, dtype=np.float32))
    n = tab.shape[0]
    if keep_image_features and n != 1:
        raise ValueError(f"keep_image_features is for one subject, got {n}")
    n_views = 1 if views is None or not net.config.uses_image else views.shape[1]
    out, pooled, kept = [], [], []
    try:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            t = tab[start:stop].to(device)
            per_view, per_view_features = [], []
            for v in range(n_views):
                image = None
                if views is not None and net.config.uses_image:
                    image = torch.as_tensor(views[start:stop, v]).to(device=device, dtype=torch.float32)[:, None]
                features = net.encode_image(image)  # forward() is decode(encode_image): the same pass
                if keep_image_features:
                    kept.append(features)
                per_view.append(to_probabilities(net.decode(features, t), kind))
                if with_features and features:
                    per_view_features.append(pool_features(features))
            out.append(torch.stack(per_view, 1).cpu())
            if per_view_features:
                pooled.append(torch.stack(per_view_features, 1).mean(1).cpu())
            if progress:
                progress(stop, n)
    finally:
        net.train(was_training)
    per_view = torch.cat(out).numpy() if out else np.zeros((0, n_views, net.config.n_outputs), np.float32)
    features = torch.cat(pooled).double().numpy() if pooled else None
    image_features = kept if keep_image_features else None
    return Prediction(values=per_view.mean(1), per_view=per_view, features=features, image_features=image_features)


def predict_cohort(
    model,
    table: str | Path,
    batch_size: int = 16,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    prepare: bool = False,
    chunk_size: int = 256,
):
    """Predict every row of a cohort table with a loaded model file
    (:class:`~napari_hyperfusion.io.model_file.LoadedModel`), ``chunk_size``
    scans at a time (the images of one chunk are in memory, never the
    cohort's; for a result file that streams, resumes and runs under
    ``torchrun``, see :func:`napari_hyperfusion.infer.batch.predict_to_csv`).

    Returns:
        A DataFrame, one row per subject in table order: see
        :func:`predict_rows`. The table is checked like a training table
        (columns, values, image paths) but needs no target column.
    """
    import pandas as pd

    cohort = read_model_cohort(model, table)
    n = len(cohort)
    frames = []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        step = (lambda stage, i, _n, s=start: progress(stage, s + i, n)) if progress else None
        frames.append(predict_rows(model, cohort.subset(range(start, stop)), batch_size, jobs, step, prepare))
    return pd.concat(frames, ignore_index=True)


def read_model_cohort(model, table: str | Path):
    """The cohort table ``model`` reads, checked (``need_target=False``;
    image paths only for a model that reads images)."""
    from ..data.dataset import TASK_SPECS, read_cohort

    spec = next(s for s in TASK_SPECS.values() if s.model_task == model.info.task)
    return read_cohort(table, spec, model.info.schema, need_target=False, need_images=model.info.config.uses_image)


def predict_rows(
    model,
    cohort,
    batch_size: int = 16,
    jobs: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
    prepare: bool = False,
):
    """Predict the rows of a checked :class:`~napari_hyperfusion.data.dataset.Cohort`.

    Returns a DataFrame: the ID column, then ``prob_<class>`` and
    ``predicted`` (classifier), ``prob_<label>`` and ``positive_<label>``
    (multilabel, at the model's thresholds) or ``predicted_<output>`` (and
    ``brain_age_gap`` where the table has the age; regressor); then the
    input gate's ``input_qc`` (ok / warn / refuse), ``qc_ncc`` and
    ``qc_reasons``, the out-of-distribution ``ood_flags`` and
    ``image_typicality_pct``, and the model's name and hash. A row whose
    scan the gate refused has no prediction (empty cells). ``prepare``
    registers every scan to the MNI template first (extra ``[prep]``) and
    adds ``prepared = True``.

    Raises:
        PredictionError: the network gave NaN or infinite outputs for a
            row the gate let through (named by subject ID).
    """
    import pandas as pd

    from ..data.dataset import load_checked_images
    from ..data.model_inputs import encode_table
    from ..data.preprocess import ModelGrid
    from .typicality import assess_rows

    info = model.info
    spec = cohort.spec
    uses_image = info.config.uses_image
    views = None
    qcs: list[dict] = [{} for _ in range(len(cohort))]
    if uses_image:
        if prepare:
            from ..data.registration import require_prep

            require_prep()  # say what to install before any scan is read
        grid = ModelGrid.from_dict(info.image)
        views, qcs = load_checked_images(
            cohort, grid, info.input_stats.get("scan"), jobs=jobs, prepare=prepare,
            progress=(lambda i, n: progress("prepare" if prepare else "load", i, n)) if progress else None,
        )  # fmt: skip
    tabular = encode_table(info.config, info.schema, cohort.table, cohort.notes)
    pred = predict_views(
        model.net, views, tabular, info.kind, batch_size=batch_size, device=model.device,
        progress=(lambda i, n: progress("predict", i, n)) if progress else None, with_features=True,
    )  # fmt: skip
    refused = np.array([q.get("verdict") == "refuse" for q in qcs], dtype=bool)
    broken = ~np.isfinite(pred.values).all(1) & ~refused
    if broken.any():
        ids = [cohort.ids[i] for i in np.flatnonzero(broken)]
        raise PredictionError(
            f"{info.name} gave NaN or infinite outputs for {len(ids)} subject(s) ({', '.join(ids[:5])}"
            f"{' ...' if len(ids) > 5 else ''}); no prediction is written for them. The model file is "
            "damaged or the inputs are far outside what it was trained on."
        )
    out = pd.DataFrame({spec.id_column: cohort.ids})
    if info.is_classifier:
        for k, name in enumerate(info.outputs):
            out[f"prob_{name}"] = pred.values[:, k]
        out["predicted"] = [info.outputs[k] for k in pred.values.argmax(1)]
    elif info.kind == "multilabel":
        for k, (name, cut) in enumerate(zip(info.outputs, info.label_thresholds)):
            out[f"prob_{name}"] = pred.values[:, k]
            out[f"positive_{name}"] = (pred.values[:, k] >= cut).astype(int)
    else:
        out[f"predicted_{info.outputs[0].replace(' ', '_')}"] = pred.values[:, 0]
        if pred.per_view.shape[1] > 1:
            out["spread_over_views"] = pred.per_view[:, :, 0].std(1)
        if spec.target_column in cohort.table:  # brain age: the gap to the chronological age
            age = pd.to_numeric(cohort.table[spec.target_column], errors="coerce").to_numpy()
            out["chronological_age"] = age
            out["brain_age_gap"] = pred.values[:, 0] - age
            if info.input_stats.get("age_bias"):  # the field's correction, from held-out subjects
                from .age_bias import AgeBias

                out["brain_age_gap_corrected"] = AgeBias.from_dict(info.input_stats["age_bias"]).corrected_gap(
                    pred.values[:, 0], age
                )
    records = [info.schema.fill(row)[0] for _, row in cohort.table.iterrows()]
    typical = assess_rows(model, records, pred.features)
    prediction_columns = [c for c in out.columns if c not in (spec.id_column, "chronological_age")]
    if refused.any():  # no prediction for a scan the model cannot read
        out[prediction_columns] = out[prediction_columns].astype(object)
        out.loc[refused, prediction_columns] = None
    out["input_qc"] = [q.get("verdict", "n/a") for q in qcs]
    out["qc_ncc"] = [q.get("ncc", float("nan")) for q in qcs]
    out["qc_reasons"] = ["; ".join(q.get("reasons", [])) for q in qcs]
    out["ood_flags"] = ["; ".join(t.flags) if t.available else "no training statistics in the model file"
                        for t in typical]  # fmt: skip
    out["image_typicality_pct"] = [t.image_percentile for t in typical]
    out.loc[refused, ["ood_flags", "image_typicality_pct"]] = None
    if prepare and uses_image:
        out["prepared"] = True
    out["model"] = info.name
    out["model_sha256"] = model.short_hash
    return out
