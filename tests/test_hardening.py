"""Hostile and mistaken inputs reach the user as one clear message: model
files that ask for too much or hold NaN, names written in HTML, formulas in
CSV cells, numeric options out of range, run folders of other runs, damaged
checkpoints; and cohort prediction that streams, resumes and stays in order.

The files are real: shipped model files with their metadata rewritten, NIfTI
cohorts written by nibabel, the CLI called as a user calls it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import struct
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import dock_panel, tiny_train_settings, write_toml
from fuzz_cases import _join_safetensors, _split_safetensors

from napari_hyperfusion import cli
from napari_hyperfusion.errors import ModelFileError
from napari_hyperfusion.io.model_file import METADATA_KEY, load_model
from napari_hyperfusion.nn.footprint import LIMIT_ENV
from napari_hyperfusion.resources import models_dir

AD_MODEL = models_dir() / "ad_hyperfusion.safetensors"


def _rewrite(tmp_path, name: str, edit_meta=None, edit_data=None, source=AD_MODEL):
    """A copy of a shipped model file with its metadata (a dict) or its
    tensor bytes edited."""
    header, data = _split_safetensors(source.read_bytes())
    header = copy.deepcopy(header)
    if edit_meta is not None:
        meta = json.loads(header["__metadata__"][METADATA_KEY])
        edit_meta(meta)
        header["__metadata__"][METADATA_KEY] = json.dumps(meta)
    if edit_data is not None:
        data = edit_data(header, bytearray(data))
    path = tmp_path / name
    path.write_bytes(_join_safetensors(header, bytes(data)))
    return path


def _nan_first_values(header, data: bytearray) -> bytes:
    nan = {"F32": struct.pack("<f", float("nan")), "F16": b"\x00\x7e"}  # the shipped files are float16
    for key, entry in header.items():
        if key != "__metadata__" and entry["dtype"] in nan:
            start = entry["data_offsets"][0]
            data[start : start + len(nan[entry["dtype"]])] = nan[entry["dtype"]]
    return bytes(data)


# -- model files: size, NaN, the limit -------------------------------------------


def test_a_model_asking_for_a_huge_network_is_refused_before_it_is_built(tmp_path):
    path = _rewrite(tmp_path, "big.safetensors", lambda m: m["config"].update(base_filters=400))
    with pytest.raises(ModelFileError, match=r"needs about [\d,]+ MiB .* above the limit of 4,096 MiB") as info:
        load_model(path, device="cpu")
    assert LIMIT_ENV in str(info.value)  # says how to raise the limit


def test_the_memory_limit_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "1")
    with pytest.raises(ModelFileError, match="above the limit of 1 MiB"):
        load_model(AD_MODEL, device="cpu")
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(Exception, match=f"{LIMIT_ENV}='lots' is not a number of MiB"):
        load_model(AD_MODEL, device="cpu")
    monkeypatch.setenv(LIMIT_ENV, "100000")
    assert load_model(AD_MODEL, device="cpu").info.name


def test_nan_weights_are_refused_in_the_cli_with_exit_2(ad_cohort, tmp_path, capsys):
    path = _rewrite(tmp_path, "nan.safetensors", edit_data=_nan_first_values)
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(path), str(ad_cohort), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "hold NaN or infinite values" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(thresholds=["a", "b", "c"]), "thresholds.0: 'a' is not of type 'number'"),
        (lambda m: m["outputs"].update(names="CNMCIAD"), "outputs.names: 'CNMCIAD' is not of type 'array'"),
        (lambda m: m["image"].update(spacing_mm=0), "image.spacing_mm: 0 is less than or equal to the minimum"),
        (lambda m: m["config"].update(base_filters=10**30), "too large"),
        (lambda m: m["input_stats"]["image"].update(mean=[float("nan")]), "is not a finite number"),
    ],
    ids=["thresholds text", "outputs string", "zero spacing", "huge integer", "NaN statistic"],
)
def test_metadata_of_the_wrong_type_names_the_field(edit, message, tmp_path, capsys):
    path = _rewrite(tmp_path, "edited.safetensors", edit)
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_model(path, device="cpu")
    assert cli.main(["info", str(path)]) == 2  # the CLI says the same, without a traceback
    assert "Traceback" not in capsys.readouterr().err


# -- the panel: plain text, the previous model kept -------------------------------


def test_the_panel_shows_names_as_plain_text_and_keeps_its_model_on_a_bad_file(
    make_napari_viewer, qtbot, errors, tmp_path
):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLabel

    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    html_name = "<h1 style='font-size:90px'>Trusted</h1><br>" * 3
    html = _rewrite(tmp_path, "html.safetensors", lambda m: m.update(name=html_name))
    assert panel.open_model(html)
    assert html_name in panel.model_picker.combo.currentText()
    shown = [label for label in panel.findChildren(QLabel) if "<h1" in label.text()]
    assert shown, "the name is not shown anywhere"
    for label in shown:  # drawn as the characters it holds, not as HTML
        assert label.textFormat() == Qt.TextFormat.PlainText, label.objectName()
    assert "SYNTHETIC" in panel.model_picker.info.text()
    before, combo_before = panel.model.path, panel.model_picker.combo.currentText()
    for bad in (
        _rewrite(tmp_path, "big.safetensors", lambda m: m["config"].update(base_filters=400)),
        _rewrite(tmp_path, "nan.safetensors", edit_data=_nan_first_values),
        _rewrite(tmp_path, "text.safetensors", lambda m: m.update(thresholds="high")),
    ):
        assert not panel.open_model(bad)
        assert errors[-1].startswith("Cannot open the model: ") and bad.name in errors[-1]
        assert panel.model.path == before and panel.model_picker.combo.currentText() == combo_before


# -- CSV output --------------------------------------------------------------------


def _table_copy(cohort, tmp_path, edit=None, name="edited.csv"):
    table = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    table["IMAGE"] = [str(cohort.parent / p) for p in table.IMAGE]
    if edit is not None:
        edit(table)
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def test_a_formula_in_a_subject_id_reaches_the_predictions_as_text(ad_cohort, tmp_path, capsys):
    formula = "=cmd|' /C calc'!A0"
    table = _table_copy(ad_cohort, tmp_path, lambda t: t.loc.__setitem__((0, "PTID"), formula))
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(AD_MODEL), str(table), "--out", str(out), "--quiet"]) == 0
    cells = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert cells.iloc[0, 0] == "'" + formula  # a spreadsheet shows it, and does not run it
    lines = out.read_text().splitlines()
    assert not any(line.startswith("=") for line in lines)


# -- CLI options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "M", "C", "--out", "o.csv", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["predict", "M", "C", "--out", "o.csv", "--batch-size", "-4"], "--batch-size: must be at least 1, got -4"),
        (["predict", "M", "C", "--out", "o.csv", "--chunk-size", "0"], "--chunk-size: must be at least 1"),
        (["predict", "M", "C", "--out", "o.csv", "--jobs", "two"], "--jobs: 'two' is not a whole number"),
        (["make-cohort", "ad", "--out", "x", "--n", "0"], "--n: must be at least 1"),
        (["evaluate", "c.toml", "--folds", "1"], "--folds: must be at least 2"),
        (["evaluate", "c.toml", "--test-fraction", "1.5"], "--test-fraction: must be between 0 and 1"),
        (["explain-report", "M", "T", "--out", "r.md", "--ig-steps", "1"], "--ig-steps: must be at least 2"),
        (["explain-report", "M", "T", "--out", "r.md", "--n", "-1"], "--n: must be at least 1"),
    ],
)
def test_numeric_options_out_of_range_exit_2_with_the_reason(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- cohort prediction: streamed, resumed, in order ---------------------------------------


def _predict(model, table, out, *extra) -> int:
    return cli.main(["predict", str(model), str(table), "--out", str(out), "--quiet", "--chunk-size", "8", *extra])


def test_predict_resumes_an_interrupted_run_to_the_same_bytes(ad_cohort, tmp_path, monkeypatch, capsys):
    from napari_hyperfusion.infer import batch

    straight = tmp_path / "straight.csv"
    assert _predict(AD_MODEL, ad_cohort, straight) == 0
    # stop after two of the four chunks, as Ctrl+C would
    original, calls = batch.predict_rows, []

    def stopping(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(batch, "predict_rows", stopping)
    out = tmp_path / "p.csv"
    assert _predict(AD_MODEL, ad_cohort, out) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    parts = batch.parts_folder(out)
    assert not out.exists() and sorted(p.name for p in parts.glob("chunk_*")) == ["chunk_0000000.csv",
                                                                                  "chunk_0000001.csv"]  # fmt: skip
    # a new run does not silently discard them; another model cannot take them over
    assert _predict(AD_MODEL, ad_cohort, out) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    other = models_dir() / "ad_imaging.safetensors"
    assert _predict(other, ad_cohort, out, "--resume") == 2
    assert "written for another run (model_sha256 differ" in capsys.readouterr().err
    monkeypatch.setattr(batch, "predict_rows", original)
    assert _predict(AD_MODEL, ad_cohort, out, "--resume") == 0
    assert "2 of 4 chunk(s) were kept" in capsys.readouterr().out
    assert out.read_bytes() == straight.read_bytes() and not parts.exists()
    ids = pd.read_csv(out, dtype=str).iloc[:, 0].tolist()
    assert ids == pd.read_csv(ad_cohort, dtype=str).PTID.tolist()  # table order


def test_predict_refuses_to_replace_a_file_unless_asked(ad_cohort, tmp_path, capsys):
    out = tmp_path / "p.csv"
    out.write_text("my notes\n")
    assert _predict(AD_MODEL, ad_cohort, out) == 2
    assert "exists; choose another file or pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "my notes\n"  # nothing lost
    assert _predict(AD_MODEL, ad_cohort, tmp_path / "new.csv", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert _predict(AD_MODEL, ad_cohort, out, "--overwrite") == 0
    assert len(pd.read_csv(out)) == 32


@pytest.mark.slow
def test_predict_under_torchrun_gives_the_single_process_file(ad_cohort, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    base = ["-m", "napari_hyperfusion.cli", "predict", str(AD_MODEL), str(ad_cohort), "--chunk-size", "5",
            "--quiet", "--device", "cpu", "--out"]  # fmt: skip
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, *base, str(two)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1 and "2 processes" in done.stdout  # rank 0 joins and reports
    done = subprocess.run([sys.executable, *base, str(one)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()


# -- training folders and checkpoints ------------------------------------------------------


def _train(tmp_path, cohort, *extra) -> int:
    config = tmp_path / "c.toml"
    settings = {**tiny_train_settings("ad"), "cohort": str(cohort), "out": str(tmp_path / "run"), "epochs": 1}
    write_toml(config, settings)
    return cli.main(["train", str(config), *extra])


def test_a_new_run_into_an_earlier_runs_folder_is_refused(ad_cohort, tmp_path, capsys):
    assert _train(tmp_path, ad_cohort) == 0
    model = tmp_path / "run" / "model.safetensors"
    first = model.read_bytes()
    assert _train(tmp_path, ad_cohort, "--set", "lr=0.01") == 2
    err = capsys.readouterr().err
    assert "holds an earlier run (model.safetensors, history.csv" in err and "--overwrite" in err
    assert model.read_bytes() == first  # the earlier run is untouched
    assert _train(tmp_path, ad_cohort, "--set", "lr=0.01", "--resume", "--overwrite") == 2
    assert "choose one" in capsys.readouterr().err
    assert _train(tmp_path, ad_cohort, "--set", "lr=0.01", "--overwrite") == 0
    assert model.read_bytes() != first
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1  # one run's history, not two


def test_resume_refuses_a_cohort_changed_under_the_same_ids(ad_cohort, tmp_path, capsys):
    assert _train(tmp_path, ad_cohort, "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert _train(tmp_path, ad_cohort) == 0
    # the same IDs and labels, one EHR value changed
    edited_ehr = _table_copy(ad_cohort, tmp_path, lambda t: t.loc.__setitem__((3, "AGE"), "88"), "ehr.csv")
    # the same table, one scan's voxels changed
    scans = tmp_path / "scans"
    scans.mkdir()

    def swap_scan(t):
        img = nib.load(t.loc[0, "IMAGE"])
        changed = scans / "changed.nii.gz"
        nib.save(nib.Nifti1Image(img.get_fdata().astype(np.float32) * 1.1, img.affine), changed)
        t.loc[0, "IMAGE"] = str(changed)

    edited_scan = _table_copy(ad_cohort, tmp_path, swap_scan, "scan.csv")
    for edited in (edited_ehr, edited_scan):
        assert _train(tmp_path, edited, "--resume", "--set", "epochs=2") == 2
        assert "belongs to a run with other settings or data" in capsys.readouterr().err
    assert _train(tmp_path, _table_copy(ad_cohort, tmp_path), "--resume", "--set", "epochs=2") == 0


def test_a_damaged_checkpoint_is_refused_clearly(ad_cohort, tmp_path, capsys):
    assert _train(tmp_path, ad_cohort) == 0
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    for garbage in (b"not a checkpoint at all", checkpoint.read_bytes()[:500]):
        checkpoint.write_bytes(garbage)
        assert _train(tmp_path, ad_cohort, "--resume", "--set", "epochs=2") == 2
        err = capsys.readouterr().err
        assert "is not a readable napari-hyperfusion training checkpoint" in err and "Traceback" not in err


# -- text from a model file reaches terminals and CSV headers as plain words ----------


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(name="CN\x1b[2J\x1b[8m hidden"), "model name"),
        (lambda m: m["outputs"].update(names=["CN", "MCI\x1b[2J", "AD"]), "output name"),
        (lambda m: m["outputs"].update(names=["CN", "MCI", "<img src=x onerror=alert(1)>"]), "not a plain name"),
        (lambda m: m["outputs"].update(names=["CN", "MCI", " "]), "not a plain name"),
        (lambda m: m["schema"]["fields"][0].update(label="Age\x07\x1b]0;owned\x07"), "field name"),
        (lambda m: m["schema"]["fields"][1].update(categories=["Female", "Male\x1b[31m"]), "field category"),
    ],
    ids=[
        "escape in name",
        "escape in output",
        "html in output",
        "blank output",
        "escape in field",
        "escape in category",
    ],
)
def test_names_with_escapes_or_markup_are_refused_when_the_file_is_opened(edit, message, tmp_path, capsys):
    path = _rewrite(tmp_path, "edited.safetensors", edit)
    with pytest.raises(ModelFileError, match=message):
        load_model(path, device="cpu")
    assert cli.main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "\x1b" not in err and "\x07" not in err and "Traceback" not in err


def test_info_into_a_pipe_that_closes_early_is_not_an_error():
    run = subprocess.run(
        f"{sys.executable} -m napari_hyperfusion.cli info {AD_MODEL} | head -1",
        shell=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.startswith("HyperFusion AD")
    assert "BrokenPipeError" not in run.stderr and "Traceback" not in run.stderr


def test_a_table_with_two_columns_of_one_name_is_refused(ad_cohort, tmp_path, capsys, make_napari_viewer, errors):
    """Two AGE columns (62 and 90): which one is meant cannot be guessed; the
    CLI and the panel refuse the table by name instead of using the first."""
    path = _table_copy(ad_cohort, tmp_path)
    text = path.read_text().splitlines()
    text = [text[0] + ",AGE"] + [line + ",90" for line in text[1:]]
    path.write_text("\n".join(text) + "\n")
    assert _predict(AD_MODEL, path, tmp_path / "p.csv") == 2
    err = capsys.readouterr().err
    assert "more than one column named 'AGE'" in err and not (tmp_path / "p.csv").exists()
    spelled = _table_copy(ad_cohort, tmp_path, lambda t: t.insert(3, "age", "90"), name="spelled.csv")
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    record_before = dict(panel.patient.record())
    assert not panel.patient.load_record(spelled, "SYN_S_0000")  # "age" and "AGE" are one field twice
    assert "more than one column named 'AGE'" in errors[-1]
    assert panel.patient.record() == record_before  # nothing the user had is lost


# -- the same seed, data and config give the same model, whatever the clock says --------


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


PADDED_SITES = {"hyper_sites": ["block3.conv1", "block4.conv2"]}  # 3x3x3 kernels: every form applies, with padding


def test_training_with_auto_forms_is_reproducible_bit_for_bit(ad_cohort, tmp_path, monkeypatch):
    """hyper_form = "auto" chose each hyper layer's form by timing; two runs
    whose clocks disagreed gave different models. Here the clock is made to
    disagree on purpose (another form is "fastest" in each run, as under
    load): the models must still be the same, bit for bit, and a resumed run
    must give the uninterrupted run's model. (Every trained network's hyper
    layers have hyper_form = "auto".)"""
    from napari_hyperfusion.nn import hyper

    picks = iter(["loop", "grouped", "bmm", "loop", "grouped", "bmm"] * 50)
    monkeypatch.setattr(hyper, "_fastest", lambda runs, device, default: (next(picks), {}))
    models = []
    for run in ("a", "b"):
        hyper.clear_auto_forms()
        config = tmp_path / f"{run}.toml"
        settings = {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "out": str(tmp_path / run),
                    "epochs": 2, **PADDED_SITES}  # fmt: skip
        write_toml(config, settings)
        assert cli.main(["train", str(config)]) == 0
        models.append(_weights(tmp_path / run / "model.safetensors"))
    assert models[0].keys() == models[1].keys()
    for name in models[0]:
        assert torch.equal(models[0][name], models[1][name]), name
    # a resume: one epoch, then the second from the checkpoint
    hyper.clear_auto_forms()
    config = tmp_path / "c.toml"
    settings = {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "out": str(tmp_path / "c"), "epochs": 1,
                **PADDED_SITES}  # fmt: skip
    write_toml(config, settings)
    assert cli.main(["train", str(config)]) == 0
    hyper.clear_auto_forms()
    write_toml(config, {**settings, "epochs": 2})
    assert cli.main(["train", str(config), "--resume"]) == 0
    resumed = _weights(tmp_path / "c" / "model.safetensors")
    for name in models[0]:
        assert torch.equal(models[0][name], resumed[name]), name


def test_overwrite_keeps_the_earlier_model_until_the_new_one_exists(ad_cohort, tmp_path, monkeypatch, capsys):
    from napari_hyperfusion.train import run as train_run

    assert _train(tmp_path, ad_cohort) == 0
    model = tmp_path / "run" / "model.safetensors"
    before = model.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "fit", killed)  # the new run is killed before it has a model
    assert _train(tmp_path, ad_cohort, "--overwrite") == 130
    assert model.read_bytes() == before  # the earlier model is still there, whole
    assert "is kept until this run writes its own" in capsys.readouterr().err
    load_model(model, device="cpu")
    monkeypatch.undo()
    assert _train(tmp_path, ad_cohort, "--overwrite") == 0
    assert model.exists() and not (tmp_path / "run" / "model.safetensors.tmp").exists()


# -- scans: the real reason, bounded memory, no "prepared" file for a refused scan -------

ANATOMICAL = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")


def test_a_partial_field_of_view_is_named_with_its_real_coverage():
    from napari_hyperfusion.data.input_qc import check_input
    from napari_hyperfusion.data.preprocess import load_scan

    qc = check_input(load_scan(ANATOMICAL))  # nibabel's own test file: a 50 x 66 x 82 mm slab
    assert qc.verdict == "refuse" and len(qc.reasons) == 1
    assert "partial field of view" in qc.reasons[0] and "holds 16% of the template's brain" in qc.reasons[0]
    assert "skull" not in qc.reasons[0]


def test_huge_intensities_give_a_finite_sharpness_without_warnings():
    import warnings

    from napari_hyperfusion.data.input_qc import check_input
    from napari_hyperfusion.data.preprocess import Scan, load_scan

    scan = load_scan(models_dir().parent / "sample_data" / "SYN_DEMO_01.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "overflow encountered in square" was printed
        qc = check_input(Scan(scan.data.astype(np.float64) * 1e30, scan.affine))
    assert np.isfinite(qc.sharpness) and qc.verdict == "ok"


def test_a_tiny_gzip_claiming_a_huge_volume_is_refused_before_allocating(tmp_path):
    import gzip
    import resource

    from napari_hyperfusion.data.preprocess import load_scan
    from napari_hyperfusion.errors import ImageError

    header = nib.Nifti1Header()
    header.set_data_shape((511, 511, 511))
    header.set_data_dtype(np.float64)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4))
    assert bomb.stat().st_size < 200
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError, match="truncated or its header is wrong: the header claims 1018.0 MiB"):
        load_scan(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB: not the gigabyte
    # a multi-member gzip (bgzip-style), whose trailer records the last member only, still opens
    whole = nib.Nifti1Image(np.ones((40, 48, 40), np.float32), np.diag([2, 2, 2, 1.0]))
    raw = whole.to_bytes()
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(b"".join(gzip.compress(raw[i : i + 65536]) for i in range(0, len(raw), 65536)))
    assert load_scan(multi).data.shape == (40, 48, 40)


def test_chunk_size_is_bounded(capsys):
    assert cli.main(["predict", str(AD_MODEL), "x.csv", "--out", "y.csv", "--chunk-size", "100000"]) == 2
    assert "must be at most 2048" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("SimpleITK") is None, reason="prepare needs the [prep] extra")
def test_prepare_never_writes_a_refused_scan_under_a_prepared_name(tmp_path, capsys):
    assert cli.main(["prepare", ANATOMICAL, "--out", str(tmp_path)]) == 2
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names and all("_REFUSED" in n for n in names), names
    assert "REFUSE" in capsys.readouterr().out


def _move_views(meta, mm):
    for view in meta["image"]["views"]:
        view["affine"][0][3] += mm  # every view, 'mm' to the right


def test_a_view_grid_moved_off_its_region_is_refused_when_opened(tmp_path, capsys):
    """A grid moved 40 mm off the hippocampi it names read something else and
    only raised an out-of-distribution flag (P(AD) 0.216 -> 0.330)."""
    moved = _rewrite(tmp_path, "moved.safetensors", lambda m: _move_views(m, 40.0))
    with pytest.raises(
        ModelFileError, match="view 'right hippocampus' holds only 0% of the template's right hippocampus"
    ):
        load_model(moved, device="cpu")
    assert cli.main(["info", str(moved)]) == 2
    assert "not where its name says" in capsys.readouterr().err
    nudged = _rewrite(tmp_path, "nudged.safetensors", lambda m: _move_views(m, 2.0))  # a voxel: still its region
    load_model(nudged, device="cpu")


def test_a_model_file_without_its_image_grid_is_refused_with_a_message(ad_cohort, tmp_path, capsys):
    """No 'image' section: predict ended in KeyError: 'crop' (exit 1) and the
    panel called it a bug; now both say what the file lacks."""
    path = _rewrite(tmp_path, "no_image.safetensors", lambda m: m.pop("image"))
    assert _predict(path, _table_copy(ad_cohort, tmp_path), tmp_path / "p.csv") == 2
    err = capsys.readouterr().err
    assert "its file does not say which grid (no crop, shape, spacing_mm" in err and "KeyError" not in err
