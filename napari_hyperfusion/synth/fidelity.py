"""How far a model's what-if curves agree with the generator's exact answer.

For each SYNTHETIC subject of a cohort the generator made, and each EHR field,
the model's response curve (the panel's slider swept over the field's range,
the scan and every other field held, unknown fields left unknown) is set
beside the truth's: the exact posterior of the process that made the data,
given the same record and the subject's true regional volumes
(:func:`napari_hyperfusion.synth.truth.ad_truth_curve`, which the panel's
"Show the ground truth" draws). Two truths: the one the model can reach,
conditioned on the volumes its views hold (:func:`.coverage.seen_volumes`;
the AD crops hold the hippocampi and entorhinal cortices, not the
ventricles), and the one that knows every volume. A field the record does not know stays
unknown for both: the model fills it and sets its "was missing" indicator,
the truth integrates over it (which values are missing is evidence).

Per field, over all subjects (AD task; probabilities of CN / MCI / AD):

- ``mean_abs_diff``: mean over subjects, grid points and classes of
  ``|P_model - P_truth|``;
- ``effect_model`` / ``effect_truth``: the mean of ``|P(AD) at the top of
  the range - P(AD) at the bottom|``, the change the slider shows across
  the field's range; ``effect_ratio`` their quotient (1: the model shows
  effects of the true size; 3: three times too large);
- ``wrong_sign``: of the curves whose true change is at least 0.02 (0.5
  years for brain age), how many the model moves the other way;
- ``ece``: expected calibration error against the exact posterior: the
  grid points of all curves binned by the model's probability (10 bins,
  each class one-vs-rest), ``sum_b w_b |mean P_model - mean P_truth|``,
  averaged over classes.

Brain age (the output is years, the only field is sex): the same with years
for probabilities and the change between the sexes as the effect; no ECE.

:func:`support_summary` splits the same curves where the slider leaves the
training data given the rest of the record (:mod:`~napari_hyperfusion.analysis.support`,
the grey band of the panel's curve): how much of each sweep lies outside,
the mean difference inside and outside, and the wrong signs counted over the
part of each curve that lies inside.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis.support import curve_outside
from ..analysis.whatif import WhatIfSession, field_grid
from ..errors import CohortError, HyperFusionError
from ..io.model_file import LoadedModel
from .coverage import seen_volumes
from .truth import EHR_FIELDS, VOLUME_FIELDS, ad_truth_curve, brain_age_estimate, has_ground_truth, truth_task

__all__ = [
    "FIDELITY_FIELDS", "FidelityGoals", "CurvePair", "whatif_curves", "fidelity_summary", "to_markdown",
    "support_summary", "support_markdown",
]  # fmt: skip

FIDELITY_FIELDS = ("AGE", "APOE4", "ABETA", "TAU", "PTAU")  # the fields: what a lecture moves


@dataclass(frozen=True)
class FidelityGoals:
    """What a model shipped for teaching must meet (AD task)."""

    mean_abs_diff: float = 0.05
    effect_ratio: tuple[float, float] = (0.5, 1.5)
    wrong_sign: int = 0
    ece: float = 0.05
    moves: float = 0.02  # a true change at least this large has a sign to get right
    moves_years: float = 0.5  # the same for brain age


@dataclass
class CurvePair:
    """One subject's curve over one field: the model's and the truth's.

    ``model``, ``truth`` and ``truth_all`` are ``[n_values, K]``
    (probabilities, or years for brain age): ``truth`` conditions on the
    volumes the model's views hold, ``truth_all`` on every true volume;
    ``known`` says whether the record knew the field; ``outside`` (``bool
    [n_values]``) where the value leaves the training data given the rest
    of the record."""

    subject: str
    field: str
    values: list
    model: np.ndarray
    truth: np.ndarray
    known: bool
    truth_all: np.ndarray | None = None
    outside: np.ndarray | None = None

    def against(self, which: str) -> np.ndarray:
        """The truth named ``which``: ``"view"`` or ``"all"``."""
        return self.truth if which == "view" or self.truth_all is None else self.truth_all


def _task(model: LoadedModel) -> str:
    info = model.info
    task = truth_task(info)
    if task is not None:
        return task
    raise HyperFusionError(
        f"{info.name} answers {', '.join(info.outputs)}: the generator's exact answer exists for the synthetic "
        "AD task (CN / MCI / AD) and for brain age only"
    )


def whatif_curves(
    model: LoadedModel,
    table: str | os.PathLike,
    n: int = 20,
    fields: Sequence[str] | None = None,
    points: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> list[CurvePair]:
    """The model's and the truth's response curves for the first ``n``
    subjects of a synthetic cohort table.

    Args:
        model: a loaded AD (CN / MCI / AD) or brain-age model.
        table: a ``hyperfusion make-cohort`` table (it has the generator's
            ground-truth columns); images are read as for prediction.
        n: how many subjects, from the top of the table.
        fields: the EHR fields to sweep (default :data:`FIDELITY_FIELDS`
            that the model reads; brain age: sex).
        points: grid points per numeric field (integer fields take their
            whole numbers).
        progress: ``progress(done, total)`` after each subject.

    Returns:
        ``[CurvePair]``, subject by subject, field by field.

    Raises:
        CohortError: the table cannot be used or lacks the ground truth.
        HyperFusionError: the model answers a task without a truth.
    """
    from ..data.dataset import TASK_SPECS, read_cohort
    from ..data.preprocess import load_scan

    task = _task(model)
    info = model.info
    spec = next(s for s in TASK_SPECS.values() if s.model_task == info.task)
    cohort = read_cohort(table, spec, info.schema, need_target=False, need_images=info.config.uses_image)
    if not len(cohort) or not has_ground_truth(cohort.table.iloc[0], task):
        raise CohortError(
            f"{cohort.source.name} has no ground-truth columns (HIPPOCAMPUS_PERMILLE, ...): the fidelity "
            "needs a table made by `hyperfusion make-cohort`"
        )
    default = FIDELITY_FIELDS if task == "ad" else ("PTGENDER",)
    fields = [f for f in (fields or default) if f in info.schema.names]
    unknown = [f for f in (fields or []) if f not in EHR_FIELDS]
    if not fields or unknown:
        raise HyperFusionError(f"no field to sweep: {info.name} reads {', '.join(info.schema.names)}")
    pairs: list[CurvePair] = []
    seen = seen_volumes(info.image if info.config.uses_image else None)
    count = min(n, len(cohort))
    for i in range(count):
        row = cohort.table.iloc[i]
        record = info.schema.parse(row)  # None where the record does not know a field
        scan = load_scan(cohort.image_paths[i]) if info.config.uses_image else None
        session = WhatIfSession(model, scan, cohort.ids[i])
        truth_row = {**row.to_dict(), **{k: (np.nan if v is None else v) for k, v in record.items()}}
        for name in fields:
            values = field_grid(info.schema[name], points)
            curve = session.response_curve(record, name, n=points)
            if task == "ad":
                truth = ad_truth_curve(truth_row, name, values, seen)
                truth_all = ad_truth_curve(truth_row, name, values, VOLUME_FIELDS)
            else:  # the brain-age estimate reads every volume: only whole-brain models have one
                swept = pd.DataFrame([{**truth_row, name: v} for v in values])
                truth = truth_all = brain_age_estimate(swept)[:, None]
            known = record[name] is not None
            outside = curve_outside(info.schema, record, name, values)
            pairs.append(CurvePair(cohort.ids[i], name, values, curve.outputs, truth, known, truth_all, outside))
        if progress:
            progress(i + 1, count)
    return pairs


def _ece(model: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """Calibration error of ``model [M, K]`` against the exact ``truth [M, K]``."""
    errors = []
    edges = np.linspace(0, 1, bins + 1)
    for k in range(model.shape[1]):
        which = np.clip(np.digitize(model[:, k], edges[1:-1]), 0, bins - 1)
        total = 0.0
        for b in range(bins):
            inside = which == b
            if inside.any():
                total += inside.mean() * abs(model[inside, k].mean() - truth[inside, k].mean())
        errors.append(total)
    return float(np.mean(errors))


def fidelity_summary(
    pairs: Sequence[CurvePair], goals: FidelityGoals = FidelityGoals(), against: str = "view"
) -> pd.DataFrame:
    """One row per field and an ``all`` row: the measures of the module
    docstring, and ``meets`` (whether the field meets ``goals``).

    Args:
        pairs: from :func:`whatif_curves`.
        goals: the thresholds.
        against: ``"view"``: the truth given the volumes the model's views
            hold (what it can reach); ``"all"``: given every true volume.

    Returns:
        Columns ``field, curves, mean_abs_diff, effect_model, effect_truth,
        effect_ratio, truth_moves, wrong_sign, ece, meets``.
    """
    rows = []
    regression = pairs and pairs[0].model.shape[1] == 1
    k = 0 if regression else -1  # the effect: years, or P(AD) (the last class)
    groups = {name: [p for p in pairs if p.field == name] for name in dict.fromkeys(p.field for p in pairs)}
    groups["all"] = list(pairs)
    for name, group in groups.items():
        truths = [p.against(against) for p in group]
        diff = np.concatenate([np.abs(p.model - t).ravel() for p, t in zip(group, truths)])
        d_model = np.array([p.model[-1, k] - p.model[0, k] for p in group])
        d_truth = np.array([t[-1, k] - t[0, k] for t in truths])
        moves = np.abs(d_truth) >= (goals.moves_years if regression else goals.moves)
        wrong = int(np.sum(moves & (np.sign(d_model) != np.sign(d_truth))))
        effect_model, effect_truth = float(np.abs(d_model).mean()), float(np.abs(d_truth).mean())
        ratio = effect_model / effect_truth if effect_truth > 1e-12 else float("nan")
        ece = float("nan") if regression else _ece(np.vstack([p.model for p in group]), np.vstack(truths))
        low, high = goals.effect_ratio
        meets = (
            not regression
            and float(diff.mean()) <= goals.mean_abs_diff
            and (effect_truth < goals.moves or low <= ratio <= high)
            and wrong <= goals.wrong_sign
            and ece <= goals.ece
        )
        rows.append({
            "field": name, "curves": len(group), "mean_abs_diff": float(diff.mean()), "effect_model": effect_model,
            "effect_truth": effect_truth, "effect_ratio": ratio, "truth_moves": int(moves.sum()),
            "wrong_sign": wrong, "ece": ece, "meets": "yes" if meets else ("-" if regression else "no"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def to_markdown(summary: pd.DataFrame, regression: bool = False, goals: FidelityGoals = FidelityGoals()) -> str:
    """The summary as a Markdown table (years for brain age)."""
    unit = "years" if regression else "P"
    moves = f"{goals.moves_years} years" if regression else f"{goals.moves}"
    head = (
        f"| field | curves | mean abs. difference ({unit}) | effect: model | effect: truth | ratio | "
        f"truth moves >= {moves} | wrong sign | ECE vs truth | meets the goals |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in summary.itertuples():
        ece = "-" if np.isnan(r.ece) else f"{r.ece:.3f}"
        ratio = "-" if np.isnan(r.effect_ratio) else f"{r.effect_ratio:.2f}"
        lines.append(
            f"| {r.field} | {r.curves} | {r.mean_abs_diff:.3f} | {r.effect_model:.3f} | {r.effect_truth:.3f} | "
            f"{ratio} | {r.truth_moves} | {r.wrong_sign} | {ece} | {r.meets} |"
        )
    return "\n".join(lines) + "\n"


def support_summary(
    pairs: Sequence[CurvePair], goals: FidelityGoals = FidelityGoals(), against: str = "view"
) -> pd.DataFrame:
    """The curves split where the slider leaves the training data.

    Args:
        pairs: from :func:`whatif_curves` (with ``outside``).
        goals: for the size of a true change that has a sign to get right.
        against: which truth (see :func:`fidelity_summary`).

    Returns:
        One row per field and ``all``: ``curves``, ``outside`` (share of the
        grid points outside), ``diff_inside`` / ``diff_outside`` (mean
        ``|model - truth|`` there; NaN where there are none), ``moves`` /
        ``wrong_sign`` over whole curves (as :func:`fidelity_summary`) and
        ``moves_inside`` / ``wrong_inside``: the same over the part of each
        curve that lies inside (its first to its last inside point).
    """
    regression = pairs and pairs[0].model.shape[1] == 1
    k = 0 if regression else -1
    threshold = goals.moves_years if regression else goals.moves
    groups = {name: [p for p in pairs if p.field == name] for name in dict.fromkeys(p.field for p in pairs)}
    groups["all"] = list(pairs)
    rows = []
    for name, group in groups.items():
        inside_diffs, outside_diffs, counts = [], [], np.zeros(4, dtype=int)
        points = outside_points = 0
        for p in group:
            truth = p.against(against)
            out = p.outside if p.outside is not None else np.zeros(len(p.values), dtype=bool)
            diff = np.abs(p.model - truth)
            inside_diffs.append(diff[~out].ravel())
            outside_diffs.append(diff[out].ravel())
            points, outside_points = points + len(out), outside_points + int(out.sum())
            for j, idx in enumerate((np.arange(len(out)), np.flatnonzero(~out))):
                if len(idx) < 2:
                    continue
                d_model, d_truth = p.model[idx[-1], k] - p.model[idx[0], k], truth[idx[-1], k] - truth[idx[0], k]
                if abs(d_truth) >= threshold:
                    counts[2 * j] += 1
                    counts[2 * j + 1] += int(np.sign(d_model) != np.sign(d_truth))
        inside, outside = np.concatenate(inside_diffs), np.concatenate(outside_diffs)
        rows.append({
            "field": name, "curves": len(group), "outside": outside_points / max(points, 1),
            "diff_inside": float(inside.mean()) if inside.size else float("nan"),
            "diff_outside": float(outside.mean()) if outside.size else float("nan"),
            "moves": int(counts[0]), "wrong_sign": int(counts[1]),
            "moves_inside": int(counts[2]), "wrong_inside": int(counts[3]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def support_markdown(summary: pd.DataFrame, regression: bool = False) -> str:
    """:func:`support_summary` as a Markdown table."""
    unit = "years" if regression else "P"

    def cell(v: float) -> str:
        return "-" if np.isnan(v) else f"{v:.3f}"

    lines = [
        f"| field | curves | grid points outside the data | mean abs. difference ({unit}) inside / outside | "
        "wrong sign: whole curves (of those whose truth moves) | wrong sign: the part inside the data |",
        "|" + "---|" * 6,
    ]
    for r in summary.itertuples():
        lines.append(
            f"| {r.field} | {r.curves} | {r.outside:.0%} | {cell(r.diff_inside)} / {cell(r.diff_outside)} | "
            f"{r.wrong_sign} of {r.moves} | {r.wrong_inside} of {r.moves_inside} |"
        )
    return "\n".join(lines).replace("%", " %") + "\n"
