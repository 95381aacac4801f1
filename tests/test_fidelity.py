"""The what-if fidelity report and the brain-age age-bias correction, on
real model files and cohorts written by the generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_hyperfusion.analysis.whatif import WhatIfSession
from napari_hyperfusion.cli import main
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.infer.age_bias import AgeBias, fit_age_bias
from napari_hyperfusion.io.model_file import load_model, read_info
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.synth.coverage import seen_volumes
from napari_hyperfusion.synth.fidelity import CurvePair, fidelity_summary, support_summary, whatif_curves
from napari_hyperfusion.synth.truth import ad_truth_curve


def _pair(model, truth, field="APOE4", known=True):
    values = list(np.linspace(0, 1, len(model)))
    return CurvePair("s", field, values, np.asarray(model, float), np.asarray(truth, float), known)


def test_summary_of_a_perfect_a_reversed_and_an_exaggerating_model():
    truth = np.array([[0.6, 0.3, 0.1], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3]])
    perfect = fidelity_summary([_pair(truth, truth)]).set_index("field").loc["all"]
    assert perfect.mean_abs_diff == 0 and perfect.effect_ratio == 1 and perfect.wrong_sign == 0 and perfect.ece == 0
    assert perfect.meets == "yes"
    reversed_ = fidelity_summary([_pair(truth[::-1], truth)]).set_index("field").loc["all"]
    assert reversed_.wrong_sign == 1 and reversed_.truth_moves == 1 and reversed_.meets == "no"
    steep = truth.copy()
    steep[:, 2] = [0.0, 0.3, 0.6]  # three times the true change of P(AD)
    steep[:, 0] = 1 - steep[:, 1] - steep[:, 2]
    row = fidelity_summary([_pair(steep, truth)]).set_index("field").loc["all"]
    assert row.effect_ratio == pytest.approx(3.0) and row.meets == "no"


def test_the_support_split_counts_inside_and_outside_apart():
    """A curve right inside the data and reversed in its last, outside point:
    the whole curve slopes the wrong way, its part inside does not."""
    truth = np.array([[0.6, 0.3, 0.1], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3], [0.3, 0.3, 0.4]])
    model = truth.copy()
    model[-1] = [0.9, 0.1, 0.0]
    pair = _pair(model, truth, field="TAU")
    pair.outside = np.array([False, False, False, True])
    row = support_summary([pair]).set_index("field").loc["TAU"]
    assert row.outside == 0.25 and row.diff_inside == 0 and row.diff_outside == pytest.approx(np.mean([0.6, 0.2, 0.4]))
    assert (row.moves, row.wrong_sign, row.moves_inside, row.wrong_inside) == (1, 1, 1, 0)
    assert fidelity_summary([pair]).set_index("field").loc["TAU"].wrong_sign == 1  # the main table is unchanged


def test_curves_are_the_panels_curve_and_the_truth_with_unknowns_unknown(ad_cohort, tmp_path):
    model = load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")
    table = pd.read_csv(ad_cohort)
    table.loc[0, "APOE4"] = np.nan  # not known for the first subject
    table["IMAGE"] = [str(ad_cohort.parent / v) for v in table.IMAGE]
    path = tmp_path / "with_unknown.csv"  # the session's cohort stays as it is
    table.to_csv(path, index=False)
    pairs = whatif_curves(model, path, n=2, fields=["APOE4", "AGE"], points=5)
    assert [(p.subject, p.field) for p in pairs] == [
        ("SYN_S_0000", "APOE4"), ("SYN_S_0000", "AGE"), ("SYN_S_0001", "APOE4"), ("SYN_S_0001", "AGE"),
    ]  # fmt: skip
    first = pairs[1]  # AGE swept with APOE4 unknown
    record = model.info.schema.parse(table.iloc[0])
    assert record["APOE4"] is None
    session = WhatIfSession(model, load_scan(table.IMAGE[0]), "s0")
    np.testing.assert_allclose(first.model, session.response_curve(record, "AGE", n=5).outputs, atol=1e-6)
    truth_row = {**table.iloc[0].to_dict(), "APOE4": np.nan}
    # the truth the crop model can reach knows the hippocampi and entorhinal cortices, not the ventricles
    seen = ("HIPPOCAMPUS_PERMILLE", "ENTORHINAL_MM3")
    np.testing.assert_allclose(first.truth, ad_truth_curve(truth_row, "AGE", first.values, seen))
    np.testing.assert_allclose(first.truth_all, ad_truth_curve(truth_row, "AGE", first.values))
    hidden = {**truth_row, "VENTRICLES_PERMILLE": np.nan, "BRAIN_PERMILLE": np.nan}
    np.testing.assert_allclose(first.truth, ad_truth_curve(hidden, "AGE", first.values))
    assert np.abs(first.truth - first.truth_all).max() > 1e-3  # the ventricles are evidence the model lacks
    view = fidelity_summary(pairs, against="view").set_index("field")
    every = fidelity_summary(pairs, against="all").set_index("field")
    assert view.loc["AGE", "mean_abs_diff"] != every.loc["AGE", "mean_abs_diff"]
    assert pairs[0].values == [0.0, 1.0, 2.0] and not pairs[0].known
    assert pairs[2].known == bool(np.isfinite(table.APOE4[1]))


def test_whatif_fidelity_command(ad_cohort, brain_age_cohort, tmp_path, capsys):
    out, curves = tmp_path / "fid.md", tmp_path / "curves.csv"
    args = ["whatif-fidelity", str(models_dir() / "ad_hyperfusion.safetensors"), str(ad_cohort), "--n", "2",
            "--points", "4", "--out", str(out), "--curves", str(curves), "--quiet"]  # fmt: skip
    assert main(args) == 0
    text = out.read_text()
    assert "SYNTHETIC" in text and "| AGE | 2 |" in text and "| all | 10 |" in text
    assert "views hold: hippocampi, entorhinal cortices" in text and "knows every true volume" in text
    table = pd.read_csv(curves)
    assert {"subject", "field", "value", "model_AD", "truth_AD", "truth_all_volumes_AD"} <= set(table.columns)
    # each point says whether it leaves the training data, as the panel's grey band does
    from napari_hyperfusion.analysis.support import curve_outside

    model = read_info(models_dir() / "ad_hyperfusion.safetensors")
    record = model.schema.parse(pd.read_csv(ad_cohort).iloc[0])
    first = table[(table.subject == "SYN_S_0000") & (table.field == "TAU")]
    expected = curve_outside(model.schema, record, "TAU", list(first.value))
    assert list(first.outside_the_data) == list(expected)
    assert table.outside_the_data.any()  # the top of the tau or p-tau range, with the other held
    assert "Where the sliders leave the training data" in text
    assert main(["whatif-fidelity", str(models_dir() / "brain_age_hyperfusion.safetensors"), str(brain_age_cohort),
                 "--n", "2", "--quiet"]) == 0  # fmt: skip
    assert "| PTGENDER | 2 |" in capsys.readouterr().out


def test_what_each_shipped_models_views_hold():
    def seen(name):
        info = read_info(models_dir() / f"{name}.safetensors")
        return seen_volumes(info.image if info.config.uses_image else None)

    assert seen("ad_hyperfusion") == seen("ad_imaging") == ("HIPPOCAMPUS_PERMILLE", "ENTORHINAL_MM3")
    assert set(seen("brain_age_hyperfusion")) == {
        "HIPPOCAMPUS_PERMILLE", "ENTORHINAL_MM3", "VENTRICLES_PERMILLE", "BRAIN_PERMILLE",
    }  # fmt: skip
    assert seen_volumes(None) == ()


def test_whatif_fidelity_refuses_what_has_no_truth(tmp_path, capsys):
    table = pd.read_csv(sample_data_dir() / "subjects.csv").drop(columns=["HIPPOCAMPUS_PERMILLE"])
    table["IMAGE"] = [str(sample_data_dir() / v) for v in table.IMAGE]
    table.to_csv(tmp_path / "no_truth.csv", index=False)
    assert main(["whatif-fidelity", str(models_dir() / "ad_hyperfusion.safetensors"),
                 str(tmp_path / "no_truth.csv"), "--quiet"]) == 2  # fmt: skip
    assert "no ground-truth columns" in capsys.readouterr().err
    assert main(["whatif-fidelity", str(models_dir() / "risk_hyperfusion.safetensors"),
                 str(sample_data_dir() / "subjects.csv"), "--quiet"]) == 2  # fmt: skip
    assert "exact answer exists for the synthetic AD task" in capsys.readouterr().err


def test_age_bias_removes_the_pull_to_the_mean():
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 90, 400)
    predicted = 30 + 0.5 * age + rng.normal(0, 4, 400)  # pulled towards 60
    bias = fit_age_bias(predicted, age, fitted_on="test draws")
    assert bias.slope == pytest.approx(0.5, abs=0.03) and bias.n == 400
    raw_gap = predicted - age
    corrected = bias.corrected_gap(predicted, age)
    assert np.corrcoef(raw_gap, age)[0, 1] < -0.9
    assert abs(np.corrcoef(corrected, age)[0, 1]) < 0.05
    assert AgeBias.from_dict(bias.to_dict()) == bias
    with pytest.raises(ValueError, match="at least 20"):
        fit_age_bias(predicted[:10], age[:10])
    with pytest.raises(ValueError, match="barely follows age"):
        fit_age_bias(60 + rng.normal(0, 1, 400), age)


def test_the_shipped_brain_age_model_carries_its_age_trend(tmp_path):
    from napari_hyperfusion.infer.subject import predict_subject

    model = load_model(models_dir() / "brain_age_hyperfusion.safetensors", "cpu")
    bias = AgeBias.from_dict(model.info.input_stats["age_bias"])
    assert 0.1 < bias.slope < 1.5 and bias.n >= 100 and "held-out" in bias.fitted_on
    scan = load_scan(sample_data_dir() / "brain_age" / "sub-young" / "anat" / "sub-young_T1w.nii.gz")
    young = predict_subject(model, scan, {"PTGENDER": "Female"}, chronological_age=30.0)
    assert young.age_gap_corrected == pytest.approx(young.values[0] - bias.expected(30.0))
    assert "after the age-bias correction" in young.summary()
    assert main(["predict", str(models_dir() / "brain_age_hyperfusion.safetensors"),
                 str(sample_data_dir() / "brain_age" / "participants.tsv"), "--out", str(tmp_path / "p.csv")]) == 0  # fmt: skip
    table = pd.read_csv(tmp_path / "p.csv")
    np.testing.assert_allclose(
        table.brain_age_gap_corrected, table.predicted_brain_age - bias.expected(table.chronological_age), atol=1e-4
    )
