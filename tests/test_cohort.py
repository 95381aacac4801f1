"""The synthetic cohort: determinism, layout, the effects its images carry
(measured from the scans), tabular marginals against the ADNI table, the
CLI and the shipped sample subjects."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from volumetry import measure

from napari_hyperfusion.cli import main as cli_main
from napari_hyperfusion.data.schema import adni_schema
from napari_hyperfusion.data.template import load_template
from napari_hyperfusion.resources import sample_data_dir
from napari_hyperfusion.synth.cohort import make_cohort
from napari_hyperfusion.synth.records import AD_TABLE, CLASSES, MISSING, sample_ad_records


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_ids_match_images(tmp_path):
    a = make_cohort("ad", 4, seed=11, out=tmp_path / "a")
    b = make_cohort("ad", 4, seed=11, out=tmp_path / "b", jobs=2)
    c = make_cohort("ad", 4, seed=12, out=tmp_path / "c")
    assert _files(a.parent) == _files(b.parent)
    assert _files(a.parent) != _files(c.parent)
    table = pd.read_csv(a)
    assert list(table.columns[:12]) == [
        "PTID",
        "DX",
        "AGE",
        "PTGENDER",
        "PTEDUCAT",
        "APOE4",
        "ABETA",
        "TAU",
        "PTAU",
        "FDG",
        "AV45",
        "IMAGE",
    ]
    images = sorted(p.relative_to(a.parent).as_posix() for p in a.parent.rglob("*.nii.gz"))
    assert sorted(table.IMAGE) == images
    assert all(pid in path for pid, path in zip(table.PTID, table.IMAGE))
    assert table.SYNTHETIC.all() and "SYNTHETIC DATA" in (a.parent / "README.txt").read_text()
    img = nib.load(a.parent / table.IMAGE[0])
    assert img.shape == load_template().shape and img.get_data_dtype() == np.uint8
    assert b"SYNTHETIC" in img.header["descrip"].tobytes()
    adni_schema().encode_frame(table)  # every row is a valid record for the model's schema


def test_brain_age_cohort_is_bids_like(tmp_path):
    path = make_cohort("brain_age", 3, seed=0, out=tmp_path)
    table = pd.read_csv(path, sep="\t")
    assert list(table.columns[:3]) == ["participant_id", "age", "sex"]
    assert set(table.sex) <= {"F", "M"} and table.age.between(20, 90).all()
    for pid, image in zip(table.participant_id, table.image):
        assert (tmp_path / image).is_file() and image == f"{pid}/anat/{pid}_T1w.nii.gz"


@pytest.fixture(scope="module")
def measured_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    table = pd.read_csv(make_cohort("ad", 90, seed=5, out=out, jobs=2))
    volumes = pd.DataFrame([measure(out / image) for image in table.IMAGE])
    return pd.concat([table, volumes], axis=1)


def _fit(table, column):
    """Least squares ``column ~ 1 + MCI + AD + (age - 75) + male``."""
    x = np.column_stack(
        [
            np.ones(len(table)),
            table.DX.eq("MCI"),
            table.DX.eq("AD"),
            table.AGE - 75,
            table.PTGENDER.eq("Male"),
        ]
    ).astype(float)
    coef, *_ = np.linalg.lstsq(x, table[column].to_numpy(float), rcond=None)
    return dict(zip(["cn", "mci", "ad", "age", "male"], coef))


def test_images_carry_the_disease_and_age_effects_on_the_hippocampus(measured_cohort):
    fit = _fit(measured_cohort, "hippocampus_ratio")
    # table: AD hippocampi ~23 % smaller than CN at the same age; MCI in between
    ad_vs_cn = (fit["cn"] + fit["ad"]) / fit["cn"]
    assert 0.55 < ad_vs_cn < 0.92, fit
    assert fit["ad"] < fit["mci"] < 0, fit
    # table: about -0.8 % per year of age
    assert -0.03 < fit["age"] / fit["cn"] < 0, fit


def test_images_carry_the_disease_and_age_effects_on_the_ventricles(measured_cohort):
    fit = _fit(measured_cohort, "ventricles_permille")
    assert fit["ad"] > 0 and fit["age"] > 0, fit  # table: AD +35 % vs CN, +0.53 permille per year
    assert 1.05 < (fit["cn"] + fit["ad"]) / fit["cn"] < 2.0, fit


def test_images_carry_the_sex_difference_in_head_size(measured_cohort):
    by_sex = measured_cohort.groupby("PTGENDER").icv_ml.mean()
    assert 1.06 < by_sex["Male"] / by_sex["Female"] < 1.25  # table: men ~14 % larger
    assert np.corrcoef(measured_cohort.icv_ml, measured_cohort.ICV_L)[0, 1] > 0.7


@pytest.fixture(scope="module")
def records():
    return sample_ad_records(20000, np.random.default_rng(2024))


def test_class_shares_and_demographics_match_the_table(records):
    shares = records.DX.value_counts(normalize=True)
    for dx, target in zip(CLASSES, (0.349, 0.479, 0.172)):
        assert shares[dx] == pytest.approx(target, abs=0.02)
    groups = records.groupby("DX")
    for dx, age, educ, apoe, female in [
        ("CN", 72.2, 16.4, 0.34, 0.58),
        ("MCI", 72.7, 16.0, 0.60, 0.44),
        ("AD", 75.1, 15.3, 0.88, 0.46),
    ]:
        g = groups.get_group(dx)
        assert g.AGE.mean() == pytest.approx(age, abs=1.0)
        assert g.PTEDUCAT.mean() == pytest.approx(educ, abs=0.3)
        assert g.APOE4.mean() == pytest.approx(apoe, abs=0.05)
        assert g.PTGENDER.eq("Female").mean() == pytest.approx(female, abs=0.06)


def test_biomarker_means_and_spreads_match_the_table(records):
    for name, per_class in AD_TABLE.items():
        for dx, (mean, sd) in zip(CLASSES, per_class):
            values = records.loc[records.DX == dx, name].dropna()
            assert values.mean() == pytest.approx(mean, rel=0.08), (name, dx)
            # CSF ABETA is censored at 1700 pg/ml as in ADNI, which trims its spread
            assert values.std() == pytest.approx(sd, rel=0.25), (name, dx)
    cn = records[records.DX == "CN"]
    assert cn[["AGE", "TAU"]].dropna().corr().iloc[0, 1] == pytest.approx(0.28, abs=0.06)
    assert records[["APOE4", "ABETA"]].dropna().corr().iloc[0, 1] == pytest.approx(-0.35, abs=0.06)


def test_missing_rates_match_the_table_and_csf_is_missing_together(records):
    for dx_index, dx in enumerate(CLASSES):
        g = records[records.DX == dx]
        assert g.APOE4.isna().mean() == pytest.approx(MISSING["APOE4"][dx_index], abs=0.03)
        assert g.ABETA.isna().mean() == pytest.approx(MISSING["CSF"][dx_index], abs=0.03)
        assert g.FDG.isna().mean() == pytest.approx(MISSING["FDG"][dx_index], abs=0.03)
        assert g.AV45.isna().mean() == pytest.approx(MISSING["AV45"][dx_index], abs=0.03)
    csf = records[["ABETA", "TAU", "PTAU"]].isna()
    assert (csf.ABETA == csf.TAU).all() and (csf.ABETA == csf.PTAU).all()
    complete = records[["APOE4", "ABETA", "FDG", "AV45"]].notna().all(axis=1).mean()
    assert 0.25 < complete < 0.42  # "only about a third of subjects have every feature"


def test_cli_makes_a_cohort_and_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert (
        cli_main(
            ["make-cohort", "--task", "ad", "--n", "2", "--seed", "1", "--out", str(out), "--jobs", "1", "--quiet"]
        )
        == 0
    )
    assert "wrote 2 SYNTHETIC subjects" in capsys.readouterr().out
    assert cli_main(["make-cohort", "--n", "2", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "Traceback" not in err
    assert len(pd.read_csv(out / "cohort.csv")) == 2


def test_sample_subjects_ship_with_valid_records_and_the_interesting_pair():
    folder = sample_data_dir()
    table = pd.read_csv(folder / "subjects.csv")
    adni_schema().encode_frame(table)
    assert table.SYNTHETIC.all() and set(table.PTGENDER) == {"Female", "Male"}
    for image in table.IMAGE:
        assert (folder / image).is_file()
    young_ad = table.set_index("PTID").loc["SYN_DEMO_01"]
    old_cn = table.set_index("PTID").loc["SYN_DEMO_02"]
    assert young_ad.DX == "AD" and old_cn.DX == "CN" and old_cn.AGE - young_ad.AGE >= 20
    hip = lambda row: (row.REALISED_hippocampus_L_ML + row.REALISED_hippocampus_R_ML) / row.ICV_L  # noqa: E731
    assert hip(young_ad) == pytest.approx(hip(old_cn), rel=0.1)
    participants = pd.read_csv(folder / "brain_age" / "participants.tsv", sep="\t")
    assert (folder / "brain_age" / participants.image[0]).is_file()
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total < 5 * 1024**2  # small enough for git


def test_template_is_shipped_with_its_notice_and_nilearn_is_not_needed():
    folder = sample_data_dir() / "template"
    assert "McGill" in (folder / "LICENSE_MNI152.txt").read_text()
    code = (
        "import sys; from napari_hyperfusion.data.template import load_template; t = load_template(); "
        "assert 'nilearn' not in sys.modules; print(round(t.region_volume_ml('hippocampus_L'), 1))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 5.0 < float(out) < 10.0  # AAL3's left hippocampus in MNI space, ml
