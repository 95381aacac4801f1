"""Synthetic EHR records with ADNI-like group statistics (no real subject).

The generative model (effect sizes from the ADNI baseline Table-1 summary,
``shared/reference/adni_baseline_summary.md``):

1. Demographics: sex (49 % female), age ~ N(73.1, 7.8) clipped to 55-92,
   education ~ N(16.0, 2.7) years, rounded, 6-20; APOE e4 alleles 0/1/2 with
   population frequencies 54 / 36 / 10 %.
2. A latent disease stage
   ``z = 0.49 APOE4 + 0.145 (age - 73)/7 + 0.197 male - 0.165 (educ - 16)/2.7 + N(0, 1)``;
   diagnosis CN below -0.046, AD above 1.401, MCI between. These constants
   were fitted (Nelder-Mead, 200,000 draws) so that the class shares
   (34.9 / 47.9 / 17.2 %) and the per-class means of APOE4, age, education
   and the female share come close to the table. (The table's sex split,
   58 / 44 / 46 % female, is not monotone in disease: a recruitment effect
   that one latent stage cannot copy; we get about 54 / 48 / 42 %.)
3. Biomarkers per class: mean and SD from the table, plus within-class
   correlations: with age (TAU +0.28, PTAU +0.29, FDG -0.25, AV45 +0.21,
   ABETA -0.13), with APOE4 (ABETA -0.25, AV45 +0.20; with the class effect
   this gives about -0.35 and +0.27 overall), TAU and PTAU sharing one CSF
   factor (r ~ 0.8) and a shared within-class stage residual. CSF values are
   censored at ABETA 200-1700 pg/ml as in ADNI.
4. Missing values per class at the table's rates (APOE4, CSF together, FDG,
   AV45), drawn with a Gaussian copula (r = 0.75 between modalities), so
   that, as in ADNI, missingness clusters by study phase and about a third of
   subjects have every value.
5. Regional volumes (as ‰ of intracranial volume) from the table's linear
   fits per class ``a + b (age - 75) + c male`` with its residual SD, the
   residual sharing -0.3 with the stage; entorhinal volume per class; ICV
   1.41 L (female) / 1.60 L (male), SD 0.12 L.

6. Multilabel risk targets (:func:`risk_labels`, documented in docs/models.md):
   amyloid positive (the subject's CSF Abeta42, measured or not, below
   977 pg/ml, the Elecsys cut-off of Hansson et al. 2018 validated in
   ADNI), hippocampal atrophy (hippocampus/ICV more than 1.5 SD below the
   CN fit for the subject's age and sex, a W-score < -1.5), cognitive
   impairment (MCI or AD) and Alzheimer's dementia (AD). Several are true
   at once: every AD subject is impaired, most are amyloid positive.
   (The AV45 cut-off of 1.11 SUVR would call 47 % of synthetic CN subjects
   positive, against about 30 % in ADNI, because the synthetic AV45 is
   unimodal; the CSF rule gives 29 / 52 / 86 % for CN / MCI / AD.)
7. A short clinical note per subject (:mod:`napari_hyperfusion.synth.notes`), drawn last so
   that every earlier column is unchanged by it.

Brain-age cohort: healthy subjects, age uniform 20-90, sex 50/50, volumes
on quadratic age curves that differ by sex (men: larger ventricles growing
faster and faster whole-brain loss; women: faster hippocampal loss).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..data.labels import RISK_LABELS

__all__ = ["sample_ad_records", "sample_brain_age_records", "risk_labels", "AD_TABLE", "CLASSES", "RISK_LABELS"]

CLASSES = ("CN", "MCI", "AD")
STAGE = {"apoe4": 0.493, "age": 0.145, "male": 0.197, "educ": 0.165, "cn_below": -0.046, "ad_above": 1.401}
# per class: CN, MCI, AD -- mean, sd (ADNI baseline summary)
AD_TABLE = {
    "ABETA": ((1190, 456), (969, 436), (677, 318)),
    "TAU": ((238, 92), (286, 134), (371, 145)),
    "PTAU": ((21.9, 9.4), (27.7, 14.8), (36.9, 15.7)),
    "FDG": ((1.28, 0.11), (1.22, 0.14), (1.04, 0.15)),
    "AV45": ((1.11, 0.17), (1.22, 0.23), (1.40, 0.22)),
}
MISSING = {
    "APOE4": (0.12, 0.08, 0.04),
    "CSF": (0.66, 0.44, 0.43),
    "FDG": (0.62, 0.24, 0.27),
    "AV45": (0.58, 0.48, 0.55),
}
LOAD_AGE = {"ABETA": -0.13, "TAU": 0.28, "PTAU": 0.29, "FDG": -0.25, "AV45": 0.21}
LOAD_APOE = {"ABETA": -0.25, "TAU": 0.05, "PTAU": 0.05, "FDG": -0.05, "AV45": 0.20}
LOAD_STAGE = {"ABETA": -0.15, "TAU": 0.15, "PTAU": 0.15, "FDG": -0.15, "AV45": 0.15}
CSF_FACTOR = {"TAU": 0.85, "PTAU": 0.85}
CLIP = {"ABETA": (200, 1700), "TAU": (80, 1300), "PTAU": (8, 120), "FDG": (0.6, 1.8), "AV45": (0.8, 2.3)}
# volume / ICV x 1000 = a + b (age - 75) + c male, residual sd; per class
VOLUME_FITS = {
    "HIPPOCAMPUS": ((5.11, -0.042, -0.33, 0.53), (4.53, -0.043, -0.19, 0.72), (3.93, -0.029, -0.18, 0.63)),
    "VENTRICLES": ((21.3, 0.53, 4.9, 9.9), (24.5, 0.66, 4.7, 11.4), (28.7, 0.39, 5.3, 12.4)),
    "BRAIN": ((698, -3.6, -11.1, 40), (678, -3.0, -7.9, 46), (652, -1.4, -11.1, 54)),
}
ENTORHINAL_MM3 = ((3980, 680), (3580, 770), (2870, 770))
ICV_L = {"Female": (1.41, 0.12), "Male": (1.60, 0.12)}
MISSING_COPULA_R = 0.75
ABETA_POSITIVE_BELOW = 977.0  # pg/ml, Hansson et al. 2018 (Elecsys, ADNI)
ATROPHY_W_BELOW = -1.5


def risk_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The four 0/1 risk labels of :data:`RISK_LABELS` for records from
    :func:`sample_ad_records` (needs DX, AGE, PTGENDER, ABETA_LATENT and
    HIPPOCAMPUS_PERMILLE). Deterministic: no random draw."""
    a, b, c, sd = VOLUME_FITS["HIPPOCAMPUS"][0]  # the CN norm
    male = (table["PTGENDER"] == "Male").to_numpy()
    expected = a + b * (table["AGE"].to_numpy() - 75) + c * male
    w_score = (table["HIPPOCAMPUS_PERMILLE"].to_numpy() - expected) / sd
    dx = table["DX"].to_numpy()
    return pd.DataFrame({
        "AMYLOID_POS": (table["ABETA_LATENT"].to_numpy() < ABETA_POSITIVE_BELOW).astype(int),
        "HIPPO_ATROPHY": (w_score < ATROPHY_W_BELOW).astype(int),
        "IMPAIRED": np.isin(dx, ["MCI", "AD"]).astype(int),
        "DEMENTIA": (dx == "AD").astype(int),
    }, index=table.index)  # fmt: skip


def _icv(rng: np.random.Generator, sex: np.ndarray) -> np.ndarray:
    mean = np.where(sex == "Male", ICV_L["Male"][0], ICV_L["Female"][0])
    return np.clip(rng.normal(mean, 0.12), 1.05, 2.0)


def sample_ad_records(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` synthetic ADNI-like subjects, one row each.

    Columns: DX, AGE (years), PTGENDER, PTEDUCAT (years), APOE4 (alleles),
    ABETA, TAU, PTAU (pg/ml), FDG, AV45 (SUVR) with NaN where missing, and
    the generator's ground truth: STAGE (latent), ICV_L, HIPPOCAMPUS_PERMILLE,
    VENTRICLES_PERMILLE, BRAIN_PERMILLE (of ICV), ENTORHINAL_MM3,
    ABETA_LATENT (the CSF value whether measured or not), the risk labels
    of :data:`RISK_LABELS` and NOTE (a short clinical note, may be empty).
    """
    male = rng.random(n) < 0.508
    sex = np.where(male, "Male", "Female")
    age = np.clip(rng.normal(73.083, 7.828, n), 55, 92).round(1)
    educ = np.clip(np.round(rng.normal(15.978, 2.7, n)), 6, 20)
    apoe = rng.choice([0, 1, 2], n, p=[0.54, 0.363, 0.097]).astype(float)
    stage_noise = rng.normal(0, 1, n)
    stage = (
        STAGE["apoe4"] * apoe
        + STAGE["age"] * (age - 73) / 7
        + STAGE["male"] * male
        - STAGE["educ"] * (educ - 16) / 2.7
        + stage_noise
    )
    dx = np.where(stage < STAGE["cn_below"], 0, np.where(stage > STAGE["ad_above"], 2, 1))
    # within-class position of the stage, standardised roughly to unit variance
    resid = np.zeros(n)
    for k in range(3):
        idx = dx == k
        if idx.sum() > 1:
            resid[idx] = (stage[idx] - stage[idx].mean()) / max(stage[idx].std(), 1e-6)
    age_z = (age - 73.1) / 7.8
    apoe_z = (apoe - 0.557) / 0.66
    csf_factor = rng.normal(0, 1, n)
    table: dict[str, object] = {"DX": np.array(CLASSES)[dx], "AGE": age, "PTGENDER": sex, "PTEDUCAT": educ}
    values = {}
    for name, per_class in AD_TABLE.items():
        loadings = LOAD_AGE[name] * age_z + LOAD_APOE[name] * apoe_z + LOAD_STAGE[name] * resid
        shared = CSF_FACTOR.get(name, 0.0) * csf_factor
        explained = LOAD_AGE[name] ** 2 + LOAD_APOE[name] ** 2 + LOAD_STAGE[name] ** 2 + CSF_FACTOR.get(name, 0.0) ** 2
        z = loadings + shared + np.sqrt(max(1 - explained, 0.05)) * rng.normal(0, 1, n)
        mean = np.array([m for m, _ in per_class])[dx]
        sd = np.array([s for _, s in per_class])[dx]
        values[name] = np.clip(mean + sd * z, *CLIP[name])
    # missingness: Gaussian copula, correlated across modalities
    cov = np.full((4, 4), MISSING_COPULA_R) + (1 - MISSING_COPULA_R) * np.eye(4)
    latent = rng.multivariate_normal(np.zeros(4), cov, n)
    missing = {}
    for j, key in enumerate(("APOE4", "CSF", "FDG", "AV45")):
        rate = np.array(MISSING[key])[dx]
        missing[key] = latent[:, j] < norm.ppf(rate)
    apoe_out = np.where(missing["APOE4"], np.nan, apoe)
    table["APOE4"] = apoe_out
    for name in ("ABETA", "TAU", "PTAU"):
        table[name] = np.where(missing["CSF"], np.nan, values[name].round(1))
    table["FDG"] = np.where(missing["FDG"], np.nan, values["FDG"].round(3))
    table["AV45"] = np.where(missing["AV45"], np.nan, values["AV45"].round(3))
    # ground truth anatomy
    icv = _icv(rng, sex)
    table["STAGE"] = stage.round(4)
    table["ICV_L"] = icv.round(4)
    for name, per_class in VOLUME_FITS.items():
        a, b, c, sd = (np.array([fit[i] for fit in per_class])[dx] for i in range(4))
        eps = -0.3 * resid + np.sqrt(1 - 0.09) * rng.normal(0, 1, n)
        table[f"{name}_PERMILLE"] = np.maximum(a + b * (age - 75) + c * male + sd * eps, 0.25 * a).round(4)
    ent_mean = np.array([m for m, _ in ENTORHINAL_MM3])[dx]
    ent_sd = np.array([s for _, s in ENTORHINAL_MM3])[dx]
    table["ENTORHINAL_MM3"] = np.maximum(ent_mean + ent_sd * (-0.3 * resid + 0.95 * rng.normal(0, 1, n)), 800).round(1)
    table["ABETA_LATENT"] = values["ABETA"].round(1)
    frame = pd.DataFrame(table)
    frame = pd.concat([frame, risk_labels(frame)], axis=1)
    from .notes import sample_notes

    frame["NOTE"] = sample_notes(frame["DX"].to_numpy(), apoe, rng)  # last: earlier draws stay as they were
    return frame


# brain age: volume (permille of ICV) = v60 + b1 (age - 60) + b2 (age - 60)^2 + male offset
BRAIN_AGE_CURVES = {
    "HIPPOCAMPUS": {"v60": 5.74, "Female": (-0.030, -0.0004), "Male": (-0.025, -0.0003), "male": -0.33, "sd": 0.45},
    "VENTRICLES": {"v60": 13.35, "Female": (0.35, 0.006), "Male": (0.45, 0.008), "male": 4.9, "sd": 5.0},
    "BRAIN": {"v60": 752.0, "Female": (-2.6, -0.015), "Male": (-3.2, -0.02), "male": -11.1, "sd": 30.0},
}


def sample_brain_age_records(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n`` healthy synthetic subjects aged 20-90: AGE, PTGENDER and the
    ground-truth anatomy (ICV_L, *_PERMILLE, ENTORHINAL_MM3)."""
    male = rng.random(n) < 0.5
    sex = np.where(male, "Male", "Female")
    age = rng.uniform(20, 90, n).round(1)
    table: dict[str, object] = {"AGE": age, "PTGENDER": sex, "ICV_L": _icv(rng, sex).round(4)}
    d = age - 60
    for name, curve in BRAIN_AGE_CURVES.items():
        b1 = np.where(male, curve["Male"][0], curve["Female"][0])
        b2 = np.where(male, curve["Male"][1], curve["Female"][1])
        mean = curve["v60"] + b1 * d + b2 * d * d + curve["male"] * male
        table[f"{name}_PERMILLE"] = np.maximum(mean + curve["sd"] * rng.normal(0, 1, n), 0.3 * curve["v60"]).round(4)
    table["ENTORHINAL_MM3"] = np.maximum(4300 - 8.0 * np.maximum(age - 40, 0) + 500 * rng.normal(0, 1, n), 1500).round(
        1
    )
    return pd.DataFrame(table)
