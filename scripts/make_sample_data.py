"""Write the plugin's sample subjects into sample_data/ (run by developers).

A handful of SYNTHETIC subjects chosen to show the interesting cases side by
side: a young AD patient and an old healthy control whose hippocampi are
about the same size (only age tells them apart), both sexes, an APOE4
homozygote, a subject with missing CSF, and two healthy brain-age subjects
at 25 and 82. Volumes come from the ADNI linear fits of
``napari_hyperfusion.synth.records.VOLUME_FITS`` at each subject's age and sex.

    python scripts/make_sample_data.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from napari_hyperfusion.synth.cohort import AD_COLUMNS, write_scan
from napari_hyperfusion.synth.records import BRAIN_AGE_CURVES, CLASSES, VOLUME_FITS

OUT = Path(__file__).resolve().parents[1] / "sample_data"
NAN = float("nan")

AD_SUBJECTS = [
    # PTID, DX, AGE, sex, educ, APOE4, ABETA, TAU, PTAU, FDG, AV45, ICV, entorhinal, note
    (
        "SYN_DEMO_01",
        "AD",
        62.0,
        "Female",
        14,
        2,
        560.0,
        420.0,
        41.0,
        1.02,
        1.52,
        1.38,
        2800.0,
        "young AD patient, APOE4 homozygote; hippocampi like the 88-year-old control's",
    ),
    (
        "SYN_DEMO_02",
        "CN",
        88.0,
        "Male",
        16,
        0,
        1250.0,
        290.0,
        26.0,
        1.18,
        1.12,
        1.62,
        3700.0,
        "old healthy control; hippocampi about the size of the young AD patient's",
    ),
    (
        "SYN_DEMO_03",
        "CN",
        70.0,
        "Female",
        18,
        0,
        1320.0,
        210.0,
        19.0,
        1.31,
        1.05,
        1.42,
        4050.0,
        "typical healthy control",
    ),
    (
        "SYN_DEMO_04",
        "MCI",
        74.0,
        "Male",
        16,
        1,
        NAN,
        NAN,
        NAN,
        1.20,
        1.25,
        1.58,
        3500.0,
        "MCI without CSF (missing values are the normal case)",
    ),
    (
        "SYN_DEMO_05",
        "AD",
        79.0,
        "Male",
        12,
        1,
        640.0,
        380.0,
        37.0,
        1.01,
        1.41,
        1.63,
        2850.0,
        "typical AD patient, every value measured",
    ),
]
# the synthetic clinical note each demo subject's record carries (MedFusionNet reads it)
CLINICAL_NOTES = {
    "SYN_DEMO_01": "Worried about their memory. Daughter reports getting lost driving to familiar places. Needs help managing medications. Mother had Alzheimer's disease.",
    "SYN_DEMO_02": "Denies memory problems. Independent in daily activities. History of hypertension.",
    "SYN_DEMO_03": "No cognitive complaints today. No family history of dementia.",
    "SYN_DEMO_04": "Reports forgetting recent conversations. Spouse reports repeated questions. Independent in daily activities.",
    "SYN_DEMO_05": "Family notes missed appointments and unpaid bills. Requires assistance with finances. Father diagnosed with dementia in his seventies. Sleeps poorly.",
}
BRAIN_AGE_SUBJECTS = [("sub-young", 25.0, "Female", 1.40), ("sub-old", 82.0, "Male", 1.61)]


def ad_volumes(dx: str, age: float, male: bool) -> dict[str, float]:
    k = CLASSES.index(dx)
    return {
        f"{name}_PERMILLE": fits[k][0] + fits[k][1] * (age - 75) + fits[k][2] * male
        for name, fits in VOLUME_FITS.items()
    }


def main() -> None:
    rows = []
    for i, (pid, dx, age, sex, educ, apoe, abeta, tau, ptau, fdg, av45, icv, ento, note) in enumerate(AD_SUBJECTS):
        record = dict(
            PTID=pid,
            DX=dx,
            AGE=age,
            PTGENDER=sex,
            PTEDUCAT=educ,
            APOE4=apoe,
            ABETA=abeta,
            TAU=tau,
            PTAU=ptau,
            FDG=fdg,
            AV45=av45,
            IMAGE=f"{pid}.nii.gz",
            ICV_L=icv,
            ENTORHINAL_MM3=ento,
            **ad_volumes(dx, age, sex == "Male"),
        )
        realised = write_scan(record, (2026, i), OUT / record["IMAGE"])
        rows.append(
            record
            | {f"REALISED_{k}": round(v, 3) for k, v in realised.items()}
            | {"SYNTHETIC": True, "DESCRIPTION": note, "NOTE": CLINICAL_NOTES[pid]}
        )
    table = pd.DataFrame(rows)
    extra = [c for c in table.columns if c not in AD_COLUMNS]
    table[AD_COLUMNS + extra].to_csv(OUT / "subjects.csv", index=False, float_format="%.6g")

    rows = []
    for j, (pid, age, sex, icv) in enumerate(BRAIN_AGE_SUBJECTS):
        male = sex == "Male"
        record = dict(AGE=age, PTGENDER=sex, ICV_L=icv, ENTORHINAL_MM3=4300 - 8.0 * max(age - 40, 0))
        for name, curve in BRAIN_AGE_CURVES.items():
            b1, b2 = curve[sex]
            record[f"{name}_PERMILLE"] = curve["v60"] + b1 * (age - 60) + b2 * (age - 60) ** 2 + curve["male"] * male
        rel = f"brain_age/{pid}/anat/{pid}_T1w.nii.gz"
        realised = write_scan(record, (2026, 100 + j), OUT / rel)
        rows.append(
            {
                "participant_id": pid,
                "age": age,
                "sex": sex[0],
                "image": rel.removeprefix("brain_age/"),
                "synthetic": True,
            }
            | {k: round(v, 4) for k, v in record.items() if k not in ("AGE", "PTGENDER")}
            | {f"REALISED_{k}": round(v, 3) for k, v in realised.items()}
        )
    pd.DataFrame(rows).to_csv(OUT / "brain_age" / "participants.tsv", sep="\t", index=False, float_format="%.6g")
    print("wrote", sorted(str(p.relative_to(OUT)) for p in OUT.rglob("*.nii.gz") if "template" not in str(p)))


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
