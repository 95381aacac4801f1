"""Compare HyperFusion with baselines the way the paper does.

A fixed, stratified test split is held out. The rest is split into ``k``
stratified folds, once per seed; each fold trains one model per fusion
method (early stopping on its validation fold, EHR preprocessing fitted on
its training rows only), and the ``k`` fold models of a seed form an
ensemble on the test split, weighted by 1 / entropy (the paper) or plainly
averaged. Per method and metric we report mean +- sd over seeds and a
one-sided Mann-Whitney U test of HyperFusion against each baseline
(``greater`` for scores, ``less`` for MAE).

Two kinds of rows that train no network can join the table: ``logistic``,
a class-weighted logistic regression on the encoded EHR fitted on each
fold's training rows (the statistical baseline every fusion network has to
beat), and *limits*: predictions computed from the test rows' own table by
the caller, such as the Bayes-optimal posterior of the synthetic generator
(:mod:`napari_hyperfusion.synth.truth`). A limit is the same for every
seed and fold; the report puts it on top and gives each method's distance to
it. With a separate ``test_cohort`` (e.g. 1,000 fresh synthetic subjects)
the whole of ``cfg.cohort`` is cross-validated and the test numbers are far
less noisy than on a 20 % split of a small cohort.

The multilabel risk task works the same way with the reference method
``medfusion`` (MedFusionNet) against HyperFusion with a multilabel head and
the other baselines: per-label AUC, average precision and F1, macro and
micro F1, Hamming loss. Each fold model's label thresholds come from its
own validation fold; an ensemble uses its members' mean thresholds, and
the 1/entropy weighting uses each label's Bernoulli entropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.dataset import TASK_SPECS, load_images, read_cohort
from ..infer.cohort import predict_views
from ..nn.build import build_model
from ..nn.devices import resolve_device
from .logistic import select_logistic
from .loop import (
    TrainConfig,
    base_schema,
    fit,
    grid_for,
    kfold_indices,
    pretrain_embedding,
    selection_metric,
    split_indices,
    task_scores,
)
from .metrics import (
    binary_entropy_weighted_ensemble,
    choose_thresholds,
    entropy_weighted_ensemble,
    higher_is_better,
    mean_ensemble,
)
from .run import is_synthetic, network_config, prepare_data

__all__ = [
    "EvalResult",
    "cross_validate",
    "summarise",
    "to_markdown",
    "ENSEMBLES",
    "parse_method",
    "LOGISTIC",
    "Limit",
    "result_meta",
    "result_from_report",
    "merge_results",
    "replace_limits",
]

ENSEMBLES = ("entropy", "mean", "single")
LOGISTIC = "logistic"
# a limit: the test rows' table -> predictions shaped like a model's ([N, K] or [N, 1])
Limit = Callable[[pd.DataFrame], np.ndarray]


@dataclass
class EvalResult:
    """``rows``: one per (fusion, seed, ensemble) with every metric, and one
    per fold model (``ensemble == "single"``, with its ``fold``);
    ``metrics``: the metric names, main one first."""

    rows: pd.DataFrame
    metrics: list[str]
    fusions: list[str]
    n_test: int
    n_trainval: int
    synthetic: bool = False
    reference: str = "hyperfusion"
    headline: list[str] | None = None  # metrics of the main table (all when None)
    limits: list[str] = field(default_factory=list)  # names of limit rows, best first
    test_source: str = ""
    # the fold ensembles' (1/entropy) test predictions, one row per (method, seed, test
    # row): fusion, seed, row, y_0.., out_0..; None for reports written before they were kept
    predictions: pd.DataFrame | None = None
    task: str = ""  # the config's task ("ad", "brain_age", "risk"); "" in older reports


def parse_method(method: str, cfg: TrainConfig) -> TrainConfig:
    """A method name: a fusion (``"medfusion"``), optionally with settings
    that differ from ``cfg``, each after a colon, e.g.
    ``"medfusion:use_note=false"`` (an ablation on the same folds). Raises
    :class:`~napari_hyperfusion.train.loop.TrainConfigError` for an unknown
    or invalid setting."""
    from .loop import TrainConfigError, apply_overrides

    fusion, *settings = [part.strip() for part in method.split(":")]
    if fusion == LOGISTIC:
        if not cfg.spec.is_classification or cfg.spec.is_multilabel or settings:
            raise TrainConfigError("'logistic' is the EHR baseline of the classification task and takes no settings")
        return replace(cfg, fusion="tabular")
    data = apply_overrides({**cfg.to_dict(), "fusion": fusion}, settings)
    return TrainConfig.from_dict(data)


def cross_validate(
    cfg: TrainConfig,
    fusions: Sequence[str],
    folds: int = 4,
    seeds: Sequence[int] = (0, 1),
    test_fraction: float = 0.2,
    log: Callable[[str], None] = print,
    test_cohort: str | None = None,
    limits: Mapping[str, Limit] | None = None,
    on_model: Callable[[dict], None] | None = None,
    max_folds: int | None = None,
) -> EvalResult:
    """Train ``len(seeds) * folds * len(fusions)`` models; see the module
    docstring.

    Args:
        cfg: the task, cohort and training settings.
        fusions: method names (:func:`parse_method`, or ``"logistic"``).
        folds, seeds: k of the k-fold split, and one split per seed.
        test_fraction: the held-out share of ``cfg.cohort`` (ignored with
            ``test_cohort``).
        log: receives one line per trained model.
        test_cohort: a separate table to test on; ``cfg.cohort`` is then all
            cross-validated.
        limits: name -> function of the test rows' table giving reference
            predictions (e.g. the Bayes-optimal posterior); best first.
        max_folds: train only the first ``max_folds`` folds of each seed's
            split (a quicker ablation on exactly the same splits); all when None.
        on_model: receives each fold model's row (method, seed, fold, test
            scores) as soon as it is trained, so that a long run that is
            stopped still leaves its finished models behind.

    Returns:
        An :class:`EvalResult` with one row per (method, seed, ensemble).
    """
    spec = cfg.spec
    device = resolve_device(cfg.device)
    for method in fusions:  # a bad method name fails before hours of training, not after
        parse_method(method, cfg)
    need_images = any(parse_method(f, cfg).fusion != "tabular" for f in fusions)
    cohort = read_cohort(cfg.cohort, spec, base_schema(cfg.task), need_target=True, need_images=need_images)
    assert cohort.y is not None
    views = load_images(cohort, grid_for(cfg), jobs=cfg.jobs) if need_images else None
    if test_cohort is None:
        test_idx, rest_idx = split_indices(cohort.y, [test_fraction], cfg.seed, spec.is_classification)
        tests, test_views, test_source = cohort, views, f"{len(test_idx)} held out of {cohort.source.name}"
    else:
        tests = read_cohort(test_cohort, spec, base_schema(cfg.task), need_target=True, need_images=need_images)
        test_views = load_images(tests, grid_for(cfg), jobs=cfg.jobs) if need_images else None
        rest_idx, test_idx = np.arange(len(cohort.y)), np.arange(len(tests.y))
        test_source = f"{len(test_idx)} subjects of {Path(test_cohort).parent.name}/{Path(test_cohort).name}"
    log(f"cohort {cohort.source.name}: {len(rest_idx)} for cross-validation; test: {test_source}")
    assert tests.y is not None
    rows = []
    y_test = tests.y[test_idx]
    kept: list[pd.DataFrame] = []
    limit_rows = []
    for name, limit in (limits or {}).items():
        scores = task_scores(spec, y_test, limit(tests.table.iloc[test_idx].reset_index(drop=True)))
        limit_rows.append(scores)
        log(f"limit {name}: {selection_metric(spec)} {scores[selection_metric(spec)]:.3f}")
    for seed in seeds:
        for name, scores in zip(limits or {}, limit_rows):
            for kind in ("entropy", "mean"):
                rows.append({"fusion": name, "seed": seed, "ensemble": kind, **scores})
        members: dict[str, list[np.ndarray]] = {f: [] for f in fusions}
        singles: dict[str, list[dict[str, float]]] = {f: [] for f in fusions}
        thresholds: dict[str, list[list[float]]] = {f: [] for f in fusions}
        splits = kfold_indices(cohort.y[rest_idx], folds, seed, spec.is_classification)
        for fold, (tr, va) in enumerate(splits[:max_folds]):
            train_idx, val_idx = rest_idx[tr], rest_idx[va]
            schema = base_schema(cfg.task).fit(cohort.subset(train_idx).table, source=f"fold {fold}")
            inputs: dict[bool, tuple] = {}  # the fold's encoded rows, with and without the note, built once each
            for fusion in fusions:
                run_cfg = replace(parse_method(fusion, cfg), seed=seed * 1000 + fold, progress=False, resume=False)
                mcfg, _ = network_config(run_cfg, cohort, train_idx, schema)  # stage 1 on this fold's rows
                if mcfg.uses_note not in inputs:
                    inputs[mcfg.uses_note] = (
                        prepare_data(cohort, views, schema, train_idx, mcfg),
                        prepare_data(cohort, views, schema, val_idx, mcfg),
                        prepare_data(tests, test_views, schema, test_idx, mcfg),
                    )
                train, val, test = inputs[mcfg.uses_note]
                cuts = None
                if fusion == LOGISTIC:
                    model = select_logistic(train.tabular, train.y, val.tabular, val.y, len(spec.classes))
                    pred = model.predict_proba(test.tabular)
                    detail = f"L2 {model.l2:g}"
                else:
                    torch.manual_seed(run_cfg.seed)
                    net = build_model(mcfg)
                    pretrain_embedding(net, train, val, run_cfg, device)
                    result = fit(net, train, val, run_cfg, device)
                    net.load_state_dict(result.best_state)
                    if spec.is_multilabel:
                        cuts = choose_thresholds(
                            val.y, predict_views(net, val.views, val.tabular, spec.kind, device=device).values
                        )
                        thresholds[fusion].append(cuts)
                    pred = predict_views(net, test.views, test.tabular, spec.kind, device=device).values
                    detail = (
                        f"best epoch {result.best_epoch:3d} val {selection_metric(spec)} {result.best_metric:.3f}"
                        f" ({result.seconds:.0f} s)"
                    )
                members[fusion].append(pred)
                singles[fusion].append({"fold": fold, **task_scores(spec, y_test, pred, cuts)})
                if on_model is not None:
                    on_model({"fusion": fusion, "seed": seed, "ensemble": "single", **singles[fusion][-1]})
                main = selection_metric(spec)
                log(f"seed {seed} fold {fold} {fusion:11s} {detail} test {main} {singles[fusion][-1][main]:.3f}")
        for fusion in fusions:
            stack = np.stack(members[fusion])
            weighted = {"multiclass": entropy_weighted_ensemble, "multilabel": binary_entropy_weighted_ensemble}
            ens = {"entropy": weighted.get(spec.kind, mean_ensemble)(stack), "mean": mean_ensemble(stack)}
            cuts = list(np.mean(thresholds[fusion], 0)) if spec.is_multilabel else None
            for kind, probs in ens.items():
                scores = task_scores(spec, y_test, probs, cuts)
                rows.append({"fusion": fusion, "seed": seed, "ensemble": kind, **scores})
            kept.append(prediction_frame(fusion, seed, y_test, ens["entropy"]))
            for single in singles[fusion]:
                rows.append({"fusion": fusion, "seed": seed, "ensemble": "single", **single})
    frame = pd.DataFrame(rows)
    metrics = [c for c in frame.columns if c not in ("fusion", "seed", "ensemble", "fold")]
    reference = "medfusion" if spec.is_multilabel and "medfusion" in fusions else "hyperfusion"
    headline = MULTILABEL_HEADLINE if spec.is_multilabel else None
    names = [*(limits or {}), *fusions]
    predictions = pd.concat(kept, ignore_index=True) if kept else None
    return EvalResult(
        frame, metrics, names, len(test_idx), len(rest_idx), is_synthetic(cohort), reference, headline,
        limits=list(limits or {}), test_source=test_source, predictions=predictions, task=cfg.task,
    )  # fmt: skip


def prediction_frame(fusion: str, seed: int, y: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """One fold ensemble's test predictions in long form.

    Args:
        fusion: the method's name.
        seed: the split seed.
        y: the test targets ``[N]`` (class index or value) or ``[N, L]``.
        pred: the ensemble's predictions ``[N, K]`` (probabilities or values).

    Returns:
        ``N`` rows: ``fusion, seed, row, y_0.., out_0..``.
    """
    y2 = np.asarray(y).reshape(len(y), -1)
    p2 = np.asarray(pred).reshape(len(pred), -1)
    frame = pd.DataFrame({"fusion": fusion, "seed": seed, "row": np.arange(len(y2))})
    for j in range(y2.shape[1]):
        frame[f"y_{j}"] = y2[:, j]
    for j in range(p2.shape[1]):
        frame[f"out_{j}"] = p2[:, j]
    return frame


def prediction_arrays(result: EvalResult) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
    """The test targets and each (method, seed)'s ensemble predictions back
    from :attr:`EvalResult.predictions`.

    Args:
        result: an evaluation with predictions and a known task.

    Returns:
        ``(y, {(fusion, seed): pred})``: ``y`` ``[N]`` (``[N, L]`` multilabel),
        each ``pred`` ``[N, K]``.

    Raises:
        ValueError: when the result kept no predictions, or their methods
            disagree on the test targets (they were not tested on the same rows).
    """
    frame = result.predictions
    if frame is None or frame.empty or result.task not in TASK_SPECS:
        raise ValueError("this report kept no test predictions (it was written before they were kept)")
    y_cols = [c for c in frame.columns if c.startswith("y_")]
    out_cols = [c for c in frame.columns if c.startswith("out_")]
    preds, y = {}, None
    for (fusion, seed), part in frame.groupby(["fusion", "seed"], sort=False):
        part = part.sort_values("row")
        mine = part[y_cols].to_numpy()
        if y is None:
            y = mine
        elif mine.shape != y.shape or not np.allclose(mine, y):
            raise ValueError(f"{fusion} (seed {seed}) was tested on other targets than the other methods")
        preds[(str(fusion), int(seed))] = part[out_cols].dropna(axis=1, how="all").to_numpy(dtype=float)
    assert y is not None
    y = y[:, 0] if y.shape[1] == 1 else y
    return (y.astype(float) if TASK_SPECS[result.task].kind == "regression" else y.astype(int)), preds


def paired_differences(result: EvalResult, n: int = 1000, resample_seed: int = 0) -> pd.DataFrame:
    """The reference method's advantage over each baseline in the main
    metric, fold ensemble against fold ensemble on the same test subjects,
    with a 95 % paired bootstrap interval; per split seed and averaged over
    the seeds (every seed's ensembles scored on the same resamples).

    Args:
        result: an evaluation with :attr:`~EvalResult.predictions`.
        n: bootstrap resamples of the test subjects.
        resample_seed: the bootstrap's seed (not a split seed).

    Returns:
        ``baseline, seed, advantage, low, high`` (``seed`` is ``"mean"`` for
        the average over seeds); the advantage is positive when the reference
        is better (higher score, or lower error).
    """
    from .bootstrap import interval, main_score, paired_bootstrap

    y, preds = prediction_arrays(result)
    main, score = main_score(TASK_SPECS[result.task])
    keys = list(preds)
    boot = paired_bootstrap(y, [preds[k] for k in keys], score, n=n, seed=resample_seed)
    point = np.array([score(y, preds[k]) for k in keys])
    sign = 1.0 if higher_is_better(main) else -1.0
    seeds = sorted({s for f, s in keys if f == result.reference})
    out = []
    for baseline in [f for f in result.fusions if f != result.reference and f not in result.limits]:
        both = [s for s in seeds if (baseline, s) in preds]
        if not both:
            continue
        ref_cols = [keys.index((result.reference, s)) for s in both]
        base_cols = [keys.index((baseline, s)) for s in both]
        groups = [(s, [r], [b]) for s, r, b in zip(both, ref_cols, base_cols)]
        if len(both) > 1:  # every seed's ensemble on the same resamples: the mean's interval is paired too
            groups.append(("mean", ref_cols, base_cols))
        for label, r, b in groups:
            diff = sign * (boot[:, r].mean(1) - boot[:, b].mean(1))
            low, high = interval(diff)
            advantage = sign * (point[r].mean() - point[b].mean())
            out.append({"baseline": baseline, "seed": label, "advantage": advantage, "low": low, "high": high})
    return pd.DataFrame(out, columns=["baseline", "seed", "advantage", "low", "high"])


MULTILABEL_HEADLINE = ["auc_macro", "ap_macro", "f1_macro", "f1_micro", "hamming_loss", "subset_accuracy"]


def summarise(result: EvalResult, ensemble: str = "entropy", reference: str | None = None) -> pd.DataFrame:
    """Mean, sd and (for baselines) the one-sided Mann-Whitney p-value of
    ``reference`` against each method, per metric. Long format:
    ``fusion, metric, mean, sd, n, p_value``."""
    from scipy.stats import mannwhitneyu

    reference = reference or result.reference
    rows = result.rows[result.rows.ensemble == ensemble]
    out: list[dict] = []
    if rows.empty:
        return pd.DataFrame(out, columns=["fusion", "metric", "mean", "sd", "n", "p_value"])
    for fusion in result.fusions:
        mine = rows[rows.fusion == fusion]
        if fusion in result.limits:  # a limit is one fixed prediction: the same row for every kind of summary
            mine = result.rows[(result.rows.fusion == fusion) & (result.rows.ensemble == "entropy")]
        for metric in result.metrics:
            values = mine[metric].to_numpy(dtype=float)
            p = math.nan
            if fusion != reference and reference in result.fusions and fusion not in result.limits:
                ref = rows[rows.fusion == reference][metric].to_numpy(dtype=float)
                ok = np.isfinite(ref).all() and np.isfinite(values).all() and len(ref) and len(values)
                if ok:
                    alt = "greater" if higher_is_better(metric) else "less"
                    p = float(mannwhitneyu(ref, values, alternative=alt).pvalue)
            out.append({
                "fusion": fusion, "metric": metric, "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values), "p_value": p,
            })  # fmt: skip
    return pd.DataFrame(out)


EHR_ONLY_METHODS = ("tabular", LOGISTIC)


def _limit_for(result: EvalResult, fusion: str) -> str:
    """The limit a method is measured from: the EHR-only limit for methods
    that read only the EHR (where the table has one), else the first."""
    if fusion.split(":")[0] in EHR_ONLY_METHODS:
        return next((name for name in result.limits if "EHR only" in name), result.limits[0])
    return result.limits[0]


def _table(result: EvalResult, summary: pd.DataFrame, metrics: list[str] | None = None) -> list[str]:
    """mean +- sd per method; with limits, each method's distance to its
    limit in the main metric (limit - method; for MAE method - limit): the
    EHR-only limit for the methods that read only the EHR, else the first."""
    metrics = metrics or result.headline or result.metrics
    main = result.metrics[0]
    gap = bool(result.limits) and main in metrics
    header = "| method | " + " | ".join(metrics) + (f" | distance to limit ({main}) |" if gap else " |")
    lines = [header, "|---" * (len(metrics) + 1 + gap) + "|"]
    rows = summary.set_index(["fusion", "metric"])
    for fusion in result.fusions:
        if (fusion, metrics[0]) not in rows.index:  # a limit has no single fold models
            continue
        cells = []
        for metric in metrics:
            r = rows.loc[(fusion, metric)]
            cells.append(f"{r['mean']:.3f}" if fusion in result.limits else f"{r['mean']:.3f} +- {r['sd']:.3f}")
        if gap:
            reference = _limit_for(result, fusion)
            limit, mine = rows.loc[(reference, main), "mean"], rows.loc[(fusion, main), "mean"]
            distance = limit - mine if higher_is_better(main) else mine - limit
            cells.append("-" if fusion in result.limits else f"{distance:+.3f}")
        name = f"**{fusion}** (limit)" if fusion in result.limits else fusion
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _p_table(result: EvalResult, summary: pd.DataFrame) -> list[str]:
    metrics = result.headline or result.metrics
    baselines = [f for f in result.fusions if f != result.reference and f not in result.limits]
    if result.reference not in result.fusions or not baselines:
        return []
    lines = ["| baseline | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for fusion in baselines:
        cells = []
        for metric in metrics:
            r = summary[(summary.fusion == fusion) & (summary.metric == metric)].iloc[0]
            cells.append("n/a" if not np.isfinite(r["p_value"]) else f"{r['p_value']:.3f}")
        lines.append(f"| {fusion} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(result: EvalResult, title: str = "") -> str:
    """A Markdown report: the fold ensembles (1/entropy-weighted, mean +- sd
    over seeds), the single fold models (mean +- sd over seeds x folds), the
    one-sided Mann-Whitney p-values of HyperFusion against each baseline for
    both and, where the test predictions were kept, HyperFusion's paired
    advantage over each baseline on the same test subjects."""
    ens, single = summarise(result, "entropy"), summarise(result, "single")
    n_seeds = int(ens["n"].max()) if len(ens) else 0
    n_models = int(single["n"].max()) if len(single) else 0
    lines = [f"## {title}" if title else "", ""]
    lines.append(
        f"Test: {result.test_source or f'{result.n_test} held-out subjects'}; "
        f"cross-validation on {result.n_trainval} subjects."
    )
    if result.limits:
        lines += ["", "Limits (computed from the generator's own distributions, not trained; the same for every "
                  "seed): " + ", ".join(result.limits) + ". *Distance to limit*: how far the method is from the "
                  "first limit in the main metric (for an error such as MAE, the method minus the limit). "
                  "Methods that read only the EHR compare with the EHR-only limit."]  # fmt: skip
    lines += ["", f"**Fold ensembles** (1/entropy weighted; mean +- sd over {n_seeds} seed(s)):", ""]
    lines += _table(result, ens)
    if result.headline:  # multilabel: per-label scores of the fold ensembles
        per_label = [
            m for m in result.metrics if m.split("_", 1)[0] in ("auc", "ap", "f1") and m not in result.headline
        ]
        lines += ["", "Per label (fold ensembles; AUC, average precision, F1 at the validation thresholds):", ""]
        lines += _table(result, ens, per_label)
    if n_models:
        lines += ["", f"**Single fold models** (mean +- sd over {n_models} models: seeds x folds):", ""]
        lines += _table(result, single)
    p_ens = _p_table(result, ens)
    p_single = _p_table(result, single) if n_models else []
    if p_ens:
        lines += ["", f"One-sided Mann-Whitney U p-values, {result.reference} better than the baseline, "
                  f"over the fold ensembles (n = {n_seeds} per method; the smallest p possible is "
                  f"{_min_p(n_seeds):.3f}):", ""]  # fmt: skip
        lines += p_ens
        if n_models:
            lines += ["", f"... and over the single fold models (n = {n_models} per method):", ""]
            lines += p_single
    lines += _paired_table(result)
    return "\n".join(lines).strip() + "\n"


def _paired_table(result: EvalResult) -> list[str]:
    """The paired bootstrap of the reference's fold ensemble against each
    baseline's, one column per split seed (and their mean); a line saying
    why when the report cannot have it."""
    from .bootstrap import main_score

    if result.predictions is None or result.task not in TASK_SPECS:
        return []  # an older report: it kept no predictions (its text says nothing of a paired test)
    try:
        diffs = paired_differences(result)
    except ValueError as err:
        return ["", f"No paired comparison: {err}."]
    if diffs.empty:
        return []
    main, _ = main_score(TASK_SPECS[result.task])
    seeds = sorted({s for s in diffs.seed if s != "mean"})
    columns = [*seeds, *(["mean"] if "mean" in set(diffs.seed) else [])]
    better = "higher" if higher_is_better(main) else "lower"
    lines = ["", f"{result.reference}'s advantage over each baseline in {main}, fold ensemble against fold "
             f"ensemble on the same {result.n_test} test subjects ({better} {main} counts as positive), with a 95 % "
             "paired bootstrap interval (1,000 resamples of the test subjects; the mean over the seeds both "
             "methods have); an interval that excludes 0 is a difference these test subjects establish for that "
             "split, the spread between seeds is the training's:",
             "", "| baseline | " + " | ".join(f"seed {c}" if c != "mean" else "mean over seeds" for c in columns)
             + " |", "|---" * (len(columns) + 1) + "|"]  # fmt: skip
    for baseline, part in diffs.groupby("baseline", sort=False):
        cells = {r.seed: f"{r.advantage:+.3f} [{r.low:+.3f}, {r.high:+.3f}]" for r in part.itertuples()}
        lines.append(f"| {baseline} | " + " | ".join(cells.get(c, "-") for c in columns) + " |")
    return lines


def _min_p(n: int) -> float:
    """The smallest one-sided Mann-Whitney p with n vs n samples: 1 / C(2n, n)."""
    return 1.0 / math.comb(2 * n, n) if n > 0 else math.nan


# -- saving and merging reports --------------------------------------------------
def result_meta(result: EvalResult, title: str = "", splits: dict | None = None) -> dict:
    """What a report needs besides its rows (written as ``evaluation.json``).

    Args:
        result: the evaluation.
        title: the report's title.
        splits: what the splits depend on (seeds, folds, the tables'
            SHA-256...); reports merge only when theirs are equal.

    Returns:
        A JSON-serialisable dict.
    """
    return {
        "title": title, "metrics": result.metrics, "fusions": result.fusions, "n_test": result.n_test,
        "n_trainval": result.n_trainval, "synthetic": result.synthetic, "reference": result.reference,
        "headline": result.headline, "limits": result.limits, "test_source": result.test_source,
        "task": result.task, "splits": splits or {},
    }  # fmt: skip


def result_from_report(folder: Path) -> tuple[EvalResult, str, dict]:
    """Read a report folder back: ``evaluation.csv`` and ``evaluation.json``
    (or, for a report written before that file existed, what
    ``evaluation.md`` says: the test set, the cohort size, the title).

    Returns:
        ``(result, title, splits)`` (``splits`` is ``{}`` for an older report).
    """
    import json
    import re

    folder = Path(folder)
    rows = pd.read_csv(folder / "evaluation.csv")
    meta_path = folder / "evaluation.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("evaluation.json is not a JSON object")
    else:
        text = (folder / "evaluation.md").read_text()
        found = re.search(r"Test: (.*?); cross-validation on (\d+) subjects", text) or re.search(
            r"Held-out test split: (\d+ subjects); cross-validation on the other (\d+)", text
        )  # the wording of reports from before the test-cohort option
        if found is None:
            raise ValueError(f"{folder / 'evaluation.md'} does not say what it was tested on")
        fusions = list(dict.fromkeys(rows.fusion))
        singles = set(rows[rows.ensemble == "single"].fusion)
        metrics = [c for c in rows.columns if c not in ("fusion", "seed", "ensemble", "fold")]
        test_source = found.group(1)
        multilabel = "auc_macro" in metrics
        meta = {
            "title": text.splitlines()[0].removeprefix("## ").strip(), "metrics": metrics, "fusions": fusions,
            "n_test": int(re.match(r"\d+", test_source).group(0)) if re.match(r"\d+", test_source) else 0,
            "n_trainval": int(found.group(2)), "synthetic": "SYNTHETIC" in text,
            "reference": "medfusion" if multilabel and "medfusion" in fusions else "hyperfusion",
            "headline": MULTILABEL_HEADLINE if multilabel else None,
            "limits": [f for f in fusions if f not in singles], "test_source": test_source,
        }  # fmt: skip
    splits = meta.pop("splits", {}) or {}
    title = meta.pop("title", "")
    kept = folder / "test_predictions.csv"
    predictions = pd.read_csv(kept) if kept.exists() else None
    if predictions is not None:
        lacking = {"fusion", "seed", "row", "y_0", "out_0"} - set(predictions.columns)
        if lacking:
            raise ValueError(f"{kept.name} lacks the column(s) {', '.join(sorted(lacking))}")
    return EvalResult(rows=rows, predictions=predictions, **meta), title, splits


def merge_results(results: Sequence[EvalResult], splits: Sequence[dict] | None = None) -> EvalResult:
    """One report from runs on the same folds and test set: of different
    methods on the same split seeds (e.g. two processes run side by side),
    or of other split seeds (e.g. a second seed run in a later session; a
    method may then appear in several reports, once per seed). Refuses runs
    that were not tested on the same subjects, cross-validated on the same
    cohort size or (where the reports record them) split with other folds or
    tables, and runs whose seeds overlap without being the same.

    Args:
        results: two or more :class:`EvalResult`.
        splits: each report's ``splits`` record (``{}`` where unknown).

    Returns:
        The merged result: the limits (from the reports that have them; they
        must agree), then every method in order; the test predictions when
        every report kept them.
    """
    first = results[0]
    known = [{k: v for k, v in s.items() if k != "seeds"} for s in (splits or []) if s]
    if any(s != known[0] for s in known):
        raise ValueError(
            "these reports were split differently (split seed, folds, test split or tables); they cannot be merged"
        )
    for other in results[1:]:
        same = (other.test_source, other.n_test, other.n_trainval, other.metrics) == (
            first.test_source, first.n_test, first.n_trainval, first.metrics,
        )  # fmt: skip
        if not same:
            raise ValueError("these reports were not made on the same test set and cohort; they cannot be merged")
    with_limits = [r for r in results if r.limits]
    if any(r.limits != with_limits[0].limits for r in with_limits):
        raise ValueError("these reports carry different limits; they cannot be merged")
    seeds = [frozenset(int(s) for s in r.rows.seed.unique()) for r in results]
    by_seed = any(s != seeds[0] for s in seeds)
    if by_seed and sum(map(len, seeds)) != len(frozenset().union(*seeds)):
        raise ValueError("these reports share some split seeds but not all: merge the reports of each seed "
                         "first (other methods), then the merged reports (other seeds)")  # fmt: skip
    methods = [f for r in results for f in r.fusions if f not in r.limits]
    if not by_seed and len(set(methods)) != len(methods):
        raise ValueError("a method appears in more than one report of the same split seeds")
    limits = with_limits[0].limits if with_limits else []
    rows = [r.rows[~r.rows.fusion.isin(r.limits)] for r in results]
    # a limit's rows are per seed: from the first report that has them, or from every one when the seeds differ
    for source in with_limits if by_seed else with_limits[:1]:
        rows.insert(0, source.rows[source.rows.fusion.isin(limits)])
    kept = [r.predictions for r in results]
    tasks = {r.task for r in results if r.task}  # an older report records none
    if len(tasks) > 1:
        raise ValueError(f"these reports are of different tasks ({', '.join(sorted(tasks))}); they cannot be merged")
    return replace(
        first, rows=pd.concat(rows, ignore_index=True), fusions=[*limits, *dict.fromkeys(methods)],
        limits=list(limits), synthetic=all(r.synthetic for r in results),
        predictions=pd.concat(kept, ignore_index=True) if all(k is not None for k in kept) else None,
        task=tasks.pop() if len(tasks) == 1 else "",
    )  # fmt: skip


def replace_limits(result: EvalResult, limit_rows: Mapping[str, dict[str, float]]) -> EvalResult:
    """``result`` with its limit rows computed again (e.g. by newer code):
    ``limit_rows`` maps each limit's name to its scores on the test set."""
    seeds = sorted(set(result.rows[~result.rows.fusion.isin(result.limits)].seed))
    kept = result.rows[~result.rows.fusion.isin(result.limits)]
    new = [{"fusion": name, "seed": seed, "ensemble": kind, **scores}
           for seed in seeds for name, scores in limit_rows.items() for kind in ("entropy", "mean")]  # fmt: skip
    methods = [f for f in result.fusions if f not in result.limits]
    return replace(
        result, rows=pd.concat([pd.DataFrame(new), kept], ignore_index=True),
        fusions=[*limit_rows, *methods], limits=list(limit_rows),
    )  # fmt: skip
