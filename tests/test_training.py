"""Training, evaluation and batch prediction end to end on tiny real cohorts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_train_settings, write_toml
from sklearn.metrics import balanced_accuracy_score

from napari_hyperfusion import cli
from napari_hyperfusion.data.schema import TabularSchema
from napari_hyperfusion.infer.cohort import predict_cohort
from napari_hyperfusion.io.model_file import load_model, read_info
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.train import loop
from napari_hyperfusion.train.evaluate import cross_validate, summarise, to_markdown
from napari_hyperfusion.train.loop import (
    TrainConfig,
    TrainConfigError,
    apply_overrides,
    base_schema,
    kfold_indices,
    load_config_file,
    lr_at_epoch,
    model_config_for,
    split_indices,
)
from napari_hyperfusion.train.run import train_and_save


def _config(cohort, out, **changes) -> TrainConfig:
    task = "ad" if cohort.name.endswith(".csv") else "brain_age"
    return TrainConfig.from_dict({**tiny_train_settings(task), "cohort": str(cohort), "out": str(out), **changes})


def test_ad_train_predict_end_to_end(ad_cohort, tmp_path):
    config = tmp_path / "ad.toml"
    write_toml(config, {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "epochs": 6})
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--set", f"out='{out}'", "--set", "fusion=hyperfusion"]) == 0
    history = pd.read_csv(out / "history.csv")
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]  # it learns
    info = read_info(out / "model.safetensors")
    assert info.task == "ad_classification" and info.synthetic_data
    assert info.image["crop"] == "hippocampus" and len(info.image["views"]) == 2
    assert {"validation", "best_epoch", "n_train"} <= set(info.metrics)
    assert json.loads((out / "train_config.json").read_text())["fusion"] == "hyperfusion"

    preds = tmp_path / "preds.csv"
    assert cli.main(["predict", str(out / "model.safetensors"), str(ad_cohort), "--out", str(preds), "--quiet"]) == 0
    frame = pd.read_csv(preds)
    assert len(frame) == 32 and list(frame.columns[:5]) == ["PTID", "prob_CN", "prob_MCI", "prob_AD", "predicted"]
    np.testing.assert_allclose(frame[["prob_CN", "prob_MCI", "prob_AD"]].sum(axis=1), 1.0, atol=1e-4)
    # the predictions CSV is what the model core computes for the same file
    direct = predict_cohort(load_model(out / "model.safetensors", "cpu"), ad_cohort)
    np.testing.assert_allclose(frame.prob_AD, direct.prob_AD, atol=1e-5)
    # refusing to overwrite leaves the file as it was
    before = preds.read_bytes()
    assert cli.main(["predict", str(out / "model.safetensors"), str(ad_cohort), "--out", str(preds), "--quiet"]) == 2
    assert preds.read_bytes() == before


def test_saved_model_reloads_to_identical_outputs(ad_cohort, tmp_path):
    outcome = train_and_save(_config(ad_cohort, tmp_path, epochs=2))
    loaded = load_model(outcome.model_path, "cpu")
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(3, 1, 16, 24, 16, generator=gen)
    tabular = torch.randn(3, loaded.info.config.tabular_dim, generator=gen)
    outcome.net.eval()
    with torch.no_grad():
        assert torch.equal(outcome.net.cpu()(image, tabular), loaded.net(image, tabular))


def test_brain_age_train_and_predict(brain_age_cohort, tmp_path):
    outcome = train_and_save(
        _config(brain_age_cohort, tmp_path, epochs=3, test_fraction=0.25, head_activation="leaky_relu")
    )
    info = read_info(outcome.model_path)
    assert info.task == "brain_age" and info.output_unit == "years"
    assert {"mae", "r2"} <= set(info.metrics["validation"]) and "test" in info.metrics
    assert info.config.head_activation == "leaky_relu"  # the shipped brain-age config's head
    model = load_model(outcome.model_path, "cpu")
    assert model.net.head.negative_slope > 0
    frame = predict_cohort(model, brain_age_cohort)
    assert len(frame) == 24 and frame.predicted_brain_age.between(0, 150).all()


def test_preprocessing_statistics_come_from_training_rows_only(ad_cohort, tmp_path):
    # make the non-training rows extreme: any leak moves the fitted statistics
    table = pd.read_csv(ad_cohort)
    table["IMAGE"] = [str(ad_cohort.parent / p) for p in table.IMAGE]
    cfg = _config(ad_cohort, tmp_path / "run", epochs=1, test_fraction=0.25)
    y = np.array([("CN", "MCI", "AD").index(d) for d in table.DX])
    test_idx, val_idx, train_idx = split_indices(y, [0.25, cfg.val_fraction], cfg.seed, True)
    table.loc[np.r_[test_idx, val_idx], "AGE"] = 105.0
    table.loc[np.r_[test_idx, val_idx], "ABETA"] = 4900.0
    edited = tmp_path / "edited.csv"
    table.to_csv(edited, index=False)
    outcome = train_and_save(_config(edited, tmp_path / "run", epochs=1, test_fraction=0.25))
    schema = read_info(outcome.model_path).schema
    train = table.iloc[train_idx]
    assert schema["AGE"].mean == pytest.approx(train.AGE.mean())
    assert schema["ABETA"].mean == pytest.approx(train.ABETA.dropna().mean())
    assert schema["AGE"].mean < 100


def test_cross_validation_fits_each_fold_on_its_training_rows(ad_cohort, monkeypatch):
    seen: list[set[float]] = []
    original = TabularSchema.fit

    def recording_fit(self, frame, source=""):
        seen.append(set(frame.PTID))
        return original(self, frame, source)

    monkeypatch.setattr(TabularSchema, "fit", recording_fit)
    cfg = _config(ad_cohort, "", epochs=1)
    result = cross_validate(cfg, ["tabular"], folds=2, seeds=[0], test_fraction=0.25, log=lambda m: None)
    ids = pd.read_csv(ad_cohort).PTID.to_numpy()
    y = np.array([("CN", "MCI", "AD").index(d) for d in pd.read_csv(ad_cohort).DX])
    test_idx, rest_idx = split_indices(y, [0.25], cfg.seed, True)
    folds = kfold_indices(y[rest_idx], 2, 0, True)
    assert len(seen) == 2
    for fitted, (train, val) in zip(seen, folds):
        assert fitted == set(ids[rest_idx[train]])
        assert not fitted & set(ids[rest_idx[val]]) and not fitted & set(ids[test_idx])
    assert result.n_test == len(test_idx)


def test_evaluate_cli_writes_tables(ad_cohort, tmp_path):
    config = tmp_path / "ad.toml"
    write_toml(config, {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "epochs": 1})
    out = tmp_path / "report"
    code = cli.main(["evaluate", str(config), "--fusions", "hyperfusion,tabular,concat,logistic", "--folds", "2",
                     "--seeds", "0,1", "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = pd.read_csv(out / "evaluation.csv")
    # per method and seed: two ensembles + one row per fold model; per limit and seed: two ensemble rows
    limits = ["Bayes (EHR + true volumes)", "Bayes (EHR only)"]
    assert len(rows) == 4 * 2 * (2 + 2) + 2 * 2 * 2
    assert set(rows.ensemble) == {"entropy", "mean", "single"}
    assert set(rows.fusion) == {"hyperfusion", "tabular", "concat", "logistic", *limits}
    # every fold model was also written the moment it finished
    finished = pd.read_csv(out / "fold_models.csv")
    assert len(finished) == 4 * 2 * 2 and set(finished.fusion) == {"hyperfusion", "tabular", "concat", "logistic"}
    report = (out / "evaluation.md").read_text()
    assert "| hyperfusion |" in report and "Mann-Whitney" in report and "SYNTHETIC" in report
    # the limit is the first row of every table, and every method has its distance to it
    table = [line for line in report.splitlines() if line.startswith("| ")]
    assert table[1].startswith("| **Bayes (EHR + true volumes)** (limit)") and "distance to limit" in table[0]
    summary = pd.read_csv(out / "summary.csv")
    # methods that read only the EHR are measured from the EHR-only limit, the others from the first
    ensemble = summary[summary.ensemble == "entropy"].set_index(["fusion", "metric"])["mean"]

    def distance(method: str) -> str:
        line = next(row for row in table if row.startswith(f"| {method} |"))
        return line.rstrip(" |").rsplit("| ", 1)[1]

    for method, limit in (("logistic", limits[1]), ("tabular", limits[1]), ("concat", limits[0])):
        expected = ensemble[(limit, "balanced_accuracy")] - ensemble[(method, "balanced_accuracy")]
        assert distance(method) == f"{expected:+.3f}"
    assert summary[summary.fusion.isin(["hyperfusion", *limits])].p_value.isna().all()
    others = summary[~summary.fusion.isin(["hyperfusion", *limits])]
    assert others.p_value.between(0, 1).all()
    # the Bayes rows are computed from the generator, not trained: the same for both seeds
    bayes = rows[(rows.fusion == limits[0]) & (rows.ensemble == "entropy")].balanced_accuracy
    assert bayes.nunique() == 1 and 0 <= bayes.iloc[0] <= 1
    # the fold ensembles' test predictions are kept, and they are the predictions that were scored
    kept = pd.read_csv(out / "test_predictions.csv")
    n_test = json.loads((out / "evaluation.json").read_text())["n_test"]
    assert len(kept) == 4 * 2 * n_test and {"y_0", "out_0", "out_1", "out_2"} <= set(kept.columns)
    scored = rows[rows.ensemble == "entropy"].set_index(["fusion", "seed"]).balanced_accuracy
    for (method, seed), part in kept.groupby(["fusion", "seed"]):
        again = balanced_accuracy_score(part.y_0, part[["out_0", "out_1", "out_2"]].to_numpy().argmax(1))
        assert again == pytest.approx(scored[(method, seed)], abs=1e-6)  # the CSV keeps 6 decimals
    # HyperFusion's paired advantage per seed is the difference of the two ensembles' scores
    paired = next(line for line in report.splitlines() if line.startswith("| concat | ") and "[" in line)
    cells = [c.strip() for c in paired.strip("|").split("|")][1:]
    assert "| baseline | seed 0 | seed 1 | mean over seeds |" in report and len(cells) == 3
    for seed, cell in zip((0, 1), cells):
        expected = scored[("hyperfusion", seed)] - scored[("concat", seed)]
        low, high = (float(v) for v in cell.split("[")[1].rstrip("]").split(","))
        assert cell.startswith(f"{expected:+.3f} [") and low <= expected + 1e-9 and expected - 1e-9 <= high


def test_evaluate_on_a_separate_test_cohort(ad_cohort, tmp_path):
    from napari_hyperfusion.synth.cohort import make_cohort

    test_table = make_cohort("ad", 12, seed=41, out=tmp_path / "test_cohort", jobs=1)
    config = tmp_path / "ad.toml"
    write_toml(config, {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "epochs": 1})
    out = tmp_path / "report"
    code = cli.main(["evaluate", str(config), "--fusions", "logistic,tabular", "--folds", "2", "--seeds", "0",
                     "--test-cohort", str(test_table), "--no-limit", "--max-folds", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    finished = pd.read_csv(out / "fold_models.csv")
    assert list(finished.fusion) == ["logistic", "tabular"] and set(finished.fold) == {0}  # the first fold only
    report = (out / "evaluation.md").read_text()
    assert "Test: 12 subjects of test_cohort/cohort.csv; cross-validation on 32 subjects" in report
    assert "Bayes" not in report  # --no-limit
    # a second run of another method on the same splits and test set, merged into one report
    other = tmp_path / "other"
    assert cli.main(["evaluate", str(config), "--fusions", "tabular:select_on=loss", "--folds", "2", "--seeds", "0",
                     "--test-cohort", str(test_table), "--max-folds", "1", "--out", str(other)]) == 0  # fmt: skip
    merged = tmp_path / "merged"
    assert cli.main(["evaluate-merge", str(out), str(other), "--out", str(merged)]) == 0
    text = (merged / "evaluation.md").read_text()
    assert "| logistic |" in text and "| tabular:select_on=loss |" in text and "Test: 12 subjects" in text
    limits = {"Bayes (EHR + true volumes)", "Bayes (EHR only)"}  # from the second report: the first has none
    assert set(pd.read_csv(merged / "evaluation.csv").fusion) == {"logistic", "tabular", "tabular:select_on=loss",
                                                                   *limits}  # fmt: skip
    # the limits computed again on the test table give the same rows
    again = tmp_path / "again"
    assert (
        cli.main(["evaluate-merge", str(out), str(other), "--test-cohort", str(test_table), "--out", str(again)]) == 0
    )
    a, b = (pd.read_csv(d / "evaluation.csv") for d in (merged, again))
    pd.testing.assert_frame_equal(a[a.fusion.isin(limits)].reset_index(drop=True),
                                  b[b.fusion.isin(limits)].reset_index(drop=True), check_like=True)  # fmt: skip
    assert cli.main(["evaluate-merge", str(out), str(other), "--test-cohort", str(ad_cohort), "--out", str(again)]) == 2
    meta = json.loads((other / "evaluation.json").read_text())
    (other / "evaluation.json").write_text(json.dumps({**meta, "n_test": 99}))
    assert cli.main(["evaluate-merge", str(out), str(other), "--out", str(merged)]) == 2  # another test set
    (other / "evaluation.json").write_text(json.dumps(meta))
    (out / "evaluation.json").unlink()  # a report from before evaluation.json: read from evaluation.md
    assert cli.main(["evaluate-merge", str(out), str(other), "--out", str(merged)]) == 0
    # a second split seed, run later, joins the first one's report: each method then has both seeds
    seed1 = tmp_path / "seed1"
    assert cli.main(["evaluate", str(config), "--fusions", "logistic,tabular", "--folds", "2", "--seeds", "1",
                     "--test-cohort", str(test_table), "--max-folds", "1", "--out", str(seed1)]) == 0  # fmt: skip
    both = tmp_path / "both"
    assert cli.main(["evaluate-merge", str(merged), str(seed1), "--out", str(both)]) == 0
    rows = pd.read_csv(both / "evaluation.csv")
    assert set(rows[rows.fusion == "tabular"].seed) == {0, 1} and set(
        rows[rows.fusion == "tabular:select_on=loss"].seed
    ) == {0}
    assert set(rows[rows.fusion.isin(limits)].seed) == {0, 1}  # each seed's limit rows
    assert json.loads((both / "evaluation.json").read_text())["splits"]["seeds"] == [0, 1]
    assert "mean +- sd over 2 seed(s)" in (both / "evaluation.md").read_text()
    kept = pd.read_csv(both / "test_predictions.csv")
    assert set(kept[kept.fusion == "logistic"].seed) == {0, 1} and len(kept) == 5 * 12
    # seeds that overlap without being the same are refused: merge each seed's reports first
    assert cli.main(["evaluate-merge", str(both), str(seed1), "--out", str(tmp_path / "x")]) == 2
    assert cli.main(["evaluate", str(config), "--fusions", "logistic:lr=1", "--out", str(out)]) == 2
    assert cli.main(["evaluate", str(config), "--folds", "2", "--max-folds", "3", "--out", str(out)]) == 2


def test_paired_advantage_counts_a_lower_error_as_positive():
    from napari_hyperfusion.train.evaluate import EvalResult, paired_differences, prediction_frame

    rng = np.random.default_rng(0)
    age = rng.uniform(40, 80, 200)
    good, bad = age + rng.normal(0, 2, 200), age + rng.normal(0, 8, 200)
    kept = pd.concat([prediction_frame("hyperfusion", 0, age, good[:, None]),
                      prediction_frame("concat", 0, age, bad[:, None])])  # fmt: skip
    result = EvalResult(pd.DataFrame(), ["mae"], ["hyperfusion", "concat"], 200, 0, task="brain_age", predictions=kept)
    row = paired_differences(result, n=200).iloc[0]
    expected = np.abs(bad - age).mean() - np.abs(good - age).mean()
    assert row.baseline == "concat" and row.seed == 0 and row.advantage == pytest.approx(expected)
    assert 0 < row.low < expected < row.high
    # the other way round the advantage is negative
    swapped = EvalResult(pd.DataFrame(), ["mae"], ["concat", "hyperfusion"], 200, 0, reference="concat",
                         task="brain_age", predictions=kept)  # fmt: skip
    assert paired_differences(swapped, n=200).iloc[0].advantage == pytest.approx(-expected)


def test_reports_of_two_seeds_merge_into_one_paired_comparison():
    from napari_hyperfusion.train import evaluate

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)

    def run(seed: int, hits: dict[str, float], task: str = "ad") -> evaluate.EvalResult:
        kept, rows = [], []
        for fusion, rate in hits.items():
            right = rng.random(len(y)) < rate
            pred = np.full((len(y), 3), 0.1)
            pred[np.arange(len(y)), np.where(right, y, (y + 1) % 3)] = 0.8
            kept.append(evaluate.prediction_frame(fusion, seed, y, pred))
            rows.append({"fusion": fusion, "seed": seed, "ensemble": "entropy", "balanced_accuracy": rate})
        return evaluate.EvalResult(pd.DataFrame(rows), ["balanced_accuracy"], list(hits), len(y), 40, task=task,
                                   predictions=pd.concat(kept))  # fmt: skip

    first, second = run(0, {"hyperfusion": 0.8, "concat": 0.6}), run(1, {"hyperfusion": 0.7, "concat": 0.7})
    merged = evaluate.merge_results([second, first], [{"folds": 3, "seeds": [1]}, {"folds": 3, "seeds": [0]}])
    diffs = evaluate.paired_differences(merged, n=300).set_index("seed")
    assert list(diffs.index) == [0, 1, "mean"]
    assert diffs.loc["mean", "advantage"] == pytest.approx((diffs.loc[0, "advantage"] + diffs.loc[1, "advantage"]) / 2)
    assert diffs.loc[0, "low"] > 0.05 and diffs.loc[1, "low"] < 0 < diffs.loc[1, "high"]
    # the report's columns run seed 0, seed 1, mean, whatever order the reports came in
    assert "| baseline | seed 0 | seed 1 | mean over seeds |" in evaluate.to_markdown(merged)
    # an older report without a task keeps the other's; two tasks are refused
    older = run(2, {"hyperfusion": 0.7, "concat": 0.7}, task="")
    assert evaluate.merge_results([first, older]).task == "ad"
    with pytest.raises(ValueError, match="different tasks"):
        evaluate.merge_results([first, run(3, {"hyperfusion": 0.7}, task="brain_age")])
    # predictions that do not belong to the same test rows are said, not hidden
    wrong = run(4, {"hyperfusion": 0.7, "concat": 0.7})
    wrong.predictions.loc[wrong.predictions.fusion == "concat", "y_0"] = (y + 1) % 3
    assert "No paired comparison: concat (seed 4) was tested on other targets" in evaluate.to_markdown(wrong)


def test_mann_whitney_direction(ad_cohort):
    from napari_hyperfusion.train.evaluate import EvalResult

    rows = pd.DataFrame(
        [{"fusion": "hyperfusion", "seed": s, "ensemble": "entropy", "balanced_accuracy": 0.8 + s / 100, "mae": 1.0}
         for s in range(4)]
        + [{"fusion": "imaging", "seed": s, "ensemble": "entropy", "balanced_accuracy": 0.5 + s / 100, "mae": 2.0}
           for s in range(4)]
    )  # fmt: skip
    result = EvalResult(rows, ["balanced_accuracy", "mae"], ["hyperfusion", "imaging"], 10, 40)
    summary = summarise(result).set_index(["fusion", "metric"])
    # 4 vs 4 with complete separation: p = 1 / C(8, 4)
    assert summary.loc[("imaging", "balanced_accuracy"), "p_value"] == pytest.approx(1 / 70)
    assert summary.loc[("imaging", "mae"), "p_value"] < 0.05  # lower MAE is better
    assert "0.014" in to_markdown(result)


def test_resume_continues_exactly(ad_cohort, tmp_path):
    straight = train_and_save(_config(ad_cohort, tmp_path / "a", epochs=3))
    train_and_save(_config(ad_cohort, tmp_path / "b", epochs=2))
    resumed = train_and_save(_config(ad_cohort, tmp_path / "b", epochs=3, resume=True))
    assert [r["epoch"] for r in resumed.fit.history] == [1, 2, 3]
    last_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    last_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for key, value in last_a.items():
        torch.testing.assert_close(last_b[key], value, rtol=1e-5, atol=1e-6)
    assert straight.fit.history[-1]["train_loss"] == pytest.approx(resumed.fit.history[-1]["train_loss"], rel=1e-5)
    # a checkpoint from other settings is refused, not silently mixed in
    with pytest.raises(TrainConfigError, match="other settings"):
        train_and_save(_config(ad_cohort, tmp_path / "b", epochs=4, lr=1e-2, resume=True))


def test_cosine_schedule_runs_from_lr_to_a_hundredth_and_resumes_exactly(ad_cohort, tmp_path, monkeypatch):
    cfg = _config(ad_cohort, tmp_path / "a", epochs=3, lr_schedule="cosine")
    assert [lr_at_epoch(cfg, e, 3) for e in (1, 2, 3)] == pytest.approx([3e-3, 3e-3 * 0.505, 3e-5])
    assert lr_at_epoch(_config(ad_cohort, tmp_path, lr=1e-3), 7, 30) == 1e-3  # constant: as every earlier file
    straight = train_and_save(cfg)
    last_rate = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]["lr"]
    assert last_rate == pytest.approx(3e-5)

    # killed after the second epoch's checkpoint, then resumed: the third epoch takes the third epoch's rate
    save = loop._save_checkpoint

    def killed_after_two(path, state):
        save(path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_checkpoint", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_and_save(_config(ad_cohort, tmp_path / "b", epochs=3, lr_schedule="cosine"))
    monkeypatch.setattr(loop, "_save_checkpoint", save)
    resumed = train_and_save(_config(ad_cohort, tmp_path / "b", epochs=3, lr_schedule="cosine", resume=True))
    assert straight.fit.history[-1]["train_loss"] == pytest.approx(resumed.fit.history[-1]["train_loss"], rel=1e-5)
    # with a schedule, the number of epochs shapes every step: another count is another run
    with pytest.raises(TrainConfigError, match="other settings"):
        train_and_save(_config(ad_cohort, tmp_path / "b", epochs=5, lr_schedule="cosine", resume=True))


def test_settings_added_later_leave_older_checkpoints_resumable(ad_cohort, tmp_path):
    cfg = _config(ad_cohort, tmp_path)
    stamp = json.loads(loop.fingerprint_of(cfg, ["a"], ["b"]))["cfg"]
    assert "lr_schedule" not in stamp and "augment_rotate_deg" not in stamp and "epochs" not in stamp
    changed = json.loads(loop.fingerprint_of(_config(ad_cohort, tmp_path, augment_rotate_deg=3.0), ["a"], ["b"]))
    assert changed["cfg"]["augment_rotate_deg"] == 3.0
    for bad, message in (({"lr_schedule": "step"}, "lr_schedule must be one of constant, cosine"),
                         ({"augment_rotate_deg": 30.0}, "between 0 and 15 degrees")):  # fmt: skip
        with pytest.raises(TrainConfigError, match=message):
            _config(ad_cohort, tmp_path, **bad)


def test_rotation_augmentation_moves_the_brain_by_fractions_of_a_voxel():
    volume = np.zeros((20, 24, 20), np.float32)
    volume[6:14, 8:16, 6:14] = 1.0
    half_voxel = loop._rigid_motion(volume, np.zeros(3), np.array([0.5, 0.0, 0.0]))
    assert half_voxel[6, 10, 10] == pytest.approx(0.5) and half_voxel[14, 10, 10] == pytest.approx(0.5)
    assert np.array_equal(loop._rigid_motion(volume, np.zeros(3), np.zeros(3)), volume)
    turned = loop._rigid_motion(volume, np.array([0.0, 0.0, 10.0]), np.zeros(3))
    assert turned.sum() == pytest.approx(volume.sum(), rel=0.02) and not np.allclose(turned, volume)
    # seeded like every other augmentation; off (0 degrees) it draws what earlier files were trained with
    one, two = (loop._augment(volume, np.random.default_rng(4), True, 4.0, 3.0) for _ in range(2))
    assert np.array_equal(one, two)
    before = loop._augment(volume, np.random.default_rng(4), True, 4.0)
    assert not np.array_equal(before, one)
    assert np.array_equal(before, _whole_voxel_augment(volume, np.random.default_rng(4)))


def _whole_voxel_augment(volume, rng):
    """The augmentation every earlier file was trained with, frozen here as
    the reference: acquisition changes, whole-voxel shifts, a flip, gain."""
    from napari_hyperfusion.data.perturb import augment_view

    out = augment_view(volume, rng, 4.0)
    for axis in range(3):
        shift = int(rng.integers(-2, 3))
        if shift:
            out = np.take(out, np.clip(np.arange(out.shape[axis]) - shift, 0, out.shape[axis] - 1), axis=axis)
    if rng.random() < 0.5:
        out = out[::-1]
    return out * rng.uniform(0.9, 1.1) + rng.uniform(-0.1, 0.1)


def test_two_stage_pretraining_starts_from_the_tabular_mlp(ad_cohort, tmp_path):
    outcome = train_and_save(_config(ad_cohort, tmp_path, epochs=1, pretrain_tabular_epochs=2))
    info = read_info(outcome.model_path)
    assert "pretrain_validation" in info.metrics


def test_pretraining_puts_the_generators_back_on_the_hyperfan_in_target(ad_cohort):
    """After the embedding is taken from the pretrained tabular MLP, the
    generated weights' second moment is on target again (it is not without
    the re-scaling)."""
    from napari_hyperfusion.data.dataset import read_cohort
    from napari_hyperfusion.nn.hyper import generated_variance_ratios
    from napari_hyperfusion.train.loop import base_schema, pretrain_embedding, split_indices
    from napari_hyperfusion.train.run import prepare_data

    ratios = {}
    for rescale in (False, True):
        cfg = TrainConfig.from_dict({**tiny_train_settings("ad"), "cohort": str(ad_cohort), "lr": 3e-2,
                                     "pretrain_tabular_epochs": 6, "rescale_generators": rescale})  # fmt: skip
        cohort = read_cohort(cfg.cohort, cfg.spec, base_schema("ad"), need_target=True, need_images=False)
        val, train = split_indices(cohort.y, [0.25], 0, True)
        schema = base_schema("ad").fit(cohort.subset(train).table)
        data = [prepare_data(cohort, None, schema, i) for i in (train, val)]
        torch.manual_seed(0)
        net = build_model(model_config_for(cfg, schema, cohort.y[train]))
        result = pretrain_embedding(net, *data, cfg, torch.device("cpu"))
        assert (result.generator_rescale is not None) == rescale
        ratios[rescale] = generated_variance_ratios(net, torch.as_tensor(data[0].tabular))
    after = ratios[True]["blocks.3.shortcut"]
    assert after["weight"] == pytest.approx(1.0, rel=0.1)
    assert abs(ratios[False]["blocks.3.shortcut"]["weight"] - 1.0) > abs(after["weight"] - 1.0)


def test_config_files_and_overrides(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('task = "brain_age"\ncohort = "data/p.tsv"\nepochs = 3\n')
    data = load_config_file(toml)
    assert data["cohort"] == str(tmp_path / "data" / "p.tsv")  # relative to the file
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("task: ad\nepochs: 7\naugment: false\n")
    cfg = TrainConfig.from_dict(apply_overrides(load_config_file(yaml_file), ["epochs=2", "fusion=film"]))
    assert (cfg.epochs, cfg.fusion, cfg.augment, cfg.crop) == (2, "film", False, "hippocampus")
    with pytest.raises(TrainConfigError, match="unknown setting"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(TrainConfigError, match="whole number"):
        TrainConfig.from_dict({"epochs": "many"})
    with pytest.raises(TrainConfigError, match="not valid TOML"):
        bad = tmp_path / "bad.toml"
        bad.write_text("epochs = = 3")
        load_config_file(bad)


def test_splits_are_stratified_disjoint_and_complete():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    test, val, train = split_indices(y, [0.2, 0.2], seed=1, classification=True)
    assert sorted(np.r_[test, val, train]) == list(range(100))
    assert np.bincount(y[test]).tolist() == [10, 6, 4]
    folds = kfold_indices(y, 4, seed=2, classification=True)
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals) == list(range(100))
    for train_idx, val_idx in folds:
        assert not set(train_idx) & set(val_idx)
        assert abs(np.bincount(y[val_idx], minlength=3)[0] - 12.5) <= 1


@pytest.mark.gpu
def test_training_on_cuda_with_mixed_precision(ad_cohort, tmp_path):
    outcome = train_and_save(_config(ad_cohort, tmp_path, epochs=2, device="cuda", amp=True))
    assert np.isfinite(outcome.fit.history[-1]["train_loss"])
    assert read_info(outcome.model_path).provenance["device"].startswith("cuda")


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "models" / "configs").glob("*.toml")), ids=str)
def test_every_shipped_config_builds_its_network(path):
    """Each config in models/configs/ is a valid training config whose
    network can be built (the paper-faithful variants included)."""
    cfg = TrainConfig.from_dict(load_config_file(path))
    schema = base_schema(cfg.task)
    config = model_config_for(cfg, schema, np.array([0, 1, 2] if cfg.task == "ad" else [50.0, 60.0]))
    if cfg.fusion != "medfusion":
        build_model(config)
    if "authors" in path.name:
        assert config.block_style == "paper"
    if "aimed" in path.name:
        assert config.modulation_style == "ai-med"


def test_train_says_its_hyper_forms_are_fixed_by_rule(ad_cohort, tmp_path, capsys):
    from napari_hyperfusion.nn.hyper import clear_auto_forms

    clear_auto_forms()
    config = tmp_path / "c.toml"
    write_toml(config, {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "out": str(tmp_path / "o"), "epochs": 1})
    assert cli.main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    # training never times the forms (reproducible runs): nothing was measured, and it says so
    assert "forms fixed by rule" in out and "measured:" not in out
