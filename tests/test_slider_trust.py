"""Each what-if slider says whether it shows what the data hold: the check
``whatif-fidelity --write`` stores in a real model file, read back by the
panel in a real viewer after Predict and a slider move."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import dock_panel
from safetensors.torch import load_file

from napari_hyperfusion.analysis.slider_trust import SliderTrust, slider_trust
from napari_hyperfusion.cli import main
from napari_hyperfusion.errors import ModelFileError
from napari_hyperfusion.io.metadata_schema import check_metadata
from napari_hyperfusion.io.model_file import read_info, update_info
from napari_hyperfusion.resources import models_dir


def _trust(effect_model, effect_truth, moves=10, wrong=0, regression=False):
    return SliderTrust("TAU", 100, effect_model, effect_truth, moves, wrong, regression)


def test_a_slider_agrees_only_with_the_right_size_and_direction():
    assert _trust(0.24, 0.28).agrees  # 0.86x, every curve the right way
    assert "shows what the data hold" in _trust(0.24, 0.28).text("Age")
    big = _trust(0.20, 0.10)
    assert not big.agrees and "2.00x as much as the data do" in big.text("Total tau")
    backwards = _trust(0.16, 0.11, moves=38, wrong=23)
    assert not backwards.agrees and "the wrong way for 23 of 38" in backwards.text("Total tau")
    assert backwards.text("Total tau").startswith("Caution: Total tau moves the output the wrong way")
    assert _trust(0.16, 0.11, moves=40, wrong=2).agrees  # 5 % of borderline curves is noise
    # where the data barely move the output, only a model that moves it much is out of line
    assert _trust(0.03, 0.01, moves=0).agrees and _trust(0.03, 0.01).ratio is None
    assert not _trust(0.06, 0.01).agrees and "where the data barely move it" in _trust(0.06, 0.01).text("APOE4")
    sex = _trust(0.39, 6.27, moves=20, wrong=7, regression=True)
    assert not sex.agrees and "0.4 years across its range; the truth 6.3" in sex.text("Sex")


@pytest.fixture(scope="module")
def checked_model(ad_cohort, tmp_path_factory):
    """A copy of the shipped AD HyperFusion file with its sliders checked on 3 fresh subjects."""
    path = tmp_path_factory.mktemp("checked") / "ad_hyperfusion.safetensors"
    shutil.copy(models_dir() / "ad_hyperfusion.safetensors", path)
    report = path.with_suffix(".md")
    args = ["whatif-fidelity", str(path), str(ad_cohort), "--n", "3", "--points", "4", "--quiet", "--write"]
    assert main([*args, "--out", str(report)]) == 0
    return path, report.read_text()


def test_whatif_fidelity_write_stores_the_reports_numbers(checked_model, ad_cohort, capsys):
    path, report = checked_model
    stored = read_info(path).input_stats["whatif_fidelity"]
    assert stored["subjects"] == 3 and set(stored["fields"]) == {"AGE", "APOE4", "ABETA", "TAU", "PTAU"}
    assert ad_cohort.name in stored["checked_on"]
    # the stored numbers are the report's first table (against the truth the model can reach)
    first_table = report.split("Against the truth that knows")[0]
    for name, row in stored["fields"].items():
        line = next(x for x in first_table.splitlines() if x.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[3]) == pytest.approx(row["effect_model"], abs=5e-4)
        assert float(cells[4]) == pytest.approx(row["effect_truth"], abs=5e-4)
        assert int(cells[7]) == row["wrong_sign"]
    # `hyperfusion info` says what the panel will
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("sliders:"))
    for name in stored["fields"]:
        verdict = "agrees" if slider_trust(read_info(path).input_stats, name).agrees else "caution"
        assert f"{name} {verdict}" in line
    # the weights are untouched, bit for bit: only the metadata changed
    before, after = load_file(models_dir() / "ad_hyperfusion.safetensors"), load_file(path)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_malformed_check_is_refused(checked_model, tmp_path):
    data = {
        "whatif_fidelity": {"subjects": 3, "regression": False, "fields": {"TAU": {"curves": 3, "effect_model": 0.1}}}
    }
    with pytest.raises(ModelFileError, match="whatif_fidelity"):
        check_metadata({**_minimal_metadata(), "input_stats": data})
    # counts that contradict each other (more wrong than moving) are not turned into a sentence
    row = {"curves": 3, "effect_model": 0.1, "effect_truth": 0.1, "truth_moves": 2, "wrong_sign": 3}
    assert slider_trust({"whatif_fidelity": {"subjects": 3, "fields": {"TAU": row}}}, "TAU") is None
    # a check that would not load again is refused before the file is rewritten (NaN effect)
    path = tmp_path / "model.safetensors"
    shutil.copy(checked_model[0], path)
    before = path.read_bytes()
    stats = read_info(path).input_stats
    broken = {**stats["whatif_fidelity"], "fields": {"TAU": {**row, "wrong_sign": 0, "effect_model": float("nan")}}}
    with pytest.raises(ModelFileError):
        update_info(path, input_stats={**stats, "whatif_fidelity": broken})
    assert path.read_bytes() == before


def _minimal_metadata():
    import json
    import struct

    with (models_dir() / "ad_hyperfusion.safetensors").open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(json.loads(fh.read(n))["__metadata__"]["napari_hyperfusion"])


def test_the_panel_says_whether_each_slider_shows_what_the_data_hold(checked_model, make_napari_viewer, qtbot):
    path, _ = checked_model
    viewer = make_napari_viewer()
    panel = dock_panel(viewer, "SYN_DEMO_01")
    assert panel.open_model(path)
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    whatif, info = panel.whatif, read_info(path)
    label = whatif.trust_label
    for name in ("TAU", "AGE"):  # a slider moved brings its own check forward
        whatif.set_whatif_value(name, info.schema[name].maximum)
        expected = slider_trust(info.input_stats, name)
        assert label.text() == expected.text(info.schema[name].display_name)
        assert label.property("caution") == (not expected.agrees)
    whatif.curve_field.setCurrentIndex(whatif.curve_field.findData("ABETA"))  # so does the curve's field
    assert label.text() == slider_trust(info.input_stats, "ABETA").text(info.schema["ABETA"].display_name)
    assert "3 SYNTHETIC subjects" in label.text()
    # a slider the check did not cover says that, not that the file was never checked
    whatif.set_whatif_value("FDG", info.schema["FDG"].maximum)
    assert "this file's check against the truth did not cover it" in label.text()
    # a file that carries no check says so instead of implying one
    unchecked = path.with_name("unchecked.safetensors")
    shutil.copy(path, unchecked)
    stats = {k: v for k, v in info.input_stats.items() if k != "whatif_fidelity"}
    update_info(unchecked, input_stats=stats)
    assert panel.open_model(unchecked)
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy and panel.last_result is not None, timeout=60_000)
    panel.whatif.set_whatif_value("TAU", 500)
    assert "it was not checked; this slider shows what the model does" in panel.whatif.trust_label.text()
    assert not panel.whatif.trust_label.property("caution")
