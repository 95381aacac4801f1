"""What a what-if change did, in one plain sentence, with flags where the
model contradicts clinical expectation or the values leave the training data.

The sentence names the changed fields (new value and the patient's), the
output that moved most (with both values), and how far the generated
network moved on the weight-space map. The clinical expectations are the
well-established directions of the AD literature for a CN / MCI / AD
classifier: the probability of AD should not fall as age, APOE e4 alleles,
CSF tau / p-tau or amyloid PET rise, or as CSF Abeta42 or FDG-PET fall. A
flag is raised only when every changed field points the same way, so the
model's answer can be compared with the expectation at all.

Example:
    >>> from napari_hyperfusion.data.schema import adni_schema
    >>> lines = narrate(adni_schema(), ["CN", "MCI", "AD"], {"AGE": 62.0}, {"AGE": 85.0},
    ...                 [0.01, 0.0, 0.99], [0.5, 0.36, 0.14])
    >>> lines[0]
    'At Age 85 years instead of 62, P(AD) falls from 99 % to 14 %.'
    >>> lines[1].startswith("Unexpected: P(AD) fell as Age rose")
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..data.schema import TabularSchema
from .support import SUPPORT_Z, check_support

__all__ = ["narrate", "AD_EXPECTATIONS", "change_words", "change_bar"]

# +1: a higher value should not lower P(AD); -1: a lower value should not lower it
AD_EXPECTATIONS = {"AGE": +1, "APOE4": +1, "TAU": +1, "PTAU": +1, "AV45": +1, "ABETA": -1, "FDG": -1}


# where the data explain a direction that looks wrong
_REASONS = {
    "AGE": (
        "Here the data explain it: the scan is held fixed, and the same atrophy is expected at an older age "
        "and alarming at a younger one, so the true posterior falls too (for the synthetic subjects, "
        "'Show the ground truth' draws it)."
    ),
}


# relative change of a generated layer's parameters -> words (upper bounds)
CHANGE_SCALE = ((0.02, "barely moved"), (0.10, "a small change"), (0.30, "a clear change"),
                (0.60, "a large change"), (float("inf"), "a different network"))  # fmt: skip


def change_words(relative: float) -> str:
    """A generated layer's relative change in plain words.

    Args:
        relative: ``||P(what-if) - P(patient)|| / ||P(patient)||`` (0.25 = 25 %).

    Returns:
        e.g. ``"a clear change"`` (scale: < 2 % barely moved, < 10 % small,
        < 30 % clear, < 60 % large, above: a different network).

    Example:
        >>> change_words(0.25)
        'a clear change'
    """
    return next(words for bound, words in CHANGE_SCALE if relative < bound)


def change_bar(relative: float, cells: int = 10) -> str:
    """A text bar for a relative change, full at 100 %: ``"###-------"`` style
    with block characters, e.g. ``change_bar(0.3) == "███" + "░" * 7``."""
    filled = int(round(min(max(relative, 0.0), 1.0) * cells))
    return "█" * filled + "░" * (cells - filled)


def _fmt(value: Any) -> str:
    if value is None:
        return "not known"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _changed(patient: Mapping[str, Any], whatif: Mapping[str, Any]) -> list[str]:
    out = []
    for name, value in whatif.items():
        before = patient.get(name)
        if isinstance(value, str) or isinstance(before, str) or before is None:
            if str(value) != str(before):
                out.append(name)
        elif abs(float(value) - float(before)) > 1e-9:
            out.append(name)
    return out


def narrate(
    schema: TabularSchema,
    outputs: Sequence[str],
    patient: Mapping[str, Any],
    whatif: Mapping[str, Any],
    base: Sequence[float],
    values: Sequence[float],
    kind: str = "multiclass",
    unit: str = "",
    map_ratio: float | None = None,
    ranges: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """The sentence for one what-if state, then its flags.

    Args:
        schema: the model's EHR schema (display names and units).
        outputs: the output names, ``[K]``.
        patient: the patient's values (``None`` where the record does not know a field).
        whatif: the what-if values (``None``: not known).
        base: the prediction at the patient's values, ``[K]`` (probabilities, or the value in ``unit``).
        values: the prediction at the what-if values, ``[K]``.
        kind: ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        unit: the regression output's unit.
        map_ratio: how far the generated network moved on the weight-space
            map, in typical distances between two training subjects.
        ranges: the training rows' ranges per field (``input_stats["ehr"]``:
            ``p1`` / ``p99`` or ``levels``), for the out-of-range flag.

    Returns:
        ``[sentence, *flags]``; the sentence says "no change" when nothing moved.
    """
    changed = _changed(patient, whatif)
    if not changed:
        return ["At the patient's own values: nothing changed."]
    parts = []
    for name in changed:
        field = schema[name]
        unit_text = f" {field.unit}" if field.unit else ""
        parts.append(f"{field.display_name} {_fmt(whatif[name])}{unit_text} instead of {_fmt(patient.get(name))}")
    where = "At " + " and ".join(parts)
    if kind == "regression":
        delta = float(values[0]) - float(base[0])
        verb = "rises" if delta > 0 else "falls" if delta < 0 else "stays"
        effect = f"{outputs[0]} {verb} from {base[0]:.1f} to {values[0]:.1f} {unit}".rstrip()
    else:
        k = max(range(len(outputs)), key=lambda i: abs(float(values[i]) - float(base[i])))
        if abs(float(values[k]) - float(base[k])) <= 0.005:  # nothing moved: say the most likely output
            k = max(range(len(outputs)), key=lambda i: float(values[i]))
        delta = float(values[k]) - float(base[k])
        verb = "rises" if delta > 0.005 else "falls" if delta < -0.005 else "stays"
        effect = f"P({outputs[k]}) {verb} from {base[k]:.0%} to {values[k]:.0%}".replace("%", " %")
        if verb == "stays":
            effect = f"P({outputs[k]}) stays at {values[k]:.0%}".replace("%", " %")
    sentence = f"{where}, {effect}"
    if map_ratio is not None:
        sentence += f"; the generated network moved {map_ratio:.2f} typical inter-subject distances"
    lines = [sentence + "."]
    lines += _expectation_flags(schema, outputs, patient, whatif, base, values, changed, kind)
    flagged = _range_flags(schema, whatif, changed, ranges or {})
    lines += list(flagged.values())
    lines += _support_flags(schema, whatif, [n for n in changed if n not in flagged])
    return lines


def _expectation_flags(schema, outputs, patient, whatif, base, values, changed, kind) -> list[str]:
    if kind != "multiclass" or "AD" not in outputs or any(name not in AD_EXPECTATIONS for name in changed):
        return []
    if any(whatif[n] is None or patient.get(n) is None for n in changed):
        return []  # a value made known or unknown has no direction to compare with
    directions = {AD_EXPECTATIONS[n] * (1 if float(whatif[n]) > float(patient[n]) else -1) for n in changed}
    if len(directions) != 1:
        return []  # the changes pull in different directions: no expectation to compare with
    k = list(outputs).index("AD")
    delta = float(values[k]) - float(base[k])
    expected_up = directions.pop() > 0
    if (expected_up and delta < -0.02) or (not expected_up and delta > 0.02):
        moves = " and ".join(
            f"{schema[n].display_name} {'rose' if float(whatif[n]) > float(patient[n]) else 'fell'}" for n in changed
        )
        reason = _REASONS.get(changed[0], "") if len(changed) == 1 else ""
        return [
            f"Unexpected: P(AD) {'fell' if delta < 0 else 'rose'} as {moves}, against the clinical "
            "expectation. "
            + (reason or "A model can learn such a direction from its training data (a synthetic cohort's "
               "confounding, a small sample) rather than from disease; read it as what this model does, "
               "not as medicine.")
        ]  # fmt: skip
    return []


def _support_flags(schema, whatif, changed) -> list[str]:
    """A flag for each changed value that is in its own range but, given the
    record's other fields, forms a record the training data do not hold
    (:mod:`.support`).

    Args:
        schema: the fitted schema (its joint moments of the training rows).
        whatif: the what-if values.
        changed: the fields to check (those the range flags did not already flag).

    Returns:
        One sentence per such field.
    """
    flags = []
    for name in changed:
        field = schema[name]
        check = check_support(schema, whatif, name)
        if check is None or not check.outside or not check.partners:
            continue
        unit = f" {field.unit}" if field.unit else ""
        given = " and ".join(
            f"{schema[p].display_name} at {_fmt(whatif[p])}{' ' + schema[p].unit if schema[p].unit else ''} "
            f"(correlation {r:+.2f} with it in the training rows)"
            for p, r in check.partners[:2]
        )
        flags.append(
            f"Outside the training data as a whole: with {given}, the training data put "
            f"{field.display_name} near {_fmt(check.expected)} +- {_fmt(check.sd)}{unit}; {_fmt(check.value)} is "
            f"{abs(check.z):.1f} SD away (beyond {SUPPORT_Z:g}), a combination the training data hardly hold (fewer "
            "than 1 in 100 records lie this far). The model extrapolates here and need not say what the data say; "
            "the ground truth, where the panel offers it, shows the difference."
        )
    return flags


def _range_flags(schema, whatif, changed, ranges) -> dict[str, str]:
    """``{field: flag}`` for each changed value outside the training rows'
    levels or 1st-99th percentiles (``ranges``: ``input_stats["ehr"]``)."""
    flags = {}
    for name in changed:
        stats = ranges.get(name) or {}
        value = whatif[name]
        field = schema[name]
        if value is None:
            continue
        if "levels" in stats:
            if str(value) not in [str(level) for level in stats["levels"]]:
                flags[name] = f"{field.display_name} = {_fmt(value)} never occurs in the training data."
        elif "p1" in stats and not isinstance(value, str):
            low, high = float(stats["p1"]), float(stats["p99"])
            if not low <= float(value) <= high:
                unit = f" {field.unit}" if field.unit else ""
                flags[name] = (
                    f"Outside the training data: {field.display_name} {_fmt(value)}{unit} is beyond the training "
                    f"rows' 1st-99th percentiles ({_fmt(low)} to {_fmt(high)}); the model extrapolates here."
                )
    return flags
