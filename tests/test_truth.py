"""The Bayes limit of the synthetic tasks and the logistic-regression
baseline: checked against fresh draws of the generator, not against
themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import log_loss

from napari_hyperfusion.data.schema import adni_schema
from napari_hyperfusion.synth.records import CLASSES, sample_ad_records, sample_brain_age_records
from napari_hyperfusion.synth.truth import (
    ad_class_prior,
    ad_posterior,
    balanced_decision,
    brain_age_estimate,
    brain_age_posterior,
    has_ground_truth,
    limits_for,
)
from napari_hyperfusion.train.logistic import fit_logistic, select_logistic


@pytest.fixture(scope="module")
def draws():
    train = sample_ad_records(4000, np.random.default_rng(11))
    test = sample_ad_records(3000, np.random.default_rng(12))
    return train, test


def _labels(table: pd.DataFrame) -> np.ndarray:
    return table.DX.map({c: i for i, c in enumerate(CLASSES)}).to_numpy()


def test_posterior_is_calibrated_on_fresh_draws(draws):
    _, test = draws
    y = _labels(test)
    post = ad_posterior(test)
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-9)
    # within bins of the predicted P(AD), the share of AD subjects matches the prediction
    bins = np.digitize(post[:, 2], [0.1, 0.3, 0.5, 0.7, 0.9])
    for b in range(6):
        inside = bins == b
        if inside.sum() >= 150:
            assert abs(post[inside, 2].mean() - (y[inside] == 2).mean()) < 0.06, b
    np.testing.assert_allclose(post.mean(0), np.bincount(y, minlength=3) / len(y), atol=0.03)


@pytest.mark.parametrize("use_volumes", [False, True])
def test_posterior_beats_a_logistic_regression_fitted_on_other_draws(draws, use_volumes):
    """No model can beat the exact posterior in expected log loss: a
    logistic regression trained on 4,000 other draws must do worse."""
    train, test = draws
    schema = adni_schema().fit(train)
    extra = ["HIPPOCAMPUS_PERMILLE", "VENTRICLES_PERMILLE", "BRAIN_PERMILLE", "ENTORHINAL_MM3"]

    def features(table):
        x = schema.encode_frame(table)
        if use_volumes:
            v = table[extra].to_numpy(float)
            x = np.hstack([x, (v - train[extra].mean().to_numpy()) / train[extra].std().to_numpy()])
        return x

    model = LogisticRegression(max_iter=2000).fit(features(train), _labels(train))
    y = _labels(test)
    bayes = log_loss(y, ad_posterior(test, use_volumes=use_volumes))
    fitted = log_loss(y, model.predict_proba(features(test)))
    assert bayes < fitted
    # and the volumes carry information beyond the EHR
    if use_volumes:
        assert bayes < log_loss(y, ad_posterior(test, use_volumes=False)) - 0.1


def test_balanced_decision_is_the_likelihood_argmax():
    post = np.array([[0.5, 0.4, 0.1], [0.3, 0.5, 0.2]])
    prior = ad_class_prior()
    assert list(balanced_decision(post)) == list(np.argmax(post / prior, 1))
    assert balanced_decision(post)[1] == 2 or post[1, 2] / prior[2] < post[1, 1] / prior[1]


def test_missing_apoe_is_summed_over_its_values(draws):
    _, test = draws
    row = test[test.APOE4.notna()].iloc[[0]].copy()
    missing = row.assign(APOE4=np.nan)
    # with APOE4 missing the posterior is a mixture of the three APOE4 values' posteriors
    mixes = [ad_posterior(row.assign(APOE4=float(a)))[0] for a in range(3)]
    post = ad_posterior(missing)[0]
    lo, hi = np.min(mixes, 0), np.max(mixes, 0)
    assert np.all(post >= lo - 0.15) and np.all(post <= hi + 0.15)
    assert not np.allclose(post, ad_posterior(row)[0])


def test_brain_age_posterior_median_beats_a_linear_regression():
    train = sample_brain_age_records(3000, np.random.default_rng(1))
    test = sample_brain_age_records(2000, np.random.default_rng(2))
    cols = ["HIPPOCAMPUS_PERMILLE", "VENTRICLES_PERMILLE", "BRAIN_PERMILLE", "ENTORHINAL_MM3"]

    def x(t):
        return np.hstack([t[cols].to_numpy(float), (t.PTGENDER == "Male").to_numpy(float)[:, None]])

    linear = LinearRegression().fit(x(train), train.AGE)
    mae_linear = np.abs(linear.predict(x(test)) - test.AGE).mean()
    mae_bayes = np.abs(brain_age_estimate(test) - test.AGE).mean()
    assert mae_bayes < mae_linear
    ages, post = brain_age_posterior(test.head(3))
    assert ages[0] == 20.0 and ages[-1] == 90.0
    np.testing.assert_allclose(post.sum(1), 1.0)


def test_limits_only_for_tables_with_ground_truth(draws):
    _, test = draws
    assert set(limits_for("ad", test.columns)) == {"Bayes (EHR + true volumes)", "Bayes (EHR only)"}
    real_like = ["PTID", "DX", "AGE", "PTGENDER", "PTEDUCAT", "APOE4", "ABETA", "TAU", "PTAU", "FDG", "AV45"]
    assert limits_for("ad", real_like) == {}
    assert has_ground_truth(test.iloc[0].to_dict()) and not has_ground_truth(dict.fromkeys(real_like))
    balanced = limits_for("ad", test.columns)["Bayes (EHR only)"](test.head(5))
    np.testing.assert_allclose(balanced.sum(1), 1.0)


def test_logistic_regression_matches_scikit_learn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = np.digitize(x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.7, 400), [-0.5, 0.8])
    l2 = 0.01
    ours = fit_logistic(x, y, 3, l2=l2)
    reference = LogisticRegression(C=1 / (l2 * len(y)), class_weight="balanced", tol=1e-10, max_iter=5000).fit(x, y)
    np.testing.assert_allclose(ours.predict_proba(x), reference.predict_proba(x), atol=2e-3)


def test_select_logistic_picks_the_penalty_on_validation_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 30))  # few rows, many noise features: a stronger penalty should win
    y = (x[:, 0] + rng.normal(0, 1.0, 120) > 0).astype(int)
    xv = rng.normal(size=(400, 30))
    yv = (xv[:, 0] + rng.normal(0, 1.0, 400) > 0).astype(int)
    chosen = select_logistic(x, y, xv, yv, 2, grid=(1e-4, 1.0))
    weak = fit_logistic(x, y, 2, l2=1e-4)
    acc = lambda m: np.mean(m.predict_proba(xv).argmax(1) == yv)  # noqa: E731
    assert acc(chosen) >= acc(weak)


def test_bayes_limit_command(tmp_path, capsys):
    from napari_hyperfusion import cli

    out = tmp_path / "limit.md"
    assert cli.main(["bayes-limit", "--n", "400", "--sizes", "60", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| Bayes (EHR + true volumes) | - |" in text and "| logistic regression (EHR) | 60 |" in text
    assert "SYNTHETIC" in text
    assert cli.main(["bayes-limit", "--task", "brain_age", "--n", "300"]) == 0
    assert "Bayes (sex + true volumes)" in capsys.readouterr().out
    for bad in (["--sizes", "many"], ["--n", "5"], ["--sizes", "10"]):
        assert cli.main(["bayes-limit", *bad]) == 2
    assert "error" in capsys.readouterr().err


def test_bayes_limit_on_a_models_own_test_split(ad_cohort, tmp_path, capsys):
    from conftest import tiny_train_settings, write_toml

    from napari_hyperfusion import cli

    config = tmp_path / "c.toml"
    write_toml(config, {**tiny_train_settings("ad"), "fusion": "tabular", "cohort": str(ad_cohort),
                        "out": str(tmp_path / "m"), "epochs": 1, "test_fraction": 0.25})  # fmt: skip
    assert cli.main(["train", str(config)]) == 0
    model = str(tmp_path / "m" / "model.safetensors")
    capsys.readouterr()
    assert cli.main(["bayes-limit", "--model", model, "--cohort", str(ad_cohort)]) == 0
    out = capsys.readouterr().out
    assert "on its 8 held-out test subjects" in out and "Bayes (EHR only): balanced_accuracy" in out
    assert "the model: balanced_accuracy" in out
    edited = tmp_path / "edited.csv"
    edited.write_text(ad_cohort.read_text().replace("SYN_S_0001", "SYN_S_9001"))
    assert cli.main(["bayes-limit", "--model", model, "--cohort", str(edited)]) == 2
    assert "not the table" in capsys.readouterr().err
