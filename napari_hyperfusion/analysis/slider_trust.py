"""How far a what-if slider can be trusted: its field's effect in the model
against the generator's exact answer on fresh synthetic subjects.

A slider shows what the *model* does when one EHR field moves. Whether that
is what the *data* hold is measured by ``hyperfusion whatif-fidelity``
(:mod:`napari_hyperfusion.synth.fidelity`): for each field, the model's
change across the field's range beside the truth's, and how many curves
slope the wrong way where the truth moves. ``whatif-fidelity --write``
stores that per-field summary in the model file (``input_stats.
whatif_fidelity``); the panel reads it here and says, for the field a user
explores, whether the slider agrees with the data or shows the model's own
habit (an effect several times the data's, or the wrong direction).

A slider *agrees* when its effect is within the issue's goal band of the
truth's (0.5 to 1.5 times) and it slopes the wrong way for at most
``WRONG_SIGN_SHARE`` of the subjects whose truth moves. The numbers are the
model file's own, measured once on subjects it never trained on; a model
without them (any file we did not check) says so instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = [
    "EFFECT_BAND",
    "WRONG_SIGN_SHARE",
    "TRUTH_MOVES_P",
    "TRUTH_MOVES_YEARS",
    "SliderTrust",
    "fidelity_record",
    "slider_trust",
]

EFFECT_BAND = (0.5, 1.5)  # the model's effect over the truth's (issue 26's goal)
WRONG_SIGN_SHARE = 0.05  # of the curves whose truth moves; a handful of borderline curves is noise
# a change of the truth smaller than this has no direction to get right (FidelityGoals.moves, moves_years)
TRUTH_MOVES_P, TRUTH_MOVES_YEARS = 0.02, 0.5


@dataclass(frozen=True)
class SliderTrust:
    """One field's effect in the model against the truth's.

    Attributes:
        field: the schema name (e.g. ``"TAU"``).
        subjects: fresh synthetic subjects the curves were drawn for.
        effect_model: mean absolute change of the output across the
            field's range (probability of the last class, or years).
        effect_truth: the same for the generator's exact answer.
        truth_moves: curves whose truth moves enough to have a direction.
        wrong_sign: of those, curves whose model slope has the other sign.
        regression: True for brain age (years), False for P(AD).
    """

    field: str
    subjects: int
    effect_model: float
    effect_truth: float
    truth_moves: int
    wrong_sign: int
    regression: bool

    @property
    def moves(self) -> float:
        """The smallest change with a direction to get right (as the report's goals)."""
        return TRUTH_MOVES_YEARS if self.regression else TRUTH_MOVES_P

    @property
    def ratio(self) -> float | None:
        """The model's effect over the truth's; None where the truth barely moves."""
        return self.effect_model / self.effect_truth if self.effect_truth >= self.moves else None

    @property
    def size_agrees(self) -> bool:
        if self.ratio is None:  # the data barely move the output: so should the model
            return self.effect_model < 2 * self.moves
        return EFFECT_BAND[0] <= self.ratio <= EFFECT_BAND[1]

    @property
    def sign_agrees(self) -> bool:
        return self.wrong_sign <= WRONG_SIGN_SHARE * max(self.truth_moves, 1)

    @property
    def agrees(self) -> bool:
        return self.size_agrees and self.sign_agrees

    def text(self, display_name: str) -> str:
        """One plain sentence for the panel, e.g. ``"Caution: CSF total tau
        moves the output the wrong way for 23 of 38 subjects ..."``."""
        unit, digits = ("years", 1) if self.regression else ("in P(AD)", 2)
        sizes = f"{self.effect_model:.{digits}f} {unit} across its range; the truth {self.effect_truth:.{digits}f}"
        if self.ratio is None:
            size = f"by {sizes}, where the data barely move it"
        else:
            size = f"{self.ratio:.2f}x as much as the data do ({sizes})"
        right = self.truth_moves - self.wrong_sign
        where = f"checked on {self.subjects} SYNTHETIC subjects against the generator's truth"
        if self.agrees:
            direction = f", the right way for {right} of {self.truth_moves} subjects whose truth moves"
            return (
                f"{display_name} moves the output {size}{direction if self.truth_moves else ''} ({where}): "
                "this slider shows what the data hold."
            )
        faults = []
        if not self.sign_agrees:
            faults.append(f"the wrong way for {self.wrong_sign} of {self.truth_moves} subjects whose truth moves")
        if not self.size_agrees:
            faults.append(size)
        return (
            f"Caution: {display_name} moves the output " + " and ".join(faults) + f" ({where}). "
            "This slider shows the model's habit, not what the data hold."
        )


def fidelity_record(summary: pd.DataFrame, subjects: int, checked_on: str, regression: bool) -> dict[str, Any]:
    """What ``whatif-fidelity --write`` stores in a model file.

    Args:
        summary: :func:`~napari_hyperfusion.synth.fidelity.fidelity_summary`
            against the truth the model can reach (one row per field, and
            ``all``).
        subjects: the number of fresh subjects.
        checked_on: plain text naming the cohort (file name and digest).
        regression: True for a brain-age model.
    Returns:
        A JSON-ready dict (``input_stats.whatif_fidelity``).
    """
    fields = {}
    for row in summary.itertuples():
        if row.field == "all":
            continue
        fields[str(row.field)] = {
            "curves": int(row.curves),
            "mean_abs_diff": float(row.mean_abs_diff),
            "effect_model": float(row.effect_model),
            "effect_truth": float(row.effect_truth),
            "truth_moves": int(row.truth_moves),
            "wrong_sign": int(row.wrong_sign),
        }
    return {"subjects": int(subjects), "checked_on": checked_on, "regression": bool(regression), "fields": fields}


def slider_trust(input_stats: Mapping[str, Any], field: str) -> SliderTrust | None:
    """The stored check of ``field``'s slider, or None when the model file
    carries none for it.

    Args:
        input_stats: a model file's ``ModelInfo.input_stats``.
        field: the schema name of the slider's field.
    """
    stored = input_stats.get("whatif_fidelity") or {}
    row = (stored.get("fields") or {}).get(field)
    if not row:
        return None
    effect_model, effect_truth = float(row["effect_model"]), float(row["effect_truth"])
    if not (math.isfinite(effect_model) and math.isfinite(effect_truth)):
        return None
    if not 0 <= int(row["wrong_sign"]) <= int(row["truth_moves"]) <= int(row["curves"]):
        return None  # counts that contradict each other say nothing a sentence can repeat
    return SliderTrust(
        field=field,
        subjects=int(stored.get("subjects", row["curves"])),
        effect_model=effect_model,
        effect_truth=effect_truth,
        truth_moves=int(row["truth_moves"]),
        wrong_sign=int(row["wrong_sign"]),
        regression=bool(stored.get("regression", False)),
    )
