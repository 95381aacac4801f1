"""DICOM in napari: a series opens through the plugin's reader where its
NIfTI does and predicts the same; a folder of several series offers each in
the scan picker; and no identifying header value reaches anything the tool
shows or writes over a whole workflow (open, prepare, predict, explain,
what-if export, slide).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import PLUGIN, dock_panel
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QTextEdit

from napari_hyperfusion.cli import main
from napari_hyperfusion.data.dicom import find_series
from napari_hyperfusion.data.scan_file import open_nifti, read_canonical
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import subject_record
from napari_hyperfusion.synth.dicom_series import SYNTHETIC_IDENTITY, write_series

AD_MODEL = models_dir() / "ad_hyperfusion.safetensors"


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory) -> Path:
    """SYN_DEMO_01 as an axial DICOM series carrying made-up identifiers."""
    data, affine = read_canonical(open_nifti(sample_data_dir() / "SYN_DEMO_01.nii.gz"), keep_integers=True)
    folder = tmp_path_factory.mktemp("dicom") / "t1_series"
    write_series(data, affine, folder, acquisition="axial", seed=7)
    return folder


def _predict(panel, qtbot):
    panel.predict()
    qtbot.waitUntil(lambda: not panel.busy, timeout=60_000)


def test_a_series_opens_in_napari_and_predicts_as_its_nifti(make_napari_viewer, qtbot, errors, series_folder):
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    assert panel.open_model(AD_MODEL)
    _predict(panel, qtbot)
    from_nifti = panel.last_result
    viewer = panel.viewer
    nifti_layer = viewer.layers[0]
    (layer,) = viewer.open(str(series_folder), plugin=PLUGIN)
    assert layer.name == f"T1 MPRAGE SYNTHETIC · {find_series(series_folder)[0].key}"
    np.testing.assert_array_equal(np.asarray(layer.data, np.float32), np.asarray(nifti_layer.data, np.float32))
    for ijk in [(0, 0, 0), (40, 50, 30), (79, 95, 79)]:  # the same voxel on the same millimetre
        np.testing.assert_allclose(layer.data_to_world(ijk), nifti_layer.data_to_world(ijk), atol=1e-5)
    assert panel.patient.current_layer() is layer  # the newly opened scan is chosen
    panel.patient.set_record(subject_record("SYN_DEMO_01"))
    _predict(panel, qtbot)
    assert not errors
    result = panel.last_result
    assert result.extra["case"] != from_nifti.extra["case"]  # another scan: another case
    np.testing.assert_allclose(result.values, from_nifti.values, atol=1e-5)
    assert layer.name in panel.result_view.label.text()


def test_a_folder_of_several_series_offers_each_in_the_scan_picker(make_napari_viewer, tmp_path, errors):
    data, affine = read_canonical(open_nifti(sample_data_dir() / "SYN_DEMO_02.nii.gz"), keep_integers=True)
    write_series(data, affine, tmp_path / "study" / "1", acquisition="axial", description="T1 AX", seed=1)
    write_series(data, affine, tmp_path / "study" / "2", acquisition="sagittal", description="T1 SAG", seed=2)
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    layers = panel.viewer.open(str(tmp_path / "study"), plugin=PLUGIN)
    assert sorted(layer.name.split(" · ")[0] for layer in layers) == ["T1 AX", "T1 SAG"]
    combo = panel.patient.layer_combo
    tips = {combo.itemText(i): combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())}
    by_name = {layer.name.split(" · ")[0]: layer.name for layer in layers}
    assert "80 axial slices" in tips[by_name["T1 AX"]] and "80 sagittal slices" in tips[by_name["T1 SAG"]]
    assert "1.9105 x 1.9105 x 1.9105 mm" in tips[by_name["T1 AX"]]


# -- no identifier leaks ---------------------------------------------------------------------
def _identifiers(folder: Path) -> list[str]:
    """Every identifying value of the series' headers, as a user could find it written."""
    values = set()
    for path in sorted(folder.iterdir())[:3]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID}
    for keyword, value in SYNTHETIC_IDENTITY.items():
        if keyword in ("PatientSex",):  # one letter: found in any text
            continue
        values.add(value)
        values |= {part for part in value.split("^") if len(part) > 3}
        if keyword.endswith("Date"):
            values.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    return sorted(values)


def _text_of(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("latin-1")


def test_no_identifier_reaches_anything_shown_or_written(
    make_napari_viewer, qtbot, errors, series_folder, tmp_path, monkeypatch, capsys, recwarn
):
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    drawn: list[str] = []  # every text drawn into a saved figure (a PDF's text is compressed)
    save = Figure.savefig

    def savefig(self, *args, **kwargs):
        drawn.extend(t.get_text() for t in self.findobj(Text))
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "outputs"
    out.mkdir()
    # the panel: open, predict, explain, what-if, export, slide
    panel = dock_panel(make_napari_viewer(), "SYN_DEMO_01")
    assert panel.open_model(AD_MODEL)
    (layer,) = panel.viewer.open(str(series_folder), plugin=PLUGIN)
    panel.patient.set_record(subject_record("SYN_DEMO_01"))
    _predict(panel, qtbot)
    panel.explainer.method_combo.setCurrentIndex(panel.explainer.method_combo.findData("saliency"))
    panel.explain()
    qtbot.waitUntil(lambda: not panel.busy, timeout=120_000)
    panel.whatif.set_whatif_value("AGE", 80)
    panel.whatif.update_whatif()
    panel.whatif.export_exploration(out / "whatif.csv")
    panel.whatif.save_summary(out / "slide.pdf")
    panel.whatif.save_summary(out / "slide.png")
    overlays = [o for o in panel.viewer.layers if "hyperfusion_overlay" in o.metadata]
    assert overlays
    overlays[0].save(str(out / "saliency.nii.gz"), plugin=PLUGIN)
    assert not errors
    shown = [w.text() for w in panel.findChildren(QLabel)] + [w.toPlainText() for w in panel.findChildren(QTextEdit)]
    shown += [layer.name for layer in panel.viewer.layers]
    shown += [json.dumps(layer.metadata, default=str) for layer in panel.viewer.layers]
    shown += [str(n.message) for n in notification_manager.records]
    # the command line: prepare (NIfTI, transform, QC JSON) and predict (CSV)
    assert main(["prepare", str(series_folder), "--out", str(out / "prepared"), "--quiet"]) == 0
    row = pd.read_csv(sample_data_dir() / "subjects.csv").iloc[[0]].assign(IMAGE=str(series_folder))
    row.to_csv(tmp_path / "cohort.csv", index=False)
    assert (
        main(["predict", str(AD_MODEL), str(tmp_path / "cohort.csv"), "--out", str(out / "pred.csv"), "--quiet"]) == 0
    )
    assert main(["list-series", str(series_folder)]) == 0
    printed = capsys.readouterr()
    assert "T1 MPRAGE SYNTHETIC" in printed.out  # what the terminal showed, searched below
    written = {str(p.relative_to(out)): _text_of(p) for p in sorted(out.rglob("*")) if p.is_file()}
    assert {"whatif.csv", "slide.pdf", "slide.png", "pred.csv"} <= set(written)
    assert any(name.endswith("_mni.nii.gz") for name in written) and any(name.endswith(".json") for name in written)
    assert nib.load(next(out.rglob("*_mni.nii.gz"))).shape  # a real NIfTI, scanned decompressed
    assert drawn and any("SYN_DEMO" in t or "T1 MPRAGE" in t for t in drawn)  # the slide names its scan
    everything = {
        **written,
        "panel": "\n".join(shown),
        "slide text": "\n".join(drawn),
        "terminal": printed.out + printed.err,
        "warnings": "\n".join(str(w.message) for w in recwarn),
    }
    leaks = [
        (value, where) for value in _identifiers(series_folder) for where, text in everything.items() if value in text
    ]
    assert not leaks, leaks


def test_every_synthetic_acquisition_lands_in_napari_where_its_nifti_does(make_napari_viewer, tmp_path):
    from test_dicom import VARIANTS

    viewer = make_napari_viewer()
    data, affine = read_canonical(open_nifti(sample_data_dir() / "SYN_DEMO_01.nii.gz"), keep_integers=True)
    for i, (name, (make, acquisition, enhanced)) in enumerate(VARIANTS.items()):
        values, placed = make(data, affine)
        nib.save(nib.Nifti1Image(values, placed), tmp_path / f"{name}.nii.gz")
        write_series(values, placed, tmp_path / name, acquisition=acquisition, enhanced=enhanced, seed=i)
        (from_nifti,) = viewer.open(str(tmp_path / f"{name}.nii.gz"), plugin=PLUGIN)
        (from_dicom,) = viewer.open(str(tmp_path / name), plugin=PLUGIN)
        np.testing.assert_array_equal(np.asarray(from_dicom.data), np.asarray(from_nifti.data))
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in from_nifti.data.shape])).reshape(3, -1).T
        for ijk in corners:
            np.testing.assert_allclose(from_dicom.data_to_world(ijk), from_nifti.data_to_world(ijk), atol=1e-5)
