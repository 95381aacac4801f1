"""How far to trust an explanation: two checks against what must be true.

1. **Cascading model-parameter randomisation** (Adebayo et al. 2018,
   "Sanity checks for saliency maps"). The network's layer groups are
   re-initialised one after another from the top (the output head) down to
   the stem, and after each step every image attribution method is run
   again. A map that explains the *model* must change once the weights it
   depends on are random; a map that stays the same shows the input (edges,
   intensity), not what the network learned. Each step is compared with the
   trained model's map by Spearman rank correlation of ``|map|`` and of the
   signed map (for signed methods), and by the overlap of the top 5 % of
   voxels by ``|map|``. Re-initialised means: the state a freshly built
   network of the same configuration has (the project's own initialisation,
   hyperfan-in for generated layers, BatchNorm reset), from a fixed seed.
   A generated (hyper) layer is re-initialised by re-initialising its
   generators; the EHR embedding that feeds the generators is re-initialised
   with the highest group holding a generated layer.

2. **Completeness of Integrated Gradients relative to the output change.**
   IG's map sums to ``f(x) - f(baseline)`` up to the path integral's error;
   the error is judged as a share of that change, for the probability and
   for the class's log-odds (``output="logit"``), which does not saturate.

Both run on the CPU in minutes at the default small settings; progress is
reported as ``progress(done, total)`` and ``should_stop()`` is checked
between attributions (raising :class:`~.explain.Cancelled`).

Example:
    >>> from napari_hyperfusion.io.model_file import load_model
    >>> from napari_hyperfusion.analysis.trust import load_subjects, trust_report
    >>> model = load_model("models/ad_hyperfusion.safetensors", "cpu")  # doctest: +SKIP
    >>> subjects = load_subjects(model, "sample_data/subjects.csv", n=2)  # doctest: +SKIP
    >>> report = trust_report(model, subjects)  # doctest: +SKIP
    >>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from ..data.preprocess import Scan, load_scan
from ..errors import ExplainError
from ..io.model_file import LoadedModel
from ..nn.base import HYPER_LAYERS
from .explain import IMAGE_METHODS, Cancelled, ImageAttribution, attribute_image

__all__ = [
    "Subject",
    "RandomisationResult",
    "CompletenessRow",
    "TrustReport",
    "randomisation_steps",
    "load_subjects",
    "cascading_randomisation",
    "completeness_check",
    "trust_report",
    "spearman",
    "top_k_overlap",
]

TOP_SHARE = 0.05  # the top 5 % of voxels by |map| for the overlap
SIGNED_METHODS = ("integrated_gradients", "occlusion")


@dataclass
class Subject:
    """One subject to explain: ``scan`` (a loaded NIfTI), ``record`` (EHR
    field -> value or None), ``note`` (empty for models without notes)."""

    ident: str
    scan: Scan
    record: dict[str, Any]
    note: str = ""


# -- layer groups ---------------------------------------------------------------
def randomisation_steps(net: torch.nn.Module) -> list[tuple[str, list[str]]]:
    """The network's layer groups, top (output head) first, as
    ``(step name, [state_dict key prefixes])``.

    Pre-activation ResNet (AD): ``head``, ``block4`` (with the final norm),
    ``block3``, ``block2``, ``block1``, ``stem``. Brain-age CNN: ``head``
    (its four generated FC layers), ``stage3``, ``stage2``, ``stage1``.
    Other networks: their top-level modules, last registered first. The
    EHR embedding (``embedding.``) joins the highest group holding a
    generated layer (its generators are in that group too).

    Args:
        net: a :class:`~napari_hyperfusion.nn.base.FusionNet`.

    Returns:
        A list of ``(name, prefixes)``; applying steps ``1..i`` cumulatively
        randomises everything from the head down to step ``i``.
    """
    names = {n for n, _ in net.named_children()}
    if "blocks" in names and "stem" in names:  # the pre-activation ResNet
        n_blocks = len(net.blocks)
        steps = [("head", ["head."])]
        for i in reversed(range(n_blocks)):
            prefixes = [f"blocks.{i}."] + (["final_norm."] if i == n_blocks - 1 else [])
            steps.append((f"block{i + 1}", prefixes))
        steps.append(("stem", ["stem."]))
    elif "trunk" in names:  # the brain-age CNN: stages of [conv, relu, conv, relu, pool, bn]
        children = list(net.trunk.children())
        stage_starts = [i for i, m in enumerate(children) if isinstance(m, torch.nn.Conv3d)][::2]
        steps = [("head", ["head."])]
        for s in reversed(range(len(stage_starts))):
            end = stage_starts[s + 1] if s + 1 < len(stage_starts) else len(children)
            steps.append((f"stage{s + 1}", [f"trunk.{j}." for j in range(stage_starts[s], end)]))
    else:
        children = [n for n, m in net.named_children() if n != "embedding" and any(True for _ in m.parameters())]
        steps = [(n, [f"{n}."]) for n in reversed(children)]
        direct = [n for n, _ in net.named_parameters(recurse=False)]
        if direct and steps:
            steps[0][1].extend(direct)
    if getattr(net, "embedding", None) is not None:
        hyper = [n for n, m in net.named_modules() if isinstance(m, HYPER_LAYERS)]
        holder = next((s for s in steps if any(h.startswith(p) or f"{h}." == p for h in hyper for p in s[1])), None)
        if holder is not None:
            holder[1].append("embedding.")
    return steps


def _randomise(net: torch.nn.Module, fresh: dict[str, torch.Tensor], prefixes: Sequence[str]) -> int:
    """Copy the fresh network's state for every key under ``prefixes`` into
    ``net``; the number of tensors replaced."""
    state = {k: v for k, v in fresh.items() if any(k.startswith(p) or k == p for p in prefixes)}
    net.load_state_dict(state, strict=False)
    return len(state)


# -- measures -------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (ties get
    their mean rank); NaN when either map is constant (e.g. a Grad-CAM that
    is zero everywhere), since a rank correlation is undefined there."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} and {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra @ rb) / np.sqrt((ra @ ra) * (rb @ rb)))


def top_k_overlap(a: np.ndarray, b: np.ndarray, share: float = TOP_SHARE) -> float:
    """The share of ``a``'s top ``share`` voxels by ``|value|`` that are
    also among ``b``'s (1.0: the same voxels; ``share``: chance). NaN when
    either map is constant."""
    a, b = np.abs(np.asarray(a).ravel()), np.abs(np.asarray(b).ravel())
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    k = max(1, int(round(share * a.size)))
    top_a = set(np.argpartition(-a, k - 1)[:k].tolist())
    top_b = set(np.argpartition(-b, k - 1)[:k].tolist())
    return len(top_a & top_b) / k


# -- subjects -------------------------------------------------------------------
def load_subjects(
    model: LoadedModel, table: str | os.PathLike, n: int = 4, ids: Sequence[str] | None = None
) -> list[Subject]:
    """The first ``n`` subjects of a cohort table (or those named in
    ``ids``), checked as for prediction, with their scans loaded.

    Args:
        model: the model whose schema and task the table must fit.
        table: a cohort CSV/TSV (``sample_data/subjects.csv``, a BIDS
            ``participants.tsv``, a ``hyperfusion make-cohort`` table).
        n: how many subjects (at least 1).
        ids: subject IDs to take instead of the first ``n``.

    Returns:
        ``[Subject]`` in table order.

    Raises:
        CohortError: the table or an image cannot be used, or an ID is
            not in it; ExplainError: ``n < 1`` or the model reads no image.
    """
    from ..data.dataset import TASK_SPECS, read_cohort
    from ..errors import CohortError

    if n < 1:
        raise ExplainError(f"the number of subjects must be at least 1, got {n}")
    info = model.info
    if not info.config.uses_image:
        raise ExplainError(f"{info.name} does not read an image: there is no image map to check")
    spec = next(s for s in TASK_SPECS.values() if s.model_task == info.task)
    cohort = read_cohort(table, spec, info.schema, need_target=False, need_images=True)
    if ids:
        missing = [i for i in ids if i not in cohort.ids]
        if missing:
            raise CohortError(f"{cohort.source.name} has no subject {missing[0]!r} in column {spec.id_column}")
        index = [cohort.ids.index(i) for i in ids]
    else:
        index = list(range(min(n, len(cohort))))
    notes = cohort.notes
    out = []
    for i in index:
        row = cohort.table.iloc[i]
        record = {f.name: (None if _missing(row.get(f.name)) else row.get(f.name)) for f in info.schema.fields}
        note = notes[i] if info.config.uses_note else ""
        out.append(Subject(cohort.ids[i], load_scan(cohort.image_paths[i]), record, note))
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


# -- 1. cascading randomisation -------------------------------------------------
@dataclass
class RandomisationResult:
    """Similarity of each method's map after each randomisation step to the
    trained model's map.

    Arrays are ``[n_subjects, n_methods, n_steps]`` with step 0 the trained
    model itself (1.0 by construction) and step ``i`` the model with steps
    ``1..i`` re-initialised (``steps[i]`` names the group randomised last).
    ``spearman_signed`` is NaN for unsigned methods (their map is ``|.|``
    already); any entry is NaN where a map was constant."""

    model_name: str
    subjects: list[str]
    targets: list[str]
    methods: list[str]
    steps: list[str]
    step_prefixes: list[list[str]]
    spearman_abs: np.ndarray
    spearman_signed: np.ndarray
    top_overlap: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def mean(self, measure: str = "spearman_abs") -> np.ndarray:
        """The mean over subjects, ``[n_methods, n_steps]`` (NaN-aware)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            return np.nanmean(getattr(self, measure), axis=0)


def cascading_randomisation(
    model: LoadedModel,
    subjects: Sequence[Subject],
    methods: Sequence[str] = IMAGE_METHODS,
    seed: int = 0,
    n_steps: int = 8,
    baseline: str = "blurred",
    window: int = 8,
    stride: int = 8,
    output: str = "probability",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RandomisationResult:
    """Adebayo et al.'s cascading randomisation for ``model`` and ``subjects``.

    The model itself is not changed (a copy is randomised). Each subject's
    target is the class the trained model predicts (the age for a
    regressor), kept fixed over the steps.

    Args:
        model: a loaded image model.
        subjects: from :func:`load_subjects`.
        methods: any of :data:`~.explain.IMAGE_METHODS`.
        seed: seeds the re-initialised weights (the same seed gives the
            same numbers).
        n_steps, baseline: Integrated Gradients' settings.
        window, stride: occlusion's cube and step, in voxels.
        output: ``"probability"`` or ``"logit"`` (classifiers).
        progress: ``progress(done, total)`` after each attribution.
        should_stop: checked before each attribution; raises ``Cancelled``.

    Returns:
        A :class:`RandomisationResult` (arrays ``[subjects, methods, 1 + steps]``).
    """
    from ..nn.build import build_model

    start = time.perf_counter()
    unknown = [m for m in methods if m not in IMAGE_METHODS]
    if unknown:
        raise ExplainError(f"unknown method {unknown[0]!r}; choose from {', '.join(IMAGE_METHODS)}")
    if not subjects:
        raise ExplainError("no subjects to explain")
    net = copy.deepcopy(model.net).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = {k: v.to(model.device) for k, v in build_model(model.info.config).state_dict().items()}
    steps = randomisation_steps(net)
    work = LoadedModel(net, model.info, model.path, f"{model.sha256}+randomised", model.device)
    n_sub, n_met, n_stp = len(subjects), len(methods), len(steps) + 1
    total, done = n_sub * n_met * (n_stp + 1), 0
    kwargs = {"n_steps": n_steps, "baseline": baseline, "window": window, "stride": stride, "output": output}

    def run(m: LoadedModel, s: Subject, method: str, target: str | None) -> ImageAttribution:
        nonlocal done
        if should_stop is not None and should_stop():
            raise Cancelled()
        result = attribute_image(m, s.scan, s.record, method, target=target, note=s.note, **kwargs)  # type: ignore[arg-type]
        done += 1
        if progress is not None:
            progress(done, total)
        return result

    trained: dict[tuple[int, int], np.ndarray] = {}
    targets = []
    for i, s in enumerate(subjects):
        target = None
        for j, method in enumerate(methods):
            result = run(model, s, method, target)
            target = result.target
            trained[i, j] = result.maps
        targets.append(target)
    shape = (n_sub, n_met, n_stp)
    s_abs, s_signed, overlap = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for step in range(n_stp):
        if step > 0:
            _randomise(net, fresh, steps[step - 1][1])
        for i, s in enumerate(subjects):
            for j, method in enumerate(methods):
                maps = run(work, s, method, targets[i]).maps
                ref = trained[i, j]
                s_abs[i, j, step] = spearman(np.abs(ref), np.abs(maps))
                if method in SIGNED_METHODS:
                    s_signed[i, j, step] = spearman(ref, maps)
                overlap[i, j, step] = top_k_overlap(ref, maps)
    return RandomisationResult(
        model_name=model.info.name,
        subjects=[s.ident for s in subjects],
        targets=[str(t) for t in targets],
        methods=list(methods),
        steps=["trained", *[name for name, _ in steps]],
        step_prefixes=[[], *[list(p) for _, p in steps]],
        spearman_abs=s_abs,
        spearman_signed=s_signed,
        top_overlap=overlap,
        settings={"seed": seed, **kwargs},
        seconds=time.perf_counter() - start,
    )


# -- 2. completeness relative to the output change -------------------------------
@dataclass
class CompletenessRow:
    """IG's completeness for one subject, explaining the probability and
    the log-odds (``logit_*`` are None for a regressor).

    ``*_change``: ``f(x) - f(baseline)`` (probability, log-odds or years);
    ``*_delta``: ``|sum(map) - change|`` in the same unit; ``*_error``:
    delta / |change| (the worst view; 1.0 = 100 %). ``old_alarm``: the
    former absolute test (``delta > max(5 % of the change, 0.005)``);
    ``alarm``: the relative test, :meth:`~.explain.ImageAttribution.completeness_is_poor`."""

    subject: str
    target: str
    probability: float | None
    saturated: bool
    change: float
    delta: float
    error: float
    old_alarm: bool
    alarm: bool
    logit_change: float | None = None
    logit_delta: float | None = None
    logit_error: float | None = None
    logit_alarm: bool | None = None


def _old_alarm(a: ImageAttribution, share: float = 0.05, floor: float = 0.005) -> bool:
    """The check this project used before: an absolute floor of 0.005."""
    return bool(a.convergence_delta > max(share * abs(a.attributed_change), floor))  # type: ignore[operator]


def completeness_check(
    model: LoadedModel,
    subjects: Sequence[Subject],
    n_steps: int = 16,
    baseline: str = "blurred",
    share: float = 0.05,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[CompletenessRow]:
    """Integrated Gradients' completeness error per subject, relative to
    the output change, for the probability and (classifiers) the logit.

    Args:
        model: a loaded image model.
        subjects: from :func:`load_subjects`.
        n_steps: IG's steps (few on purpose: the check shows the error a
            quick map has).
        baseline: IG's baseline (``"zeros"``, ``"blurred"``, ``"template"``).
        share: the relative error above which ``alarm`` is set.
        progress, should_stop: as for :func:`cascading_randomisation`.

    Returns:
        One :class:`CompletenessRow` per subject; the target is the trained
        model's predicted class.
    """
    outputs = ["probability"] + (["logit"] if model.info.kind != "regression" else [])
    total, done, rows = len(subjects) * len(outputs), 0, []
    for s in subjects:
        found: dict[str, ImageAttribution] = {}
        target = None
        for output in outputs:
            if should_stop is not None and should_stop():
                raise Cancelled()
            a = attribute_image(
                model, s.scan, s.record, "integrated_gradients", target=target, baseline=baseline,
                n_steps=n_steps, note=s.note, output=output,
            )  # fmt: skip
            target = a.target
            found[output] = a
            done += 1
            if progress is not None:
                progress(done, total)
        p = found["probability"]
        row = CompletenessRow(
            subject=s.ident, target=p.target, probability=p.probability, saturated=p.saturated,
            change=float(p.attributed_change), delta=float(p.convergence_delta), error=float(p.completeness_error),
            old_alarm=_old_alarm(p, share), alarm=p.completeness_is_poor(share),
        )  # fmt: skip
        if "logit" in found:
            lg = found["logit"]
            row.logit_change, row.logit_delta = float(lg.attributed_change), float(lg.convergence_delta)
            row.logit_error, row.logit_alarm = float(lg.completeness_error), lg.completeness_is_poor(share)
        rows.append(row)
    return rows


# -- the report ------------------------------------------------------------------
METHOD_NAMES = {
    "saliency": "Saliency",
    "gradcam": "Grad-CAM",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
}


@dataclass
class TrustReport:
    """Both checks for one model, with :meth:`to_markdown`."""

    model_name: str
    synthetic: bool
    randomisation: RandomisationResult
    completeness: list[CompletenessRow]
    seconds: float = 0.0
    device: str = "cpu"
    completeness_steps: int = 16

    def randomisation_table(self, measure: str = "spearman_abs") -> str:
        """A Markdown table: one row per method, one column per step, the
        mean over subjects of ``measure`` (``spearman_abs``,
        ``spearman_signed`` or ``top_overlap``); the signed correlation
        lists the signed methods only; ``-`` where every map was constant
        (a rank correlation is undefined there)."""
        r = self.randomisation
        mean = r.mean(measure)
        head = "| method | " + " | ".join(r.steps) + " |"
        rule = "|---|" + "---:|" * len(r.steps)
        lines = [head, rule]
        for j, method in enumerate(r.methods):
            if measure == "spearman_signed" and method not in SIGNED_METHODS:
                continue
            cells = ["-" if np.isnan(v) else f"{v:.2f}" for v in mean[j]]
            lines.append(f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def completeness_table(self) -> str:
        """A Markdown table: one row per subject, the probability's and
        the logit's IG completeness errors relative to the output change."""
        has_logit = any(c.logit_error is not None for c in self.completeness)
        head = "| subject | target | p | f(x) - f(b) | error / change | old alarm | new alarm |"
        rule = "|---|---|---:|---:|---:|---|---|"
        if has_logit:
            head += " logit change | logit error / change | logit alarm |"
            rule += "---:|---:|---|"
        lines = [head, rule]
        for c in self.completeness:
            p = "-" if c.probability is None else f"{c.probability:.4f}" + (" (saturated)" if c.saturated else "")
            cells = [c.subject, c.target, p, f"{c.change:+.4g}", f"{c.error:.0%}", _yes(c.old_alarm), _yes(c.alarm)]
            if has_logit:
                cells += [
                    "-" if c.logit_change is None else f"{c.logit_change:+.4g}",
                    "-" if c.logit_error is None else f"{c.logit_error:.0%}",
                    "-" if c.logit_alarm is None else _yes(c.logit_alarm),
                ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_markdown(self, command: str | None = None) -> str:
        """The whole report as Markdown (tables and how to read them)."""
        r = self.randomisation
        s = r.settings
        steps = "; ".join(
            f"{name} ({', '.join(q.rstrip('.') for q in p)})" for name, p in zip(r.steps[1:], r.step_prefixes[1:])
        )
        subjects = ", ".join(f"{i} ({t})" for i, t in zip(r.subjects, r.targets))
        parts = [
            f"# Explanation trust report: {self.model_name}",
            "",
            "SYNTHETIC demo data, research and teaching use only: these numbers describe a demo model "
            "trained on synthetic scans, not a clinical tool."
            if self.synthetic
            else "Research use only.",
            "",
            f"Subjects (explained class): {subjects}. Explained output: {s.get('output')}. "
            f"Seed {s.get('seed')}; Integrated Gradients {s.get('n_steps')} steps against the "
            f"{s.get('baseline')} baseline ({self.completeness_steps} steps for completeness); "
            f"occlusion cube {s.get('window')} voxels, stride {s.get('stride')}.",
            "",
            "## Cascading randomisation (Adebayo et al. 2018)",
            "",
            "Each column re-initialises one more layer group, from the head down; `trained` is the "
            "model itself. Mean over subjects. A method that explains the model should fall towards 0 "
            "soon after its top layers are random; one that stays high shows the scan, not the model.",
            "",
            f"Groups re-initialised at each step: {steps}.",
            "",
            "### Spearman rank correlation of |map| with the trained model's map",
            "",
            self.randomisation_table("spearman_abs"),
            "",
            "### Spearman rank correlation of the signed map",
            "",
            "Signed methods only (saliency is |gradient| and Grad-CAM is rectified: their maps have no sign).",
            "",
            self.randomisation_table("spearman_signed"),
            "",
            f"### Overlap of the top {TOP_SHARE:.0%} voxels by |map| (chance: {TOP_SHARE:.2f})",
            "",
            self.randomisation_table("top_overlap"),
            "",
            "## Integrated Gradients completeness relative to the output change",
            "",
            "error / change = |sum(map) - (f(x) - f(baseline))| / |f(x) - f(baseline)|, the worst view. "
            "The old alarm used an absolute floor of 0.005 (in probability), which passes saturated "
            "predictions whatever their relative error; the new alarm is relative (5 %), ignoring "
            "errors below 1e-5.",
            "",
            self.completeness_table(),
            "",
            f"Computed in {self.seconds:.0f} s on {self.device}.",
        ]
        if command:
            parts += ["", f"Produced by `{command}`."]
        return "\n".join(parts) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def trust_report(
    model: LoadedModel,
    subjects: Sequence[Subject],
    methods: Sequence[str] = IMAGE_METHODS,
    seed: int = 0,
    n_steps: int = 8,
    completeness_steps: int = 16,
    baseline: str = "blurred",
    output: str = "probability",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrustReport:
    """Both checks for ``model`` on ``subjects``.

    Args:
        model, subjects, methods, seed, n_steps, baseline, output: as for
            :func:`cascading_randomisation` (``baseline`` also for
            :func:`completeness_check`).
        completeness_steps: IG's steps for :func:`completeness_check`.
        progress: ``progress(done, total)`` over both checks.
        should_stop: checked before each attribution; raises ``Cancelled``.

    Returns:
        A :class:`TrustReport`; ``report.to_markdown()`` is the document.
    """
    start = time.perf_counter()
    n_rand = len(subjects) * len(methods) * (len(randomisation_steps(model.net)) + 2)
    n_comp = len(subjects) * (1 if model.info.kind == "regression" else 2)
    total = n_rand + n_comp

    def forward_progress(offset: int) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, _total: progress(offset + done, total)

    rand = cascading_randomisation(
        model, subjects, methods, seed=seed, n_steps=n_steps, baseline=baseline, output=output,
        progress=forward_progress(0), should_stop=should_stop,
    )  # fmt: skip
    comp = completeness_check(
        model, subjects, n_steps=completeness_steps, baseline=baseline, progress=forward_progress(n_rand),
        should_stop=should_stop,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return TrustReport(
        model.info.name, bool(model.info.synthetic_data), rand, comp, seconds, str(model.device), completeness_steps
    )
