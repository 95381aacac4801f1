"""Model files: exact round trips for every architecture, refusal of pickles
without running them, and the specific errors for bad files."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from conftest import config_id, random_inputs, small_configs
from safetensors.torch import save_file

from napari_hyperfusion.cli import main as cli_main
from napari_hyperfusion.data.schema import TabularSchema, adni_schema, brain_age_schema
from napari_hyperfusion.io.model_file import ModelFileError, ModelInfo, load_model, read_info, save_model
from napari_hyperfusion.nn.build import build_model


def info_for(config, name="test model") -> ModelInfo:
    if config.backbone == "brain_age_cnn":
        return ModelInfo(name, "brain_age", config, brain_age_schema(), ["brain age"], output_unit="years")
    return ModelInfo(name, "ad_classification", config, adni_schema(), ["CN", "MCI", "AD"])


@pytest.fixture()
def saved(tmp_path):
    config = small_configs()[0]
    net = build_model(config).eval()
    path = save_model(
        tmp_path / "model.safetensors",
        net,
        info_for(config),
    )
    return path, net, config


@pytest.mark.parametrize("config", small_configs(), ids=config_id)
def test_save_load_round_trip_reproduces_outputs_exactly(tmp_path, config):
    net = build_model(config)
    with torch.no_grad():  # move BN running statistics off their defaults
        net.train()(*random_inputs(config, batch=4, seed=3))
    net.eval()
    path = save_model(tmp_path / "m.safetensors", net, info_for(config))
    loaded = load_model(path, device="cpu")
    assert loaded.info.config == config
    assert not loaded.net.training
    image, tabular = random_inputs(config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(image, tabular), net(image, tabular), rtol=0, atol=0)
    assert len(loaded.sha256) == 64


def test_metadata_travels_with_the_weights(saved):
    path, _, _ = saved
    info = read_info(path)
    assert info.synthetic_data and info.research_use_only
    assert "SYNTHETIC" in info.flags_text and "not a diagnostic device" in info.flags_text
    assert info.outputs == ["CN", "MCI", "AD"]
    assert info.schema.names == adni_schema().names


def test_half_precision_files_are_half_the_size_and_load_as_float32(tmp_path):
    config = small_configs()[0]
    net = build_model(config).eval()
    full = save_model(tmp_path / "f32.safetensors", net, info_for(config))
    half = save_model(tmp_path / "f16.safetensors", net, info_for(config), dtype=torch.float16)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_model(half, device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    image, tabular = random_inputs(config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(image, tabular), net(image, tabular), rtol=1e-2, atol=1e-2)


class _Exploit:
    """Unpickling this would create a file; a safe loader never runs it."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_a_pickle_renamed_to_a_model_file_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(sentinel), protocol=4))
    with pytest.raises(ModelFileError, match="never unpickles") as err:
        load_model(path)
    assert err.value.reason == "pickle"
    assert not sentinel.exists()


def test_a_torch_save_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    torch.save({"w": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match="zip archive") as err:
        load_model(path)
    assert err.value.reason == "pickle"


def test_a_truncated_file_says_so(saved, tmp_path):
    path, _, _ = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated") as err:
        load_model(cut)
    assert err.value.reason == "truncated"
    header_cut = tmp_path / "header_cut.safetensors"
    header_cut.write_bytes(data[:100])
    with pytest.raises(ModelFileError, match="truncated"):
        read_info(header_cut)


def test_random_bytes_are_not_a_model(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(struct.pack("<Q", 40) + b"\xff" * 40 + b"\x00" * 100)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert err.value.reason == "not_safetensors"


def test_a_foreign_safetensors_file_is_not_a_model(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(4, 4)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not a napari-hyperfusion model") as err:
        load_model(path)
    assert err.value.reason == "not_a_model"


def _rewrite_metadata(src, dst, edit):
    """Copy a model file with its metadata JSON edited by ``edit(dict)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(src), "pt") as fh:
        meta = dict(fh.metadata())
    data = json.loads(meta["napari_hyperfusion"])
    edit(data)
    meta["napari_hyperfusion"] = json.dumps(data)
    save_file(load_file(str(src)), str(dst), metadata=meta)


@pytest.mark.parametrize(
    "edit, message, reason",
    [
        (lambda d: d["config"].update(backbone="vit"), "unknown architecture.*'vit'", "unknown_architecture"),
        (lambda d: d["config"].update(base_filters=8), "shape mismatch: stem.0.weight", "weights_mismatch"),
        (lambda d: d.update(format_version=99), "upgrade the plugin", "bad_metadata"),
    ],
    ids=["unknown-architecture", "weights-mismatch", "newer-format"],
)
def test_edited_metadata_gives_its_specific_error(saved, tmp_path, edit, message, reason):
    path, _, _ = saved
    dst = tmp_path / "edited.safetensors"
    _rewrite_metadata(path, dst, edit)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(dst)
    assert err.value.reason == reason


def test_metadata_that_contradicts_the_network_is_refused():
    config = small_configs()[0]
    with pytest.raises(ModelFileError, match="2 output names"):
        ModelInfo("x", "ad_classification", config, adni_schema(), ["CN", "AD"])
    with pytest.raises(ModelFileError, match="schema encodes 2 numbers"):
        ModelInfo("x", "ad_classification", config, brain_age_schema(), ["CN", "MCI", "AD"])


def test_saving_is_atomic_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import napari_hyperfusion.io.model_file as mf

    config = small_configs()[0]
    net = build_model(config)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        mf.save_model(tmp_path / "m.safetensors", net, info_for(config))
    assert list(tmp_path.iterdir()) == []


def test_cli_info_prints_the_model_and_fails_cleanly_on_bad_files(saved, tmp_path, capsys):
    path, _, _ = saved
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ad_classification" in out and "block4.shortcut" in out and "SYNTHETIC" in out
    assert cli_main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["fusion"] == "hyperfusion"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(pickle.dumps({"a": 1}))
    assert cli_main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "never unpickles" in err and "Traceback" not in err
    assert cli_main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_fitted_schema_statistics_survive_the_file(tmp_path):
    import pandas as pd

    table = pd.DataFrame({"PTGENDER": ["Female", "Male", "Male"]})
    schema = brain_age_schema().fit(table)
    config = small_configs()[-1]
    net = build_model(config)
    info = ModelInfo("age", "brain_age", config, schema, ["brain age"], output_unit="years")
    loaded = load_model(save_model(tmp_path / "a.safetensors", net, info), device="cpu")
    assert isinstance(loaded.info.schema, TabularSchema)
    assert loaded.info.schema == schema
