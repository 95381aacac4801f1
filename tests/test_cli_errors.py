"""Bad input to train / evaluate / predict: one clear message naming the
row and column, exit status 2, no traceback, nothing half-written."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_train_settings, write_toml

from napari_hyperfusion import cli


def _copy_table(cohort, tmp_path, edit) -> str:
    table = pd.read_csv(cohort)
    table["IMAGE"] = [str(cohort.parent / p) for p in table.IMAGE]
    edit(table, tmp_path)
    path = tmp_path / "edited.csv"
    table.to_csv(path, index=False)
    return str(path)


def _train(tmp_path, cohort, capsys, **extra) -> tuple[int, str]:
    config = tmp_path / "c.toml"
    settings = {**tiny_train_settings("ad"), "cohort": str(cohort), "out": str(tmp_path / "out"), "epochs": 1, **extra}
    write_toml(config, settings)
    code = cli.main(["train", str(config)])
    return code, capsys.readouterr().err


def _write_4d(table, tmp_path):
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20, 2), np.float32), np.eye(4)), str(path))
    table.loc[4, "IMAGE"] = str(path)


def _write_2d(table, tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), str(path))
    table.loc[4, "IMAGE"] = str(path)


def _write_garbage(table, tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    table.loc[4, "IMAGE"] = str(path)


def _write_nan_scan(table, tmp_path):
    data = np.ones((20, 20, 20), np.float32)
    data[3, 3, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    table.loc[4, "IMAGE"] = str(path)


CASES = {
    "missing column": (lambda t, p: t.pop("ABETA"), "lacks the column(s) ABETA"),
    "image does not exist": (lambda t, p: t.__setitem__("IMAGE", t.IMAGE.where(t.index != 4, "nope.nii.gz")),
                             "row 5 (SYN_S_0004), column IMAGE: .*nope.nii.gz does not exist"),
    "unreadable NIfTI": (_write_garbage, "row 5 (SYN_S_0004), column IMAGE: broken.nii.gz cannot be read as NIfTI"),
    "4D image": (_write_4d, "row 5 (SYN_S_0004), column IMAGE: four_d.nii.gz is 4D with 2 volumes"),
    "2D image": (_write_2d, "row 5 (SYN_S_0004), column IMAGE: slice.nii.gz has 2 dimensions"),
    "NaN voxels": (_write_nan_scan, "row 5 (SYN_S_0004), column IMAGE: nan.nii.gz contains 1 NaN"),
    "label outside classes": (lambda t, p: t.__setitem__("DX", t.DX.where(t.index != 2, "SMC")),
                              "row 3 (SYN_S_0002), column DX: label 'SMC' is not one of CN, MCI, AD"),
    "missing label": (lambda t, p: t.__setitem__("DX", t.DX.where(t.index != 2, np.nan)),
                      "row 3 (SYN_S_0002), column DX: label missing"),
    "NaN in a required field": (lambda t, p: t.__setitem__("AGE", t.AGE.where(t.index != 6, np.nan)),
                                "row 7 (SYN_S_0006), column AGE: Age is required"),
    "value out of range": (lambda t, p: t.__setitem__("ABETA", t.ABETA.where(t.index != 1, 99999)),
                           "row 2 (SYN_S_0001), column ABETA: CSF Abeta42 = 99999 is outside"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_train_bad_input(case, ad_cohort, tmp_path, capsys):
    edit, message = CASES[case]
    code, err = _train(tmp_path, _copy_table(ad_cohort, tmp_path, edit), capsys)
    assert code == 2
    assert err.startswith("hyperfusion train: error: ")
    assert re.search(message.replace("(", r"\(").replace(")", r"\)"), err), err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_train_bad_settings(ad_cohort, tmp_path, capsys):
    code, err = _train(tmp_path, ad_cohort, capsys, fusion="magic")
    assert code == 2 and "fusion 'magic' is not available" in err
    code, err = _train(tmp_path, tmp_path / "nowhere.csv", capsys)
    assert code == 2 and "no such cohort table" in err


def test_predict_bad_input(ad_cohort, tmp_path, capsys):
    not_a_model = tmp_path / "model.safetensors"
    not_a_model.write_bytes(b"\x80\x04 a pickle")
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(not_a_model), str(ad_cohort), "--out", str(out), "--quiet"]) == 2
    assert "never unpickles" in capsys.readouterr().err
    assert not out.exists()
