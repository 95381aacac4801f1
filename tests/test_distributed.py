"""Distributed data parallel: two CPU processes under torchrun (gloo) train
the same model as one process taking the same micro-batches."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from conftest import tiny_train_settings, write_toml


def test_two_process_torchrun_matches_single_process(ad_cohort, tmp_path):
    settings = {**tiny_train_settings("ad"), "cohort": str(ad_cohort), "epochs": 2}
    config = tmp_path / "c.toml"
    write_toml(config, settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "napari_hyperfusion.cli", "train", str(config), "--set", f"out='{tmp_path / 'ddp'}'"]  # fmt: skip
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # rank 0 alone writes
    single = [sys.executable, "-m", "napari_hyperfusion.cli", "train", str(config),
              "--set", f"out='{tmp_path / 'single'}'", "--set", "accumulate=2"]  # fmt: skip
    done = subprocess.run(single, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    one = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["epoch"] == one["epoch"] == 2
    diff = norm = 0.0
    for key, value in one["model"].items():
        if value.is_floating_point() and "running" not in key:  # DDP keeps rank 0's BN statistics
            diff += float(((ddp["model"][key] - value) ** 2).sum())
            norm += float((value**2).sum())
    assert (diff / norm) ** 0.5 < 1e-3
    # the training losses agree too (each step saw the same subjects)
    for a, b in zip(ddp["history"], one["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-3 * max(1.0, abs(b["train_loss"]))
