"""The what-if support check: a slider value against what the training
data hold given the rest of the record."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_hyperfusion.analysis.narration import narrate
from napari_hyperfusion.analysis.support import SUPPORT_Z, check_support, curve_outside
from napari_hyperfusion.data.schema import adni_schema
from napari_hyperfusion.io.model_file import read_info
from napari_hyperfusion.resources import models_dir

AD = ["CN", "MCI", "AD"]
# SYN_DEMO_03 of sample_data/subjects.csv: a healthy control, every value measured
PATIENT = {"AGE": 70.0, "PTGENDER": "Female", "PTEDUCAT": 18.0, "APOE4": 0.0, "ABETA": 1320.0, "TAU": 210.0,
           "PTAU": 19.0, "FDG": 1.31, "AV45": 1.05}  # fmt: skip


@pytest.fixture(scope="module")
def shipped():
    return read_info(models_dir() / "ad_hyperfusion.safetensors")


def _fitted_on(tau: np.ndarray, ptau: np.ndarray):
    rng = np.random.default_rng(1)
    n = len(tau)
    frame = pd.DataFrame({
        "AGE": rng.uniform(60, 85, n), "PTGENDER": rng.choice(["Female", "Male"], n), "PTEDUCAT": 16.0,
        "APOE4": rng.integers(0, 3, n).astype(float), "ABETA": rng.uniform(300, 1500, n), "TAU": tau, "PTAU": ptau,
        "FDG": rng.uniform(0.9, 1.4, n), "AV45": rng.uniform(0.9, 1.6, n),
    })  # fmt: skip
    return adni_schema().fit(frame)


def test_the_expectation_is_the_conditional_normal_of_the_training_rows():
    """Tau (600 +- 100) and p-tau (60 +- 10) drawn with correlation 0.8, the
    rest independent: tau given p-tau has mean mu_t + 0.8 sd_t / sd_p
    (p - mu_p) and SD sd_t sqrt(1 - 0.64)."""
    rng = np.random.default_rng(0)
    z = rng.multivariate_normal([0, 0], [[1, 0.8], [0.8, 1]], 20_000)
    schema = _fitted_on(600 + 100 * z[:, 0], 60 + 10 * z[:, 1])
    check = check_support(schema, {**PATIENT, "PTAU": 90.0, "TAU": 600.0}, "TAU")
    assert check.expected == pytest.approx(600 + 0.8 * 100 * 3, abs=5)
    assert check.sd == pytest.approx(100 * np.sqrt(1 - 0.64), rel=0.03)
    assert check.z == pytest.approx((600 - check.expected) / check.sd)
    assert check.outside and check.partners[0][0] == "PTAU" and check.partners[0][1] == pytest.approx(0.8, abs=0.02)
    assert len(check.partners) == 1  # the independent fields carry none of the expectation
    # p-tau not known: tau is compared with its marginal, and 600 is its mean
    unknown = check_support(schema, {**PATIENT, "PTAU": None, "TAU": 600.0}, "TAU")
    assert unknown.sd == pytest.approx(100, rel=0.03) and not unknown.outside and unknown.partners == ()
    # sex, an unknown field and a schema without moments have no check
    assert check_support(schema, PATIENT, "PTGENDER") is None
    assert check_support(schema, {**PATIENT, "TAU": None}, "TAU") is None
    assert check_support(adni_schema(), PATIENT, "TAU") is None


def test_a_high_tau_with_a_normal_ptau_is_outside_the_shipped_models_data(shipped):
    schema = shipped.schema
    own = check_support(schema, PATIENT, "TAU")
    assert abs(own.z) < SUPPORT_Z and own.partners[0][0] == "PTAU"
    high = check_support(schema, {**PATIENT, "TAU": 600.0}, "TAU")
    assert high.outside and high.z > SUPPORT_Z
    # the same tau with a p-tau that goes with it is inside
    assert not check_support(schema, {**PATIENT, "TAU": 600.0, "PTAU": 60.0}, "TAU").outside
    grid = np.linspace(50, 680, 64)
    outside = curve_outside(schema, PATIENT, "TAU", grid)
    assert outside[-1] and not outside[np.argmin(np.abs(grid - 210))]
    # one band at the top: inside up to a point, outside beyond it
    assert np.all(np.diff(outside[grid > 210].astype(int)) >= 0)
    assert not curve_outside(schema, {**PATIENT, "PTAU": 60.0}, "TAU", grid)[-1]
    assert not curve_outside(schema, PATIENT, "PTGENDER", ["Female", "Male"]).any()


def test_the_narration_says_when_a_combination_leaves_the_data(shipped):
    schema, ranges = shipped.schema, shipped.input_stats["ehr"]
    lines = narrate(schema, AD, PATIENT, {**PATIENT, "TAU": 600.0}, [0.8, 0.15, 0.05], [0.6, 0.3, 0.1],
                    ranges=ranges)  # fmt: skip
    flag = next(line for line in lines if line.startswith("Outside the training data as a whole"))
    assert "CSF p-tau181 at 19 pg/ml (correlation +0.84" in flag and "CSF total tau near" in flag
    assert "600 is" in flag and "SD away (beyond 3)" in flag
    inside = narrate(schema, AD, PATIENT, {**PATIENT, "TAU": 260.0}, [0.8, 0.15, 0.05], [0.7, 0.2, 0.1],
                     ranges=ranges)  # fmt: skip
    assert not any("as a whole" in line for line in inside)
    # a value already outside its own range is flagged once, by the range
    beyond = narrate(schema, AD, PATIENT, {**PATIENT, "TAU": 2000.0}, [0.8, 0.15, 0.05], [0.6, 0.3, 0.1],
                     ranges=ranges)  # fmt: skip
    assert sum("Outside the training data" in line for line in beyond) == 1
