"""Is a what-if value one the training data hold, given the rest of the record?

A slider moves one field and holds the others. Each value can lie inside its
own training range and still form a record no training subject had: total
tau and p-tau rise together (correlation 0.84 in the shipped AD model's
training rows), so a high tau with the patient's normal p-tau is far from
every training record, and there a model only extrapolates (the what-if
fidelity report finds the model's curves 1.4-1.8 times further from the
truth there, and every wrong-sign p-tau curve).

The check uses what every model file already carries: the joint mean and
covariance of the numeric EHR fields on its training rows
(:class:`~napari_hyperfusion.data.schema.TabularSchema`, the same moments
its conditional fill uses). The field's value is compared with its
conditional distribution given the other *known* numeric fields (a Gaussian
approximation): ``z = (value - expected) / sd``. Beyond ``SUPPORT_Z``
conditional SDs the value is outside the data. Calibrated on the 1,000
fresh subjects of ``data/ad_test1000`` with the shipped AD model's
moments: their own values lie beyond 3 SDs for at most 0.9 % of them per
field (docs/models.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.schema import TabularSchema

__all__ = ["SUPPORT_Z", "SupportCheck", "check_support", "curve_outside"]

SUPPORT_Z = 3.0  # conditional SDs; fresh subjects' own values pass at >= 99.1 % per field


@dataclass(frozen=True)
class SupportCheck:
    """One field's value against its conditional distribution.

    ``expected`` and ``sd`` are in the field's unit; ``z`` is
    ``(value - expected) / sd`` in conditional SDs (positive above the
    expectation); ``partners`` are the known fields that move the
    expectation most, strongest first (each with its correlation with the
    field in the training rows)."""

    field: str
    value: float
    expected: float
    sd: float
    z: float
    partners: tuple[tuple[str, float], ...]

    @property
    def outside(self) -> bool:
        return abs(self.z) > SUPPORT_Z


def check_support(schema: TabularSchema, record: Mapping[str, Any], field: str) -> SupportCheck | None:
    """``field``'s value in ``record`` against the training rows' conditional
    distribution given the record's other known numeric fields.

    Args:
        schema: a fitted schema (with ``joint_mean`` / ``joint_cov``).
        record: ``{name: value or None}`` (``None``: not known).
        field: a field of kind ``"number"``.

    Returns:
        The check, or ``None`` when the schema has no joint moments, the
        field is not numeric or not known, or the conditional SD is zero.
    """
    joint = schema.joint_fields
    names = [f.name for f in joint]
    if not schema.joint_mean or field not in names or record.get(field) is None or schema[field].kind != "number":
        return None  # sex or a category has no "how far from expected" in SDs
    cov = np.asarray(schema.joint_cov, dtype=np.float64)
    i = names.index(field)
    known = [k for k, f in enumerate(joint) if k != i and record.get(f.name) is not None]
    value = joint[i].as_number(record[field])
    x = np.array([joint[k].as_number(record[joint[k].name]) for k in known])
    mean, variance, weights = schema.conditional_normal([i], known, x)
    expected, var, weights = mean[0], variance[0, 0], weights[:, 0]
    if not var > 0:
        return None
    sd = float(np.sqrt(var))
    # which known fields carry the expectation: each one's share of the explained variance
    share = weights * cov[known, i] if known else np.zeros(0)
    order = [known[j] for j in np.argsort(-share) if share[j] > 0.05 * cov[i, i]]
    corr = {k: cov[i, k] / np.sqrt(cov[i, i] * cov[k, k]) for k in order}
    partners = tuple((names[k], float(corr[k])) for k in order)
    return SupportCheck(field, float(value), float(expected), sd, float((value - expected) / sd), partners)


def curve_outside(schema: TabularSchema, record: Mapping[str, Any], field: str, values: Sequence[Any]) -> np.ndarray:
    """Which points of a response curve lie outside the data.

    Args:
        schema: a fitted schema.
        record: the record the curve holds (the swept field's own value is replaced).
        field: the swept field.
        values: the curve's values of ``field``, ``[n]``.

    Returns:
        ``bool [n]``: True where the value is more than ``SUPPORT_Z``
        conditional SDs from what the other known fields lead one to expect
        (all False where no check is possible).
    """
    if not len(values):
        return np.zeros(0, dtype=bool)
    # the expectation depends on the other fields only: one check, then every value's z
    check = check_support(schema, {**record, field: values[0]}, field)
    if check is None:
        return np.zeros(len(values), dtype=bool)
    numbers = np.array([schema[field].as_number(v) for v in values], dtype=np.float64)
    return np.abs(numbers - check.expected) / check.sd > SUPPORT_Z
