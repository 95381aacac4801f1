"""The multilabel risk task's labels: the cohort table's 0/1 columns and the
names shown to users. The synthetic generator (:mod:`napari_hyperfusion.synth.records`)
writes these columns; a real cohort table provides them itself."""

from __future__ import annotations

__all__ = ["RISK_LABELS"]

# table column -> label name shown to users
RISK_LABELS = {
    "AMYLOID_POS": "amyloid positive",
    "HIPPO_ATROPHY": "hippocampal atrophy",
    "IMPAIRED": "cognitive impairment",
    "DEMENTIA": "Alzheimer's dementia",
}
