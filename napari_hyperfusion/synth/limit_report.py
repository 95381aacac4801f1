"""How close can anything get? The Bayes limit of the synthetic tasks on
fresh draws of the generator, beside the plain models a network has to
beat: a class-weighted logistic regression on the encoded EHR (and on the
EHR plus the true regional volumes) for a range of training-set sizes.

Records only, no images: the whole table takes seconds to a minute.

Example:
    >>> rows = limit_table("ad", n_test=500, seed=0, sizes=(100,))
    >>> rows[0]["method"]
    'Bayes (EHR + true volumes)'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data.schema import adni_schema
from ..train.logistic import select_logistic
from ..train.metrics import classification_metrics, regression_metrics
from .records import CLASSES, sample_ad_records, sample_brain_age_records
from .truth import VOLUME_FIELDS, ad_posterior, balanced_posterior, brain_age_estimate

__all__ = ["limit_table", "limit_on_split", "to_markdown"]


def _labels(table: pd.DataFrame) -> np.ndarray:
    return table.DX.map({c: i for i, c in enumerate(CLASSES)}).to_numpy()


def _features(schema, table: pd.DataFrame, volumes: pd.DataFrame | None) -> np.ndarray:
    x = schema.encode_frame(table)
    if volumes is None:
        return x
    v = table[list(VOLUME_FIELDS)].to_numpy(float)
    return np.hstack([x, (v - volumes.mean().to_numpy()) / volumes.std().to_numpy()])


def limit_table(
    task: str = "ad", n_test: int = 20_000, seed: int = 0, sizes: Sequence[int] = (100, 200, 400, 800, 1600, 3200)
) -> list[dict]:
    """Scores on ``n_test`` fresh subjects of the Bayes limits and of
    logistic regressions trained on ``sizes`` subjects (a learning curve;
    80 % to fit, 20 % to choose the L2 strength, as a network's validation
    fold would).

    Args:
        task: ``"ad"`` or ``"brain_age"``.
        n_test: test subjects drawn with ``seed``.
        seed: draws are reproducible; training rows use ``seed + 1``.
        sizes: training-set sizes for the learning curve (AD only).

    Returns:
        One dict per row: ``method``, ``n_train`` and the task's metrics
        (balanced accuracy, macro AUC, ... or MAE and R^2 in years).
    """
    rng = np.random.default_rng(seed)
    if task == "brain_age":
        test = sample_brain_age_records(n_test, rng)
        scores = regression_metrics(test.AGE.to_numpy(), brain_age_estimate(test))
        return [{"method": "Bayes (sex + true volumes)", "n_train": "-", **scores}]
    if task != "ad":
        raise ValueError(f"task must be ad or brain_age, got {task!r}")
    test = sample_ad_records(n_test, rng)
    y = _labels(test)
    rows = []
    for name, use in (("Bayes (EHR + true volumes)", True), ("Bayes (EHR only)", False)):
        probs = balanced_posterior(ad_posterior(test, use_volumes=use))
        rows.append({"method": name, "n_train": "-", **classification_metrics(y, probs, CLASSES)})
    pool = sample_ad_records(max(sizes), np.random.default_rng(seed + 1))
    for with_volumes in (False, True):
        for n in sizes:
            rows_n = pool.iloc[:n]
            cut = int(round(0.8 * n))
            fit_rows, val_rows = rows_n.iloc[:cut], rows_n.iloc[cut:]
            schema = adni_schema().fit(fit_rows)
            volumes = fit_rows[list(VOLUME_FIELDS)] if with_volumes else None
            model = select_logistic(
                _features(schema, fit_rows, volumes), _labels(fit_rows),
                _features(schema, val_rows, volumes), _labels(val_rows), len(CLASSES),
            )  # fmt: skip
            probs = model.predict_proba(_features(schema, test, volumes))
            name = "logistic regression (EHR + true volumes)" if with_volumes else "logistic regression (EHR)"
            rows.append({"method": name, "n_train": n, **classification_metrics(y, probs, CLASSES)})
    return rows


def to_markdown(rows: list[dict], metrics: Sequence[str] | None = None) -> str:
    """The rows as a Markdown table (three decimals)."""
    metrics = list(metrics or [k for k in rows[0] if k not in ("method", "n_train")])
    lines = ["| method | subjects trained on | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for row in rows:
        cells = [f"{row[m]:.3f}" for m in metrics]
        lines.append(f"| {row['method']} | {row['n_train']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def limit_on_split(model_info, cohort_table: pd.DataFrame, y: np.ndarray, classification: bool) -> dict | None:
    """The Bayes limit on the held-out test rows a model file was scored on.

    The split is rebuilt from the model's provenance (its training config's
    ``seed``, ``val_fraction`` and ``test_fraction``, the same stratified
    split training made), so the limit and the model's own test score are
    on the same subjects.

    Args:
        model_info: a :class:`~napari_hyperfusion.io.model_file.ModelInfo`.
        cohort_table: the cohort table the model was trained on (with the
            generator's ground-truth columns).
        y: its targets (class index or years), as training read them.
        classification: whether the task is a classification.

    Returns:
        ``{"n_test", "limit": {name: metrics}, "model": the file's test
        metrics}``, or None when the model has no test split or the table
        has no ground truth.
    """
    from ..train.loop import split_indices
    from .truth import limits_for

    train_config = model_info.provenance.get("train_config", {})
    test_fraction = float(train_config.get("test_fraction", 0.0))
    if test_fraction <= 0:
        return None
    fractions = [test_fraction, float(train_config.get("val_fraction", 0.2))]
    test_idx = split_indices(y, fractions, int(train_config.get("seed", 0)), classification)[0]
    task = {"ad_classification": "ad", "brain_age": "brain_age"}.get(model_info.task)
    limits = limits_for(task, cohort_table.columns) if task else {}
    if not limits:
        return None
    rows = cohort_table.iloc[test_idx].reset_index(drop=True)
    out = {}
    for name, limit in limits.items():
        pred = limit(rows)
        if classification:
            out[name] = classification_metrics(y[test_idx], pred, CLASSES)
        else:
            out[name] = regression_metrics(y[test_idx], pred[:, 0])
    return {"n_test": len(test_idx), "limit": out, "model": model_info.metrics.get("test", {})}
