"""Anatomical variability: each synthetic brain its own shape, with the
record's volumes kept (the generator's truth is conditioned on them)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_hyperfusion.cli import main as cli_main
from napari_hyperfusion.data.template import load_template
from napari_hyperfusion.synth.anatomy import AnatomyVariation, shape_displacement
from napari_hyperfusion.synth.cohort import make_cohort
from napari_hyperfusion.synth.images import _warp, synthesize_scan
from napari_hyperfusion.synth.records import sample_ad_records


def _field(seed: int) -> np.ndarray:
    tpl = load_template()
    grid = np.indices(tpl.shape, dtype=np.float32)
    return shape_displacement(grid, tpl.shape, 2.0, AnatomyVariation(), np.random.default_rng(seed))


def test_the_shape_field_has_its_amplitude_and_moves_no_volume():
    u = _field(0)
    rms_mm = float(np.sqrt((u**2).sum(0).mean())) * 2.0
    assert rms_mm == pytest.approx(2.5, rel=0.15)
    # divergence-free: the local volume change div u is small beside the
    # field's own gradients (a random field of this size would have both alike)
    grads = [np.gradient(u[i]) for i in range(3)]
    div = grads[0][0] + grads[1][1] + grads[2][2]
    strain = np.sqrt(sum(g**2 for row in grads for g in row))
    inner = (slice(4, -4),) * 3
    assert np.abs(div[inner]).mean() < 0.1 * strain[inner].mean()
    assert not np.allclose(u, _field(1)) and np.array_equal(u, _field(0))  # its own seeded generator


def test_a_varied_brain_changes_shape_but_keeps_the_record_volumes():
    tpl = load_template()
    records = sample_ad_records(6, np.random.default_rng(4)).to_dict("records")
    changes, moved = [], []
    for i, record in enumerate(records):
        plain, realised_plain = synthesize_scan(record, np.random.default_rng([4, i]))
        varied, realised_varied = synthesize_scan(
            record, np.random.default_rng([4, i]), AnatomyVariation(), np.random.default_rng([4, i, 1])
        )
        changes += [realised_varied[k] / realised_plain[k] - 1 for k in realised_plain]
        moved.append(np.abs(plain.astype(int) - varied).mean())
    # the shape changes (the mean voxel moves by several grey levels of ~200 for white matter) ...
    assert min(moved) > 3.0, moved
    # ... the volumes hardly do: well inside the spread of the realised volumes around
    # the record's with the template anatomy alone (hippocampi 5.6 %, ventricles 35 %)
    assert np.mean(np.abs(changes)) < 0.03 and np.max(np.abs(changes)) < 0.1, changes
    # and the brain's outline is not the template's any more
    grid = np.indices(tpl.shape, dtype=np.float32)
    u = shape_displacement(grid, tpl.shape, 2.0, AnatomyVariation(), np.random.default_rng(0))
    mask = _warp(tpl.regions["intracranial"], grid + u) > 0.5
    assert 0.01 < np.mean(mask != (tpl.regions["intracranial"] > 0.5)) < 0.2


def test_a_varied_cohort_keeps_records_pose_and_nuisance_and_says_so(tmp_path):
    plain = pd.read_csv(make_cohort("ad", 3, seed=8, out=tmp_path / "plain"))
    path = make_cohort("ad", 3, seed=8, out=tmp_path / "varied", anatomy=AnatomyVariation())
    varied = pd.read_csv(path)
    again = make_cohort("ad", 3, seed=8, out=tmp_path / "again", anatomy=AnatomyVariation(), jobs=2)
    # a shape that hardly varies: everything else (pose, contrast, bias, noise) must be the template cohort's
    faint = make_cohort("ad", 3, seed=8, out=tmp_path / "faint", anatomy=AnatomyVariation(amplitude_mm=1e-3))
    record_columns = [c for c in plain.columns if not c.startswith("REALISED_")]
    pd.testing.assert_frame_equal(plain[record_columns], varied[record_columns])
    assert set(varied.ANATOMY) == {"varied (2.5 mm RMS, 24 mm smooth)"}
    assert "shape: varied" in (path.parent / "README.txt").read_text()
    assert "shape: template" in (tmp_path / "plain" / "README.txt").read_text()
    for image in varied.IMAGE:
        a = np.asarray(nib.load(tmp_path / "plain" / image).dataobj).astype(int)
        b = np.asarray(nib.load(path.parent / image).dataobj).astype(int)
        c = np.asarray(nib.load(faint.parent / image).dataobj).astype(int)
        assert not np.array_equal(a, b)
        # rounding, and a few voxels on the brain mask's edge: the same noise, bias and pose
        assert np.mean(np.abs(a - c) > 1) < 1e-3 and np.abs(a - c).mean() < 0.05
        assert (path.parent / image).read_bytes() == (again.parent / image).read_bytes()


def _cli(text: str, *paths) -> int:
    return cli_main([*text.split(), *map(str, paths)])


def test_cli_makes_a_varied_cohort_and_refuses_a_bad_amplitude(tmp_path, capsys):
    made = _cli(
        "make-cohort --task brain_age --n 2 --seed 3 --anatomy varied --anatomy-mm 3 --quiet --jobs 1 --out",
        tmp_path / "a",
    )
    assert made == 0
    table = pd.read_csv(tmp_path / "a" / "participants.tsv", sep="\t")
    assert set(table.anatomy) == {"varied (3 mm RMS, 24 mm smooth)"}
    for bad in ("0", "-1", "nan", "7"):
        assert _cli(f"make-cohort --n 2 --anatomy varied --anatomy-mm {bad} --quiet --out", tmp_path / bad) == 2
        assert "--anatomy-mm must be in (0, 6] mm" in capsys.readouterr().err
    assert _cli("make-cohort --n 2 --anatomy-mm 3 --quiet --out", tmp_path / "plain") == 2
    assert "give it with --anatomy varied" in capsys.readouterr().err
    assert not (tmp_path / "plain").exists() or not any((tmp_path / "plain").iterdir())


def _script(name: str, *args, cwd):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / name
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def _shift(template, varied, out, *extra):
    """``scripts/anatomy_shift.py`` on two tables, its report into ``out``."""
    return _script("anatomy_shift.py", "--template", template, "--varied", varied, "--out", out, *extra, cwd=out.parent)


def _row(report: str, model: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith("|") and model in line)
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_anatomy_shift_report_pairs_subjects_and_refuses_unpaired_tables(tmp_path):
    from napari_hyperfusion.resources import models_dir

    template = make_cohort("ad", 6, seed=21, out=tmp_path / "t")
    varied = make_cohort("ad", 6, seed=21, out=tmp_path / "v", anatomy=AnatomyVariation())
    other = make_cohort("ad", 6, seed=22, out=tmp_path / "o", anatomy=AnatomyVariation())
    model = models_dir() / "ad_hyperfusion.safetensors"
    common = ("--model", model, "--bootstrap", "20")
    done = _shift(template, varied, tmp_path / "r", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    cells = _row((tmp_path / "r" / "report.md").read_text(), "ad_hyperfusion")
    assert cells[1] == "balanced accuracy" and cells[2] == "6"
    template_score, varied_score = float(cells[3].split()[0]), float(cells[4].split()[0])
    assert float(cells[5].split()[0]) == pytest.approx(varied_score - template_score, abs=1e-3)
    assert len(list((tmp_path / "r").glob("ad_hyperfusion__*.csv"))) == 2  # both tables predicted, kept
    for first, second, why in (
        (template, other, "do not hold the same subjects"),
        (template, template, "no ANATOMY column"),
        (varied, varied, "--template was made with --anatomy varied"),
    ):
        refused = _shift(first, second, tmp_path / "x", *common)
        assert refused.returncode == 2 and why in refused.stderr and "Traceback" not in refused.stderr
    risk = _shift(template, varied, tmp_path / "x", "--model", models_dir() / "risk_hyperfusion.safetensors")
    assert risk.returncode == 2 and "labels exist for AD and brain age" in risk.stderr, risk.stderr[-1000:]


def test_the_anatomy_shift_report_scores_brain_age_in_years(tmp_path):
    from napari_hyperfusion.resources import models_dir

    template = make_cohort("brain_age", 5, seed=23, out=tmp_path / "t")
    varied = make_cohort("brain_age", 5, seed=23, out=tmp_path / "v", anatomy=AnatomyVariation())
    model = models_dir() / "brain_age_hyperfusion.safetensors"
    done = _shift(template, varied, tmp_path / "r", "--model", model, "--bootstrap", "20")
    assert done.returncode == 0, done.stderr[-2000:]
    cells = _row((tmp_path / "r" / "report.md").read_text(), "brain_age_hyperfusion")
    assert cells[1] == "MAE (years)" and cells[2] == "5" and cells[6] == "-"
    predictions = [pd.read_csv(p) for p in sorted((tmp_path / "r").glob("*.csv"))]
    ages = pd.read_csv(template, sep="\t").age.to_numpy()
    maes = sorted(float(np.abs(p.predicted_brain_age - ages).mean()) for p in predictions)
    assert sorted([float(cells[3].split()[0]), float(cells[4].split()[0])]) == pytest.approx(maes, abs=1e-3)
    assert float(cells[7]) > 0  # the same brain of another shape gets another age


def test_the_robustness_check_says_which_file_it_scored(tmp_path):
    for args, why in (
        (("--models", "ad_hyperfusion", "--model-file", "brain_age_hyperfusion=x.safetensors"), "is not one of"),
        (("--models", "ad_hyperfusion", "--model-file", "ad_hyperfusion=missing.safetensors"), "no such file"),
        (("--models", "ad_hyperfusion", "--model-file", "ad_hyperfusion"), "takes NAME=PATH"),
    ):
        refused = _script("check_robustness.py", *args, cwd=tmp_path)
        assert refused.returncode == 2 and why in refused.stderr and "Traceback" not in refused.stderr
