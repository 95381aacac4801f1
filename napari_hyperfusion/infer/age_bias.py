"""The brain-age field's age-bias correction, fitted on held-out subjects.

A brain-age regressor trained by least squares is pulled towards the mean
age of its training data: young brains come out older, old brains younger,
so the gap (brain age minus chronological age) falls with age even for
healthy people. Read by a clinician, that artefact looks like "accelerated
ageing" in the young. The field's standard remedy (Le et al. 2018, Smith et
al. 2019, de Lange & Cole 2020) fits, on subjects the model never trained
on, the linear trend of the predicted age on the chronological age,

    predicted ~ intercept + slope * age,

and reports the gap from that trend instead of from the diagonal:

    corrected gap = predicted - (intercept + slope * age)
    corrected brain age = age + corrected gap.

For a healthy held-out subject the corrected gap has mean zero at every
age. It needs the chronological age, so a corrected *brain age* is no
measure of accuracy (its MAE looks good even for a poor model: de Lange et
al. 2022, "Mind the gap"); the panel and the exports show both gaps, and
the model's own accuracy is quoted uncorrected.

Example:
    >>> bias = fit_age_bias([50.0, 60.0, 70.0], [40.0, 60.0, 80.0], fitted_on="three subjects")
    >>> round(bias.slope, 2), round(bias.corrected_gap(50.0, 40.0), 2)
    (0.5, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["AgeBias", "fit_age_bias", "MIN_SLOPE"]

MIN_SLOPE = 0.1  # below this the model barely tracks age: a "correction" would be mostly the age itself


@dataclass(frozen=True)
class AgeBias:
    """The trend ``predicted ~ intercept + slope * age`` (years) on ``n``
    held-out subjects aged ``age_range``; ``fitted_on`` says which."""

    intercept: float
    slope: float
    n: int
    age_range: tuple[float, float]
    fitted_on: str = ""

    def expected(self, age: float | np.ndarray) -> float | np.ndarray:
        """The brain age a typical held-out subject of ``age`` gets (years)."""
        value = self.intercept + self.slope * np.asarray(age, dtype=float)
        return float(value) if value.ndim == 0 else value

    def corrected_gap(self, predicted: float | np.ndarray, age: float | np.ndarray) -> float | np.ndarray:
        """Predicted minus the age trend (years); 0 for a typical subject."""
        value = np.asarray(predicted, dtype=float) - self.expected(age)
        return float(value) if value.ndim == 0 else value

    def within_range(self, age: float) -> bool:
        """Whether ``age`` lies inside the ages the trend was fitted on."""
        return self.age_range[0] <= age <= self.age_range[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"age_range": list(self.age_range)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgeBias:
        return cls(
            intercept=float(data["intercept"]), slope=float(data["slope"]), n=int(data["n"]),
            age_range=(float(data["age_range"][0]), float(data["age_range"][1])),
            fitted_on=str(data.get("fitted_on", "")),
        )  # fmt: skip


def fit_age_bias(predicted: Sequence[float], age: Sequence[float], fitted_on: str = "") -> AgeBias:
    """Least-squares trend of ``predicted`` on ``age`` (years), on held-out subjects.

    Args:
        predicted: the model's brain ages ``[N]`` for subjects it never trained on.
        age: their chronological ages ``[N]``.
        fitted_on: which subjects (kept with the model file).

    Returns:
        The :class:`AgeBias`.

    Raises:
        ValueError: fewer than 20 subjects, no spread of ages, or a slope
            below :data:`MIN_SLOPE` (a model that barely tracks age).
    """
    p = np.asarray(predicted, dtype=float)
    a = np.asarray(age, dtype=float)
    keep = np.isfinite(p) & np.isfinite(a)
    p, a = p[keep], a[keep]
    if len(a) < 20 or np.ptp(a) < 10:
        raise ValueError(f"the age trend needs at least 20 held-out subjects spanning 10 years; got {len(a)}")
    slope, intercept = np.polyfit(a, p, 1)
    if slope < MIN_SLOPE:
        raise ValueError(f"the model's brain age barely follows age (slope {slope:.2f}): no correction is meaningful")
    return AgeBias(float(intercept), float(slope), int(len(a)), (float(a.min()), float(a.max())), fitted_on)
