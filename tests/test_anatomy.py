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
    record_columns = [c for c in plain.columns if not c.startswith("REALISED_")]
    pd.testing.assert_frame_equal(plain[record_columns], varied[record_columns])
    assert set(varied.ANATOMY) == {"varied (2.5 mm RMS, 24 mm smooth)"}
    assert "shape: varied" in (path.parent / "README.txt").read_text()
    assert "shape: template" in (tmp_path / "plain" / "README.txt").read_text()
    for image in varied.IMAGE:
        a = np.asarray(nib.load(tmp_path / "plain" / image).dataobj)
        b = np.asarray(nib.load(path.parent / image).dataobj)
        assert not np.array_equal(a, b)
        assert (path.parent / image).read_bytes() == (again.parent / image).read_bytes()


def test_cli_makes_a_varied_cohort_and_refuses_a_bad_amplitude(tmp_path, capsys):
    assert cli_main(["make-cohort", "--task", "brain_age", "--n", "2", "--seed", "3", "--out", str(tmp_path / "a"),
                     "--anatomy", "varied", "--anatomy-mm", "3", "--quiet", "--jobs", "1"]) == 0  # fmt: skip
    table = pd.read_csv(tmp_path / "a" / "participants.tsv", sep="\t")
    assert set(table.anatomy) == {"varied (3 mm RMS, 24 mm smooth)"}
    for bad in ("0", "-1", "nan", "7"):
        code = cli_main(["make-cohort", "--n", "2", "--out", str(tmp_path / f"b{bad}"), "--anatomy", "varied",
                         "--anatomy-mm", bad, "--quiet"])  # fmt: skip
        assert code == 2
        assert "--anatomy-mm must be in (0, 6] mm" in capsys.readouterr().err


def _script(*args, cwd):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "anatomy_shift.py"
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_the_anatomy_shift_report_pairs_subjects_and_refuses_unpaired_tables(tmp_path):
    from napari_hyperfusion.resources import models_dir

    template = make_cohort("ad", 6, seed=21, out=tmp_path / "t")
    varied = make_cohort("ad", 6, seed=21, out=tmp_path / "v", anatomy=AnatomyVariation())
    other = make_cohort("ad", 6, seed=22, out=tmp_path / "o", anatomy=AnatomyVariation())
    model = models_dir() / "ad_hyperfusion.safetensors"
    done = _script("--template", template, "--varied", varied, "--model", model, "--out", tmp_path / "r",
                   "--bootstrap", "20", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / "r" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| ad_hyperfusion"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "balanced accuracy" and cells[2] == "6"
    template_score, varied_score = float(cells[3].split()[0]), float(cells[4].split()[0])
    assert float(cells[5].split()[0]) == pytest.approx(varied_score - template_score, abs=1e-3)
    assert len(list((tmp_path / "r").glob("ad_hyperfusion__*.csv"))) == 2  # both tables predicted, kept
    for bad_varied, why in ((other, "do not hold the same subjects"), (template, "no ANATOMY column")):
        refused = _script("--template", template, "--varied", bad_varied, "--model", model, "--out",
                          tmp_path / "x", cwd=tmp_path)  # fmt: skip
        assert refused.returncode != 0 and why in refused.stderr and "Traceback" not in refused.stderr
