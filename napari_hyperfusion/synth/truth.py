"""The Bayes-optimal answer of the synthetic tasks, from the generator's own
distributions (:mod:`napari_hyperfusion.synth.records`).

No network, however good, can do better on average than the exact posterior
of the process that made the data. For the AD task the posterior
``P(DX | EHR [, true regional volumes])`` is an integral over the latent
disease stage ``z`` and, when APOE4 is missing, over its three values::

    P(k, x) = sum_apoe P(apoe) P(pattern | k) integral_{z in class k}
              phi(z - mu(apoe, demographics)) p(biomarkers | k, z, apoe)
              p(volumes | k, z) dz

with the biomarkers' within-class loadings, the shared CSF factor of TAU and
PTAU (a bivariate normal), the censoring at the clip limits (a point mass
read through the normal CDF), the class-dependent missingness (Gaussian
copula orthant probabilities) and, with volumes, the class fits of
hippocampus, ventricles and brain tissue (per mille of ICV) and the
entorhinal volume. The integral over ``z`` is a sum over a 0.02-wide grid.

The volumes' floors (the generator keeps each regional volume above a
quarter of its class's mean, 30 % for brain age) are censoring too: a
value at class k's floor is a point mass of class k, and a value below a
class's floor rules that class out.

Two approximations, both small: the generator standardises the stage within
each class by the class mean and SD *of the drawn cohort*; here they are the
population values (400,000 draws, fixed seed). Where PTAU is at a clip limit
(about 7 % of subjects with CSF measured), TAU's conditional distribution is
taken at PTAU's limit value rather than integrated over the censored range.

The images are made from the regional volumes (and noise: misregistration,
contrast, bias field, Rician noise), so the posterior given the EHR *and the
true volumes* bounds what any model reading EHR + image can reach; the
posterior given the EHR alone is what the tabular models aim at.

Brain age: age is uniform on 20-90 and each volume is a quadratic age curve
per sex plus Gaussian noise, so ``p(age | sex, volumes)`` is computed on a
0.1-year grid; its median minimises the expected absolute error.

Example:
    >>> from napari_hyperfusion.synth.records import sample_ad_records
    >>> import numpy as np
    >>> table = sample_ad_records(200, np.random.default_rng(0))
    >>> ad_posterior(table).shape
    (200, 3)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from .records import (
    AD_TABLE,
    BRAIN_AGE_CURVES,
    CLIP,
    CSF_FACTOR,
    ENTORHINAL_MM3,
    LOAD_AGE,
    LOAD_APOE,
    LOAD_STAGE,
    MISSING,
    MISSING_COPULA_R,
    STAGE,
    VOLUME_FITS,
)

__all__ = [
    "ad_posterior",
    "truth_task",
    "ad_truth_curve",
    "ad_class_prior",
    "balanced_decision",
    "balanced_posterior",
    "limits_for",
    "brain_age_posterior",
    "brain_age_estimate",
    "EHR_FIELDS",
    "VOLUME_FIELDS",
    "has_ground_truth",
]

EHR_FIELDS = ("AGE", "PTGENDER", "PTEDUCAT", "APOE4", "ABETA", "TAU", "PTAU", "FDG", "AV45")
VOLUME_FIELDS = ("HIPPOCAMPUS_PERMILLE", "VENTRICLES_PERMILLE", "BRAIN_PERMILLE", "ENTORHINAL_MM3")
APOE_PRIOR = np.array([0.54, 0.363, 0.097])
_Z_GRID = np.arange(-5.5, 8.0, 0.02)
_AGE_GRID = np.round(np.arange(20.0, 90.0001, 0.1), 1)


def truth_task(info) -> str | None:
    """The generator's task a model answers (``"ad"``: CN / MCI / AD, or
    ``"brain_age"``), or None where the generator has no exact answer."""
    if tuple(info.outputs) == ("CN", "MCI", "AD"):
        return "ad"
    return "brain_age" if info.task == "brain_age" else None


def has_ground_truth(record: dict | pd.Series, task: str = "ad") -> bool:
    """Whether ``record`` carries what the posterior needs.

    Args:
        record: one subject's columns (values may be missing).
        task: ``"ad"`` (age, sex, education and the true volumes) or
            ``"brain_age"`` (sex and the true volumes).

    Returns:
        True for a row of the generator's tables (only they have the
        ``*_PERMILLE`` ground-truth columns)."""
    keys = set(record.keys())
    if task == "brain_age":
        return {"PTGENDER", *VOLUME_FIELDS} <= keys or {"sex", *VOLUME_FIELDS} <= keys
    return {"AGE", "PTGENDER", "PTEDUCAT", *VOLUME_FIELDS} <= keys


def _stage_mean(apoe: np.ndarray, age: np.ndarray, male: np.ndarray, educ: np.ndarray) -> np.ndarray:
    return (
        STAGE["apoe4"] * apoe + STAGE["age"] * (age - 73) / 7 + STAGE["male"] * male - STAGE["educ"] * (educ - 16) / 2.7
    )


@lru_cache(maxsize=1)
def _population() -> dict[str, np.ndarray]:
    """Population constants the generator estimates from each drawn cohort:
    the class shares and the stage's mean and SD within each class."""
    rng = np.random.default_rng(20261124)
    n = 400_000
    male = rng.random(n) < 0.508
    age = np.clip(rng.normal(73.083, 7.828, n), 55, 92).round(1)
    educ = np.clip(np.round(rng.normal(15.978, 2.7, n)), 6, 20)
    apoe = rng.choice([0, 1, 2], n, p=APOE_PRIOR)
    stage = _stage_mean(apoe, age, male, educ) + rng.normal(0, 1, n)
    dx = np.where(stage < STAGE["cn_below"], 0, np.where(stage > STAGE["ad_above"], 2, 1))
    mean = np.array([stage[dx == k].mean() for k in range(3)])
    sd = np.array([stage[dx == k].std() for k in range(3)])
    share = np.bincount(dx, minlength=3) / n
    return {"mean": mean, "sd": sd, "share": share}


def ad_class_prior() -> np.ndarray:
    """The generator's population class shares.

    Returns:
        ``[3]`` probabilities of CN, MCI, AD (about 0.35, 0.48, 0.17)."""
    return _population()["share"].copy()


@lru_cache(maxsize=1)
def _pattern_log_probs() -> np.ndarray:
    """``log P(missingness pattern | class)`` as ``[3, 16]``; bit j of the
    pattern index is 1 when modality j (APOE4, CSF, FDG, AV45) is missing."""
    base = np.full((4, 4), MISSING_COPULA_R) + (1 - MISSING_COPULA_R) * np.eye(4)
    out = np.zeros((3, 16))
    for k in range(3):
        t = norm.ppf([MISSING[key][k] for key in ("APOE4", "CSF", "FDG", "AV45")])
        for pattern in range(16):
            missing = np.array([(pattern >> j) & 1 for j in range(4)], dtype=bool)
            sign = np.where(missing, 1.0, -1.0)  # observed: latent >= t  <=>  -latent <= -t
            cov = base * np.outer(sign, sign)
            p = multivariate_normal(mean=np.zeros(4), cov=cov).cdf(sign * t)
            out[k, pattern] = np.log(max(float(p), 1e-300))
    return out


def _censored_logpdf(value: np.ndarray, mean: np.ndarray, sd: np.ndarray, low: float, high: float) -> np.ndarray:
    """Log density of ``clip(N(mean, sd), low, high)`` at ``value``: a point
    mass (normal CDF) at either limit, the normal density between."""
    at_low = value <= low + 1e-9
    at_high = value >= high - 1e-9
    z = (value - mean) / sd
    inside = norm.logpdf(z) - np.log(sd)
    out = np.where(at_low, norm.logcdf((low - mean) / sd), inside)
    return np.where(at_high, norm.logsf((high - mean) / sd), out)


def _explained(name: str) -> float:
    return LOAD_AGE[name] ** 2 + LOAD_APOE[name] ** 2 + LOAD_STAGE[name] ** 2 + CSF_FACTOR.get(name, 0.0) ** 2


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    if name not in table:
        return np.full(len(table), np.nan)
    return pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=float)


def ad_posterior(table: pd.DataFrame, use_volumes: bool = True, chunk: int = 256) -> np.ndarray:
    """The exact posterior ``P(DX | record)`` of the synthetic AD task.

    Args:
        table: one row per subject with AGE (years), PTGENDER ("Male" /
            "Female" or "M" / "F"), PTEDUCAT (years), APOE4 (alleles), ABETA,
            TAU, PTAU (pg/ml), FDG, AV45 (SUVR), NaN where missing and, with
            ``use_volumes``, the generator's HIPPOCAMPUS_PERMILLE,
            VENTRICLES_PERMILLE, BRAIN_PERMILLE (per mille of ICV) and
            ENTORHINAL_MM3.
        use_volumes: condition on the true regional volumes too (the limit
            for a model that sees the image); ``False``: the EHR alone.
        chunk: subjects per vectorised block (memory ~ chunk x 2,000 floats).

    Returns:
        ``[N, 3]`` probabilities of CN, MCI, AD; rows sum to 1.
    """
    n = len(table)
    out = np.zeros((n, 3))
    for start in range(0, n, chunk):
        out[start : start + chunk] = _ad_posterior_block(table.iloc[start : start + chunk], use_volumes)
    return out


def _ad_posterior_block(table: pd.DataFrame, use_volumes: bool) -> np.ndarray:
    pop = _population()
    z = _Z_GRID[None, :]  # [1, G]
    cls = np.where(z < STAGE["cn_below"], 0, np.where(z > STAGE["ad_above"], 2, 1))  # [1, G]
    resid = (z - pop["mean"][cls]) / pop["sd"][cls]
    age = _column(table, "AGE")[:, None]
    male = table["PTGENDER"].astype(str).str.upper().str[0].eq("M").to_numpy()[:, None].astype(float)
    educ = _column(table, "PTEDUCAT")[:, None]
    apoe_obs = _column(table, "APOE4")
    values = {name: _column(table, name)[:, None] for name in AD_TABLE}
    csf_missing = np.isnan(values["ABETA"][:, 0])
    pattern = (
        np.isnan(apoe_obs) * 1
        + csf_missing * 2
        + np.isnan(values["FDG"][:, 0]) * 4
        + np.isnan(values["AV45"][:, 0]) * 8
    ).astype(int)
    log_pattern = _pattern_log_probs()[:, pattern].T  # [N, 3]
    age_z = (age - 73.1) / 7.8
    terms = []  # log joint per APOE value: [N, G]
    for a in range(3):
        apoe = float(a)
        apoe_z = (apoe - 0.557) / 0.66
        log_joint = norm.logpdf(z - _stage_mean(apoe, age, male, educ)) + np.log(APOE_PRIOR[a])
        for name in ("ABETA", "FDG", "AV45"):
            v = values[name]
            mean_k = np.array([m for m, _ in AD_TABLE[name]])[cls]
            sd_k = np.array([s for _, s in AD_TABLE[name]])[cls]
            loc = LOAD_AGE[name] * age_z + LOAD_APOE[name] * apoe_z + LOAD_STAGE[name] * resid
            noise = np.sqrt(max(1 - _explained(name), 0.05))
            lp = _censored_logpdf(v, mean_k + sd_k * loc, sd_k * noise, *CLIP[name])
            log_joint = log_joint + np.where(np.isnan(v), 0.0, lp)
        log_joint = log_joint + _tau_ptau_logpdf(values["TAU"], values["PTAU"], cls, resid, age_z, apoe_z)
        if use_volumes:
            log_joint = log_joint + _volume_logpdf(table, cls, resid, age, male)
        # a missing APOE4 is summed over its values; an observed one keeps only its own
        keep = np.isnan(apoe_obs) | (np.round(apoe_obs) == a)
        terms.append(np.where(keep[:, None], log_joint, -np.inf))
    log_joint = logsumexp(np.stack(terms), axis=0)  # [N, G]
    log_k = np.stack([logsumexp(np.where(cls == k, log_joint, -np.inf), axis=1) for k in range(3)], axis=1)
    log_k = log_k + log_pattern
    return np.exp(log_k - logsumexp(log_k, axis=1, keepdims=True))


def _tau_ptau_logpdf(tau, ptau, cls, resid, age_z, apoe_z) -> np.ndarray:
    """TAU and PTAU share the CSF factor: PTAU's marginal times TAU given PTAU."""
    stats = {}
    for name, v in (("TAU", tau), ("PTAU", ptau)):
        mean_k = np.array([m for m, _ in AD_TABLE[name]])[cls]
        sd_k = np.array([s for _, s in AD_TABLE[name]])[cls]
        loc = LOAD_AGE[name] * age_z + LOAD_APOE[name] * apoe_z + LOAD_STAGE[name] * resid
        stats[name] = (v, mean_k, sd_k, loc)
    shared = CSF_FACTOR["TAU"] * CSF_FACTOR["PTAU"]
    var = {name: CSF_FACTOR[name] ** 2 + max(1 - _explained(name), 0.05) for name in ("TAU", "PTAU")}
    rho = shared / np.sqrt(var["TAU"] * var["PTAU"])
    v_p, mean_p, sd_p, loc_p = stats["PTAU"]
    sigma_p = np.sqrt(var["PTAU"])
    lp_ptau = _censored_logpdf(v_p, mean_p + sd_p * loc_p, sd_p * sigma_p, *CLIP["PTAU"])
    # the standardised PTAU deviation, at the clip limit where censored
    z_p = (np.clip(v_p, *CLIP["PTAU"]) - mean_p - sd_p * loc_p) / (sd_p * sigma_p)
    v_t, mean_t, sd_t, loc_t = stats["TAU"]
    sigma_t = np.sqrt(var["TAU"])
    cond_mean = mean_t + sd_t * (loc_t + rho * sigma_t * z_p)
    cond_sd = sd_t * sigma_t * np.sqrt(1 - rho**2)
    lp_tau = _censored_logpdf(v_t, cond_mean, cond_sd, *CLIP["TAU"])
    missing = np.isnan(v_p) | np.isnan(v_t)
    return np.where(missing, 0.0, lp_ptau + lp_tau)


def _floored_logpdf(value: np.ndarray, mean: np.ndarray, sd: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Log density of ``max(N(mean, sd), floor)``: the normal CDF at the floor
    (the table rounds to 4 decimals), minus infinity below it."""
    at_floor = np.abs(value - floor) <= 1e-4
    inside = norm.logpdf(value, mean, sd)
    out = np.where(at_floor, norm.logcdf((floor - mean) / sd), inside)
    return np.where(value < floor - 1e-4, -np.inf, out)


def _volume_logpdf(table, cls, resid, age, male) -> np.ndarray:
    total = 0.0
    for name, fits in VOLUME_FITS.items():
        v = _column(table, f"{name}_PERMILLE")[:, None]
        a, b, c, sd = (np.array([fit[i] for fit in fits])[cls] for i in range(4))
        mean = a + b * (age - 75) + c * male - 0.3 * sd * resid
        lp = _floored_logpdf(v, mean, sd * np.sqrt(0.91), np.round(0.25 * a, 4))
        total = total + np.where(np.isnan(v), 0.0, lp)
    v = _column(table, "ENTORHINAL_MM3")[:, None]
    m = np.array([m for m, _ in ENTORHINAL_MM3])[cls]
    s = np.array([s for _, s in ENTORHINAL_MM3])[cls]
    lp = _censored_logpdf(v, m - 0.3 * s * resid, 0.95 * s, 800.0, np.inf)
    return total + np.where(np.isnan(v), 0.0, lp)


def balanced_decision(posterior: np.ndarray) -> np.ndarray:
    """The class that maximises *balanced* accuracy: ``argmax P(k | x) /
    P(k)`` (the likelihood), rather than the most probable class.

    Args:
        posterior: ``[N, 3]`` from :func:`ad_posterior`.

    Returns:
        ``[N]`` class indices into ``CLASSES``.
    """
    return np.argmax(posterior / ad_class_prior()[None, :], axis=1)


def _sex_is_male(table: pd.DataFrame) -> np.ndarray:
    column = table["PTGENDER"] if "PTGENDER" in table else table["sex"]
    return column.astype(str).str.upper().str[0].eq("M").to_numpy()


def brain_age_posterior(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``p(age | sex, true volumes)`` of the synthetic brain-age cohort.

    Args:
        table: rows with PTGENDER (or BIDS ``sex``), HIPPOCAMPUS_PERMILLE,
            VENTRICLES_PERMILLE, BRAIN_PERMILLE and ENTORHINAL_MM3.

    Returns:
        ``(ages [G], posterior [N, G])``: the 0.1-year grid from 20 to 90
        years and each subject's probabilities on it (rows sum to 1).
    """
    male = _sex_is_male(table)[:, None]
    d = _AGE_GRID[None, :] - 60.0
    log_p = np.zeros((len(table), len(_AGE_GRID)))
    for name, curve in BRAIN_AGE_CURVES.items():
        v = _column(table, f"{name}_PERMILLE")[:, None]
        b1 = np.where(male, curve["Male"][0], curve["Female"][0])
        b2 = np.where(male, curve["Male"][1], curve["Female"][1])
        mean = curve["v60"] + b1 * d + b2 * d * d + curve["male"] * male
        floor = np.full_like(mean, round(0.3 * curve["v60"], 4))
        log_p += np.where(np.isnan(v), 0.0, _floored_logpdf(v, mean, np.full_like(mean, curve["sd"]), floor))
    v = _column(table, "ENTORHINAL_MM3")[:, None]
    mean = 4300 - 8.0 * np.maximum(_AGE_GRID[None, :] - 40, 0)
    log_p += np.where(np.isnan(v), 0.0, _censored_logpdf(v, mean, np.full_like(mean, 500.0), 1500.0, np.inf))
    return _AGE_GRID.copy(), np.exp(log_p - logsumexp(log_p, axis=1, keepdims=True))


def brain_age_estimate(table: pd.DataFrame) -> np.ndarray:
    """The estimate with the smallest expected absolute error.

    Args:
        table: as for :func:`brain_age_posterior`.

    Returns:
        ``[N]`` posterior median ages in years."""
    ages, post = brain_age_posterior(table)
    cdf = np.cumsum(post, axis=1)
    return ages[np.argmax(cdf >= 0.5, axis=1)]


def balanced_posterior(posterior: np.ndarray) -> np.ndarray:
    """The posterior re-weighted to equal class priors.

    Args:
        posterior: ``[N, 3]`` from :func:`ad_posterior`.

    Returns:
        ``[N, 3]``, rows summing to 1; its argmax is :func:`balanced_decision`,
        the rule that maximises balanced accuracy (what class-weighted
        training aims at). Ranking by it is not the AUC-optimal ranking
        (that is the posterior itself), so a model's AUC can exceed a limit
        row's."""
    p = posterior / ad_class_prior()[None, :]
    return p / p.sum(1, keepdims=True)


def limits_for(task: str, table_columns) -> dict[str, object]:
    """The Bayes limits that can be computed for a table.

    Args:
        task: ``"ad"`` or ``"brain_age"``.
        table_columns: the table's column names.

    Returns:
        name -> function of the test rows' table returning predictions
        shaped like a model's (balanced posterior ``[N, 3]`` for AD, posterior
        median age ``[N, 1]`` for brain age); empty for real data, which has
        no ground-truth columns."""
    columns = set(table_columns)
    if not set(VOLUME_FIELDS) <= columns:
        return {}
    if task == "ad" and {"AGE", "PTGENDER", "PTEDUCAT"} <= columns:
        return {
            "Bayes (EHR + true volumes)": lambda t: balanced_posterior(ad_posterior(t, use_volumes=True)),
            "Bayes (EHR only)": lambda t: balanced_posterior(ad_posterior(t, use_volumes=False)),
        }
    if task == "brain_age" and ({"PTGENDER"} <= columns or {"sex"} <= columns):
        return {"Bayes (sex + true volumes)": lambda t: brain_age_estimate(t)[:, None]}
    return {}


def ad_truth_curve(record: dict, field: str, values: list, volumes: tuple[str, ...] = VOLUME_FIELDS) -> np.ndarray:
    """The true answer to "what if ``field`` were each of ``values``?" for
    one synthetic subject, holding its scan: the balanced posterior (equal
    class priors, what class-weighted training aims at) given the record with
    ``field`` changed and the subject's true regional volumes unchanged.

    Args:
        record: the EHR values (``None`` / NaN where not known) and the
            subject's ``*_PERMILLE`` and ``ENTORHINAL_MM3`` ground truth.
        field: one of :data:`EHR_FIELDS`.
        values: the swept values (numbers, or "Female"/"Male" for PTGENDER).
        volumes: the true volumes to condition on (the others are integrated
            out): all of them by default; what a model's views hold for the
            truth that model can reach (:func:`..coverage.seen_volumes`).

    Returns:
        ``[len(values), 3]`` probabilities of CN, MCI, AD.
    """
    if field not in EHR_FIELDS:
        raise ValueError(f"{field} is not a field of the synthetic generator ({', '.join(EHR_FIELDS)})")
    hidden = {name: np.nan for name in VOLUME_FIELDS if name not in volumes}
    rows = pd.DataFrame([{**record, **hidden, field: value} for value in values])
    return balanced_posterior(ad_posterior(rows, use_volumes=bool(volumes)))
