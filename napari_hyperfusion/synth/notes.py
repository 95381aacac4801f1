"""Short synthetic clinical notes, written from a synthetic record.

A note is what a memory-clinic intake might jot down: the patient's own
memory complaints, what an informant reports, daily function, family
history, comorbidities and mood. Each topic is mentioned with the
probabilities below, so notes carry real but partial signal:

- self-reported complaints: CN 25 %, MCI 65 %, AD 55 % (people with
  dementia often under-report, anosognosia);
- an informant's report of decline: CN 5 %, MCI 40 %, AD 85 %;
- needing help with daily tasks: AD 60 %; "independent" otherwise 40 %;
- a parent with dementia: 20 % + 15 % per APOE e4 allele;
- hypertension 40 %, type 2 diabetes 15 %, poor sleep 20 % (no link to
  the labels: realistic noise), low mood CN 10 %, MCI 25 %, AD 20 %.

Omissions are the normal case: every finding is written down with
probability 0.7, and 15 % of subjects have no note at all (empty text).
Notes are SYNTHETIC; they never describe a real person.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_notes"]

_DOCUMENTED = 0.7
_NO_NOTE = 0.15
_SELF_COMPLAINT = {"CN": 0.25, "MCI": 0.65, "AD": 0.55}
_INFORMANT = {"CN": 0.05, "MCI": 0.40, "AD": 0.85}
_LOW_MOOD = {"CN": 0.10, "MCI": 0.25, "AD": 0.20}

_COMPLAINTS = (
    "Reports forgetting recent conversations.",
    "Complains of misplacing keys and glasses more often.",
    "Notices word-finding difficulty over the past year.",
    "Worried about their memory.",
)
_NO_COMPLAINT = ("Denies memory problems.", "No cognitive complaints today.")
_INFORMANT_TEXT = (
    "Spouse reports repeated questions.",
    "Daughter reports getting lost driving to familiar places.",
    "Family notes missed appointments and unpaid bills.",
)
_NEEDS_HELP = ("Needs help managing medications.", "Requires assistance with finances.")
_INDEPENDENT = ("Independent in daily activities.", "Manages household and finances independently.")
_FAMILY_POSITIVE = ("Mother had Alzheimer's disease.", "Father diagnosed with dementia in his seventies.")
_FAMILY_NEGATIVE = ("No family history of dementia.",)
_NOISE = (
    (0.40, "History of hypertension."),
    (0.15, "Type 2 diabetes, diet controlled."),
    (0.20, "Sleeps poorly."),
)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _one_note(dx: str, apoe: float, rng: np.random.Generator) -> str:
    if rng.random() < _NO_NOTE:
        return ""
    sentences: list[str] = []

    def write(text: str) -> None:
        if rng.random() < _DOCUMENTED:
            sentences.append(text)

    if rng.random() < _SELF_COMPLAINT[dx]:
        write(_pick(rng, _COMPLAINTS))
    else:
        write(_pick(rng, _NO_COMPLAINT))
    if rng.random() < _INFORMANT[dx]:
        write(_pick(rng, _INFORMANT_TEXT))
    if dx == "AD" and rng.random() < 0.6:
        write(_pick(rng, _NEEDS_HELP))
    elif rng.random() < 0.4:
        write(_pick(rng, _INDEPENDENT))
    if rng.random() < 0.20 + 0.15 * apoe:
        write(_pick(rng, _FAMILY_POSITIVE))
    else:
        write(_pick(rng, _FAMILY_NEGATIVE))
    for chance, text in _NOISE:
        if rng.random() < chance:
            write(text)
    if rng.random() < _LOW_MOOD[dx]:
        write("Reports low mood.")
    return " ".join(sentences)


def sample_notes(dx: np.ndarray, apoe: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One note per subject from the diagnosis (``"CN"``, ``"MCI"``,
    ``"AD"``) and the true APOE e4 allele count (even where the record
    hides it: family history is what the patient knows)."""
    return [_one_note(str(d), float(a), rng) for d, a in zip(dx, apoe)]
