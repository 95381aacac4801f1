"""Stage 1 of MedFusionNet: per-label univariate risk-feature selection.

For every label and every EHR field, one univariate test of association
on the rows where the field was measured (missing values are left out,
not imputed, so the test sees only real measurements):

- a number (age, CSF, PET ...): Mann-Whitney U between label-positive and
  label-negative subjects; the effect is the rank-biserial correlation
  ``2 AUC - 1`` in [-1, 1] (positive: higher values in positives);
- a category (sex): chi-square test of independence; the effect is
  Cramer's V in [0, 1].

p-values are corrected over all (field, label) pairs with Benjamini-
Hochberg (``correction="fdr_bh"``), Bonferroni, or not at all. A field is
*kept for a label* when its corrected p-value is below ``alpha`` and it is
among the label's ``top_n`` smallest p-values; the network reads the union
of the kept fields. Call it on training rows only: the result is stored in
the model file and reproduced on every prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from .schema import SchemaError, TabularSchema

__all__ = ["FieldTest", "RiskSelection", "select_risk_features", "CORRECTIONS"]

CORRECTIONS = ("fdr_bh", "bonferroni", "none")
_MIN_PER_GROUP = 3


@dataclass(frozen=True)
class FieldTest:
    """One (field, label) test. ``statistic`` is U or chi-square (0 when
    the field could not be tested: too few measured, or constant), ``p`` the
    raw and ``q`` the corrected p-value, ``n`` the rows with the field
    measured, ``rank`` the field's place for this label (1 = strongest)."""

    field: str
    label: str
    test: str
    statistic: float
    effect: float
    p: float
    q: float
    n: int
    rank: int
    kept: bool


@dataclass
class RiskSelection:
    """The outcome of stage 1: every test, and what was kept."""

    tests: list[FieldTest]
    labels: list[str]
    top_n: int
    alpha: float
    correction: str
    fitted_on: str = ""

    def kept_by_label(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {label: [] for label in self.labels}
        for t in sorted(self.tests, key=lambda t: t.rank):
            if t.kept:
                out[t.label].append(t.field)
        return out

    def fields(self, schema: TabularSchema) -> list[str]:
        """Kept fields (for any label), in schema order."""
        kept = {t.field for t in self.tests if t.kept}
        return [name for name in schema.names if name in kept]

    def columns(self, schema: TabularSchema) -> list[int]:
        """Indices into ``schema.encode(...)`` of the kept fields' numbers
        (one-hot parts and missing-value indicators included)."""
        kept = set(self.fields(schema))
        out, start = [], 0
        for f in schema.fields:
            width = len(f.encoded_names)
            if f.name in kept:
                out.extend(range(start, start + width))
            start += width
        return out

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(t) for t in self.tests])

    def to_markdown(self) -> str:
        """The table a report or the README shows: field, label, test,
        statistic, effect, p, corrected p, kept."""
        lines = [
            f"Risk features: top {self.top_n} per label with {self.correction} p < {self.alpha:g}"
            + (f" (fitted on {self.fitted_on})" if self.fitted_on else ""),
            "",
            "| label | field | test | statistic | effect | p | corrected p | n | kept |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in sorted(self.tests, key=lambda t: (self.labels.index(t.label), t.rank)):
            lines.append(
                f"| {t.label} | {t.field} | {t.test} | {t.statistic:.4g} | {t.effect:+.3f} | {t.p:.2g} | "
                f"{t.q:.2g} | {t.n} | {'yes' if t.kept else 'no'} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels), "top_n": self.top_n, "alpha": self.alpha,
            "correction": self.correction, "fitted_on": self.fitted_on,
            "tests": [asdict(t) for t in self.tests],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskSelection:
        return cls(
            tests=[FieldTest(**t) for t in data["tests"]], labels=list(data["labels"]), top_n=int(data["top_n"]),
            alpha=float(data["alpha"]), correction=str(data["correction"]), fitted_on=str(data.get("fitted_on", "")),
        )  # fmt: skip


def _parsed_columns(table: pd.DataFrame, schema: TabularSchema) -> dict[str, list]:
    """Each field's values as the schema reads them (``None`` = missing)."""
    columns: dict[str, list] = {name: [] for name in schema.names}
    for _, row in table.iterrows():
        try:
            parsed = schema.parse(row)
        except SchemaError as err:
            raise ValueError(f"risk-feature selection: {err}") from None
        for name in schema.names:
            columns[name].append(parsed.get(name))
    return columns


def _test_field(values: list, positive: np.ndarray, numeric: bool) -> tuple[str, float, float, float, int]:
    from scipy.stats import chi2_contingency, mannwhitneyu

    seen = np.array([v is not None for v in values])
    n = int(seen.sum())
    pos, neg = seen & positive, seen & ~positive
    if pos.sum() < _MIN_PER_GROUP or neg.sum() < _MIN_PER_GROUP:
        return "too few measured", 0.0, 0.0, 1.0, n
    if numeric:
        x = np.array([float(v) if v is not None else np.nan for v in values])
        if np.ptp(x[seen]) == 0:
            return "constant", 0.0, 0.0, 1.0, n
        u, p = mannwhitneyu(x[pos], x[neg], alternative="two-sided")
        auc = u / (pos.sum() * neg.sum())
        return "Mann-Whitney U", float(u), float(2 * auc - 1), float(p), n
    cats = sorted({str(v) for v, s in zip(values, seen) if s})
    if len(cats) < 2:
        return "constant", 0.0, 0.0, 1.0, n
    text = np.array([str(v) for v in values])
    counts = np.array([[np.sum(pos & (text == c)), np.sum(neg & (text == c))] for c in cats])
    chi2, p, _, _ = chi2_contingency(counts, correction=False)
    v = np.sqrt(chi2 / (n * (min(counts.shape) - 1)))
    return "chi-square", float(chi2), float(v), float(p), n


def _correct(p: np.ndarray, method: str) -> np.ndarray:
    if method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * len(p), 1.0)
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(q, 1.0)
    return out


def select_risk_features(
    table: pd.DataFrame,
    y: np.ndarray,
    labels: Sequence[str],
    schema: TabularSchema,
    top_n: int = 3,
    alpha: float = 0.05,
    correction: str = "fdr_bh",
    fitted_on: str = "",
) -> RiskSelection:
    """Test every schema field against every label and keep the top ones.

    Args:
        table: the training rows only, with the schema's columns (raw
            values; missing ones empty).
        y: ``[N, L]`` 0/1 labels of those rows.
        labels: the ``L`` label names.
        top_n: at most this many fields per label (>= 1).
        alpha: threshold on the corrected p-value, in (0, 1].
        correction: ``"fdr_bh"``, ``"bonferroni"`` or ``"none"``.
    """
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[1] != len(labels) or y.shape[0] != len(table):
        raise ValueError(f"y must be [{len(table)}, {len(labels)}], got {list(y.shape)}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    columns = _parsed_columns(table, schema)
    raw = []
    for j, label in enumerate(labels):
        positive = y[:, j].astype(bool)
        for f in schema.fields:
            raw.append((f.name, label, *_test_field(columns[f.name], positive, f.kind == "number")))
    q = _correct(np.array([r[5] for r in raw], dtype=np.float64), correction)
    tests: list[FieldTest] = []
    for label in labels:
        mine = [i for i, r in enumerate(raw) if r[1] == label]
        mine.sort(key=lambda i: (raw[i][5], -abs(raw[i][4])))
        for rank, i in enumerate(mine, start=1):
            name, _, test, stat, effect, p, n = raw[i]
            kept = bool(q[i] < alpha and rank <= top_n)
            tests.append(FieldTest(name, label, test, stat, effect, p, float(q[i]), n, rank, kept))
    return RiskSelection(tests, list(labels), top_n, alpha, correction, fitted_on)
