"""DICOM series as scans: every synthetic acquisition opens where its NIfTI
does, with the same values and the same prediction; every bad series is
refused with its reason; pydicom's own MR files open or are refused clearly.

The series are written here from the shipped synthetic subjects
(:mod:`napari_hyperfusion.synth.dicom_series`): axial, sagittal, coronal,
oblique, 1 x 1.2 x 1 mm scaled int16, enhanced multi-frame, shuffled file
names and Instance Numbers, a folder of two series and a DICOMDIR.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from napari_hyperfusion.cli import main
from napari_hyperfusion.data import dicom
from napari_hyperfusion.data.dicom import SeriesChoiceError, find_series, open_dicom, series_key
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.data.scan_file import open_nifti, read_canonical
from napari_hyperfusion.errors import ImageError
from napari_hyperfusion.io import dicom as dicom_reader
from napari_hyperfusion.io.nifti import read_nifti
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.synth.dicom_series import SYNTHETIC_IDENTITY, quantize, write_series

AD_MODEL = models_dir() / "ad_hyperfusion.safetensors"
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"


def _sample(subject: str = "SYN_DEMO_01") -> tuple[np.ndarray, np.ndarray]:
    return read_canonical(open_nifti(sample_data_dir() / f"{subject}.nii.gz"), keep_integers=True)


def _resampled(data: np.ndarray, affine: np.ndarray, voxel: tuple[float, float, float]):
    """The volume on a grid of ``voxel`` mm over the same field of view."""
    old = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    zoom = old / np.asarray(voxel)
    out = ndimage.zoom(data.astype(np.float32), zoom, order=1)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] / old * np.asarray(voxel)
    return out, new


# name -> (how the NIfTI is made from SYN_DEMO_01, acquisition, enhanced)
def _plain(data, affine):
    return data, affine


def _fine_scaled(data, affine):  # 1 x 1.2 x 1 mm, float values stored as scaled int16
    values, new = _resampled(data, affine, (1.0, 1.2, 1.0))
    return quantize(values * 0.731)[0], new


def _offset_scaled(data, affine):  # a Rescale Intercept that is not zero
    return quantize(data * 1.37 + 12.5)[0], affine


def _oblique(data, affine):
    """The brain where it was, seen through a voxel grid turned 15 degrees
    about x and 10 about z around the volume's centre (an oblique acquisition)."""
    centre = affine @ np.r_[(np.array(data.shape) - 1) / 2, 1.0]
    turn = np.eye(4)
    turn[:3, :3] = Rotation.from_euler("xz", [15, 10], degrees=True).as_matrix()
    turn[:3, 3] = centre[:3] - turn[:3, :3] @ centre[:3]
    new = turn @ affine
    ijk = np.indices(data.shape).reshape(3, -1)
    source = (np.linalg.inv(affine) @ new)[:3] @ np.vstack([ijk, np.ones(ijk.shape[1])])
    values = ndimage.map_coordinates(data.astype(np.float32), source, order=1).reshape(data.shape)
    return quantize(values)[0], new


VARIANTS = {
    "axial": (_plain, "axial", False),
    "sagittal_1x1.2x1_scaled": (_fine_scaled, "sagittal", False),
    "coronal_oblique": (_oblique, "coronal", False),
    "axial_oblique_enhanced": (_oblique, "axial", True),
    "sagittal_enhanced_scaled": (_fine_scaled, "sagittal", True),
    "axial_intercept": (_offset_scaled, "axial", False),
}
PREDICTED = [name for name in VARIANTS if name != "axial_intercept"]  # its background is not zero: refused alike


@pytest.fixture(scope="module")
def series_pairs(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (NIfTI file, DICOM folder) holding the same voxels at the same place."""
    root = tmp_path_factory.mktemp("dicom")
    data, affine = _sample()
    out = {}
    for i, (name, (make, acquisition, enhanced)) in enumerate(VARIANTS.items()):
        values, placed = make(data, affine)
        nifti = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(values, placed), nifti)
        folder = root / name
        write_series(values, placed, folder, acquisition=acquisition, enhanced=enhanced, seed=i)
        out[name] = (nifti, folder)
    return out


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_series_opens_where_its_nifti_does_with_the_same_values(series_pairs, name):
    nifti, folder = series_pairs[name]
    from_dicom, from_nifti = load_scan(folder), load_scan(nifti)
    assert from_dicom.data.shape == from_nifti.data.shape
    np.testing.assert_array_equal(from_dicom.data, from_nifti.data)
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-6)
    # napari's placement: the same voxel lands on the same millimetre
    (d_data, d_kwargs, _), (n_data, n_kwargs, _) = dicom_reader.read_dicom(folder)[0], read_nifti(nifti)[0]
    np.testing.assert_array_equal(np.asarray(d_data, np.float32), np.asarray(n_data, np.float32))
    for key in ("scale", "translate", "affine"):
        assert (key in d_kwargs) == (key in n_kwargs)
        if key in n_kwargs:
            np.testing.assert_allclose(np.asarray(d_kwargs[key]), np.asarray(n_kwargs[key]), atol=1e-6)


def test_slices_are_ordered_in_space_not_by_name_or_instance_number(series_pairs):
    _, folder = series_pairs["axial"]
    frames = find_series(folder)[0].frames
    by_name = [f.path.name for f in frames]
    numbers = [int(pydicom.dcmread(f.path, stop_before_pixels=True).InstanceNumber) for f in frames]
    z = [f.position[2] for f in frames]
    # the writer shuffled both: neither the names nor the numbers follow the slices' positions
    assert by_name == sorted(by_name) and np.corrcoef(np.argsort(by_name), z)[0, 1] < 0.9
    assert abs(np.corrcoef(numbers, z)[0, 1]) < 0.9


def test_every_series_predicts_as_its_nifti_through_the_cli(series_pairs, tmp_path):
    rows = pd.read_csv(sample_data_dir() / "subjects.csv").iloc[[0]]
    table = []
    for name, (nifti, folder) in series_pairs.items():
        if name not in PREDICTED:
            continue
        for kind, image in (("nifti", nifti), ("dicom", folder)):
            row = rows.copy()
            row["PTID"], row["IMAGE"] = f"{name}_{kind}", str(image)
            table.append(row)
    cohort = tmp_path / "cohort.csv"
    pd.concat(table).to_csv(cohort, index=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(AD_MODEL), str(cohort), "--out", str(out), "--quiet"]) == 0
    pred = pd.read_csv(out).set_index("PTID")
    probability = [c for c in pred.columns if c.startswith("prob_")] + ["qc_ncc"]
    assert len(probability) == 4
    for name in PREDICTED:
        dicom_row, nifti_row = pred.loc[f"{name}_dicom"], pred.loc[f"{name}_nifti"]
        np.testing.assert_allclose(
            dicom_row[probability].to_numpy(float), nifti_row[probability].to_numpy(float), atol=1e-5
        )
        assert dicom_row["image_typicality_pct"] == pytest.approx(nifti_row["image_typicality_pct"], abs=0.01)
        assert dicom_row["predicted"] == nifti_row["predicted"]
        assert pred.loc[f"{name}_dicom", "input_qc"] == pred.loc[f"{name}_nifti", "input_qc"]


# -- several series, a single file, a DICOMDIR ---------------------------------------------
@pytest.fixture(scope="module")
def two_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    data, affine = _sample()
    write_series(data, affine, folder / "a", acquisition="axial", description="T1 AXIAL SYNTHETIC", seed=10)
    write_series(data, affine, folder / "b", acquisition="sagittal", description="T1 SAG SYNTHETIC", seed=11)
    return folder


def test_a_folder_of_several_series_is_refused_with_the_list_unless_one_is_named(two_series, capsys):
    found = find_series(two_series)
    assert {s.description for s in found} == {"T1 AXIAL SYNTHETIC", "T1 SAG SYNTHETIC"}
    with pytest.raises(SeriesChoiceError) as refused:
        load_scan(two_series)
    message = str(refused.value)
    for s in found:
        assert (
            f"{s.key}  {s.description}  80 slice(s)" in message or f"{s.key}  {s.description}  96 slice(s)" in message
        )
        assert s.uid not in message  # UIDs identify a study: the list names series by a hash
    assert "axial" in message and "sagittal" in message and "--series" in message
    sagittal = next(s for s in found if s.description == "T1 SAG SYNTHETIC")
    chosen = load_scan(two_series, series=sagittal.key)
    np.testing.assert_array_equal(chosen.data, load_scan(two_series / "b").data)
    assert load_scan(two_series, series=sagittal.uid).data.shape == chosen.data.shape
    with pytest.raises(SeriesChoiceError, match="holds no series 'ffffff'"):
        load_scan(two_series, series="ffffff")
    # the CLI: a message and exit status 2, the list included
    assert main(["prepare", str(two_series), "--out", str(two_series.parent / "prep"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert sagittal.key in err and "T1 SAG SYNTHETIC" in err and sagittal.uid not in err


def test_a_cohort_row_naming_a_folder_of_several_series_is_refused_with_the_list(two_series, tmp_path, capsys):
    row = pd.read_csv(sample_data_dir() / "subjects.csv").iloc[[0]].assign(IMAGE=str(two_series))
    row.to_csv(tmp_path / "cohort.csv", index=False)
    assert main(["predict", str(AD_MODEL), str(tmp_path / "cohort.csv"), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "row 1 (SYN_DEMO_01), column IMAGE" in err and "holds 2 DICOM series" in err
    assert "name the folder of that series alone" in err and not (tmp_path / "p.csv").exists()


def test_napari_opens_the_readable_series_of_a_study_and_says_why_it_skips_the_others(tmp_path):
    data, affine = _sample()
    write_series(data, affine, tmp_path / "study" / "t1", acquisition="axial", seed=1)
    write_series(data[:, :, :10], affine, tmp_path / "study" / "scout", description="LOC", seed=2)
    with pytest.warns(UserWarning, match=r"opened 1 series; skipped 1: LOC \[\w+\] has 10 slice\(s\)"):
        layers = dicom_reader.read_dicom(str(tmp_path / "study"))
    assert [kwargs["name"].split(" · ")[0] for _, kwargs, _ in layers] == ["T1 MPRAGE SYNTHETIC"]


def test_a_single_file_opens_its_whole_series(series_pairs):
    _, folder = series_pairs["axial"]
    one_file = sorted(folder.iterdir())[17]
    np.testing.assert_array_equal(load_scan(one_file).data, load_scan(folder).data)
    assert dicom_reader.get_reader(str(one_file)) is dicom_reader.read_dicom


def test_a_dicomdir_opens_the_series_it_lists(series_pairs, tmp_path):
    from pydicom.fileset import FileSet

    _, folder = series_pairs["axial"]
    fileset = FileSet()
    for path in sorted(folder.iterdir()):
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp_path / "media")
    dicomdir = tmp_path / "media" / "DICOMDIR"
    assert dicomdir.is_file()
    np.testing.assert_array_equal(load_scan(dicomdir).data, load_scan(folder).data)
    assert dicom_reader.get_reader(str(dicomdir)) is dicom_reader.read_dicom


def test_the_napari_reader_claims_dicom_and_nothing_else(series_pairs, tmp_path):
    nifti, folder = series_pairs["axial"]
    assert dicom_reader.get_reader(str(folder)) is dicom_reader.read_dicom
    assert dicom_reader.get_reader(str(nifti)) is None
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert dicom_reader.get_reader(str(tmp_path / "notes")) is None


# -- refusals: one bad series each -------------------------------------------------------
@pytest.fixture
def good_series(tmp_path) -> Path:
    data, affine = _sample("SYN_DEMO_02")
    write_series(data, affine, tmp_path / "series", acquisition="axial", seed=5)
    return tmp_path / "series"


def _by_position(folder: Path) -> list[Path]:
    """The files from the lowest slice to the highest."""
    files = sorted(folder.iterdir())
    return sorted(files, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))


def _edit(path: Path, **values) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path)


def _missing(folder):
    os.remove(_by_position(folder)[40])


def _uneven(folder):
    path = _by_position(folder)[40]
    position = [float(v) for v in pydicom.dcmread(path).ImagePositionPatient]
    _edit(path, ImagePositionPatient=[position[0], position[1], position[2] + 0.7])


def _mixed_orientation(folder):
    _edit(_by_position(folder)[10], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])


def _mixed_size(folder):
    path = _by_position(folder)[10]
    ds = pydicom.dcmread(path)
    ds.PixelData = np.zeros((40, 40), "<i2").tobytes()
    ds.Rows = ds.Columns = 40
    ds.save_as(path)


def _tilted(folder):  # each slice 0.3 mm further towards the patient's back: gantry tilt of about 9 degrees
    for k, path in enumerate(_by_position(folder)):
        x, y, z = (float(v) for v in pydicom.dcmread(path).ImagePositionPatient)
        _edit(path, ImagePositionPatient=[x, y + 0.3 * k, z])


def _jpeg_ls(folder):  # the header of a JPEG-LS series (its refusal comes before any pixel is decoded)
    from pydicom.encaps import encapsulate

    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLSLossless
        ds.PixelData = encapsulate([ds.PixelData])
        ds.save_as(path)


def _ct(folder):
    for path in folder.iterdir():
        _edit(path, Modality="CT")


def _localiser(folder):
    for path in folder.iterdir():
        _edit(path, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])


def _three_slices(folder):
    for path in _by_position(folder)[3:]:
        os.remove(path)


def _truncated(folder):
    path = _by_position(folder)[20]
    path.write_bytes(path.read_bytes()[:-1000])


def _two_echoes(folder):  # a second copy of every slice at the same positions (another echo)
    for path in list(folder.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"{path.name}_echo2")


def _thick_slices(folder):
    for path in _by_position(folder)[1::2]:
        os.remove(path)
    for path in _by_position(folder)[1::2]:
        os.remove(path)


def _mixed_spacing(folder):
    _edit(_by_position(folder)[10], PixelSpacing=[1.5, 1.5])


def _inverted(folder):
    for path in folder.iterdir():
        _edit(path, PhotometricInterpretation="MONOCHROME1")


def _one_word_localiser(folder):  # a single-valued Image Type is one word, not its letters
    for path in folder.iterdir():
        _edit(path, ImageType="LOCALIZER")


def _zero_slope(folder):
    _edit(_by_position(folder)[5], RescaleSlope="0")


def _broken_deflate(folder):  # a deflated file whose compressed stream is damaged
    path = _by_position(folder)[12]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path)
    raw = bytearray(path.read_bytes())
    middle = max(len(raw) // 2, 600)  # past the file meta header, inside the compressed stream
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))


def _no_dicom(folder):
    shutil.rmtree(folder)
    folder.mkdir()
    (folder / "README.txt").write_text("not a scan")
    (folder / "image.png").write_bytes(b"\x89PNG....")


def _colour(folder):
    for path in folder.iterdir():
        _edit(path, PhotometricInterpretation="RGB", SamplesPerPixel=3)


REFUSALS = {
    "missing slice": (_missing, r"missing 1 slice\(s\) between .* mm along the slice normal \(after slice 40 of"),
    "uneven spacing": (_uneven, "uneven slice spacing"),
    "mixed orientations": (_mixed_orientation, "mixes 2 slice orientations"),
    "mixed sizes": (_mixed_size, r"mixes slice sizes: 40x40 \(1\), 96x80 \(79\)"),
    "gantry tilt": (_tilted, "gantry tilt of about 8.9 degrees"),
    "compressed": (_jpeg_ls, r"JPEG-LS Lossless.*no installed decoder.*pip install pylibjpeg"),
    "not MR": (_ct, r"is a CT series; the models read magnetic resonance"),
    "localiser": (_localiser, r"is a localiser \(Image Type ORIGINAL/PRIMARY/LOCALIZER\)"),
    "2D": (_three_slices, r"has 3 slice\(s\): a localiser or a 2D image"),
    "truncated": (_truncated, r"slice file IM\d+ cannot be decoded"),
    "several volumes": (_two_echoes, "160 slices share positions"),
    "thick slices": (_thick_slices, r"slices are 7.6 mm apart: a 2D acquisition"),
    "no DICOM": (_no_dicom, r"holds no DICOM file \(2 file\(s\) looked at"),
    "colour": (_colour, r"holds RGB colour pixels"),
    "mixed spacings": (_mixed_spacing, r"mixes pixel spacings \(1.9105 x 1.9105 mm, 1.5 x 1.5 mm\)"),
    "inverted grey": (_inverted, r"inverted grey values \(MONOCHROME1\)"),
    "one-word localiser": (_one_word_localiser, r"is a localiser \(Image Type LOCALIZER\)"),
    "zero slope": (_zero_slope, r"slice 6 of 80 has Rescale Slope 0"),
    "damaged deflate": (_broken_deflate, r"IM\d+ cannot be decoded|truncated or damaged: IM\d+"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_bad_series_is_refused_with_its_reason(good_series, case):
    damage, message = REFUSALS[case]
    damage(good_series)
    with pytest.raises(ImageError, match=message):
        load_scan(good_series)
    with pytest.raises(ImageError, match=message):  # napari's reader says the same
        dicom_reader.read_dicom(str(good_series))


def test_the_cli_refuses_a_bad_series_with_a_message(good_series, tmp_path, capsys):
    _missing(good_series)
    assert main(["prepare", str(good_series), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing 1 slice(s)" in err and "Traceback" not in err


def test_a_hundred_thousand_files_are_refused_before_any_is_read(tmp_path, monkeypatch):
    folder = tmp_path / "archive"
    for part in range(10):
        sub = folder / f"part{part}"
        sub.mkdir(parents=True)
        for i in range(10_000):
            (sub / f"{i}.dcm").touch()
    (folder / "one_more.dcm").touch()

    def never(path):
        raise AssertionError("a header was read before the folder was refused")

    monkeypatch.setattr(dicom.discover, "is_dicom_file", never)
    monkeypatch.setattr(dicom.discover, "read_header", never)
    with pytest.raises(ImageError, match=r"holds more than 20,000 files; that is a study archive"):
        find_series(folder)


# -- pydicom's own MR files --------------------------------------------------------------
MR_FILES = sorted(p.name for p in PYDICOM_FILES.glob("MR*.dcm"))


@pytest.mark.parametrize("name", MR_FILES)
def test_pydicoms_own_mr_files_open_or_are_refused_clearly(name, tmp_path):
    """Each on its own (the package folder holds the same slice in several
    encodings, which would otherwise share one series)."""
    shutil.copy(PYDICOM_FILES / name, tmp_path / name)
    with pytest.raises(ImageError) as refused:  # each is one 64x64 slice, or a damaged or compressed one
        load_scan(tmp_path / name)
    message = str(refused.value)
    assert "has 1 slice(s): a localiser or a 2D image" in message or "no installed decoder" in message, message
    assert "Traceback" not in message


def test_pydicoms_dicomdir_examples_are_refused_clearly():
    with pytest.raises(ImageError, match="is a CT series|is a CR series|slice"):
        dicom_reader.read_dicom(str(PYDICOM_FILES / "dicomdirtests" / "DICOMDIR"))


def test_a_series_key_is_a_hash_not_the_uid():
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert series_key(uid) == series_key(uid) and len(series_key(uid)) == 6 and series_key(uid) not in uid


def test_layers_carry_no_identifier(series_pairs):
    _, folder = series_pairs["axial"]
    data, kwargs, _ = dicom_reader.read_dicom(folder)[0]
    text = json.dumps(kwargs, default=str)
    series = find_series(folder)[0]
    assert kwargs["name"] == f"T1 MPRAGE SYNTHETIC · {series.key}"
    for value in [*SYNTHETIC_IDENTITY.values(), series.uid]:
        if len(value) > 1:
            assert value not in text, value
    assert kwargs["metadata"]["dicom"]["slices"] == 80 and kwargs["metadata"]["dicom"]["orientation"] == "axial"


def test_open_dicom_reports_progress(series_pairs):
    _, folder = series_pairs["axial"]
    seen = []
    open_dicom(folder, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (80, 80) and len(seen) == 80


# -- damaged headers never crash ---------------------------------------------------------------
FUZZ_TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "RescaleSlope",
    "RescaleIntercept", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "PixelRepresentation",
    "SeriesInstanceUID", "SeriesNumber", "Modality", "ImageType", "SeriesDescription", "MagneticFieldStrength",
    "PixelData", "NumberOfFrames", "SOPClassUID",
]  # fmt: skip
FUZZ_VALUES = ["", "abc", "nan", "-1", "0", "1e400", "1\\2", "1\\2\\3\\4\\5\\6\\7", "\x00\x1b[31m", "9" * 40]


@pytest.fixture(scope="module")
def small_series(tmp_path_factory) -> Path:
    data, affine = _sample()
    folder = tmp_path_factory.mktemp("small") / "series"
    write_series(data[20:44, 30:54, 20:40], affine, folder, acquisition="axial", seed=3)
    return folder


@pytest.mark.parametrize("seed", range(int(os.environ.get("DICOM_FUZZ_SEEDS", "60"))))
def test_a_damaged_header_gives_a_message_never_a_crash(small_series, tmp_path, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path / "series"
    shutil.copytree(small_series, folder)
    victims = rng.choice(sorted(folder.iterdir()), size=int(rng.integers(1, 4)), replace=False)
    tag, value = FUZZ_TAGS[seed % len(FUZZ_TAGS)], FUZZ_VALUES[int(rng.integers(len(FUZZ_VALUES)))]
    with pydicom.config.disable_value_validation():
        for path in victims:
            ds = pydicom.dcmread(path)
            if seed % 3 == 0 and tag in ds:
                del ds[tag]
            elif tag == "PixelData":
                ds.PixelData = value.encode("latin-1")
            else:
                element = pydicom.DataElement(pydicom.datadict.tag_for_keyword(tag), "LO", value)
                ds[element.tag] = element  # any text under any tag: what a broken writer leaves
            ds.save_as(path)
    try:
        load_scan(folder)
    except ImageError as err:
        assert str(err) and "\x1b" not in str(err) and "\x00" not in str(err)


@pytest.mark.parametrize("seed", range(int(os.environ.get("DICOM_FUZZ_SEEDS", "60")) // 2))
def test_a_damaged_enhanced_file_gives_a_message_never_a_crash(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data, affine = _sample()
    (path,) = write_series(data[20:44, 30:54, 20:40], affine, tmp_path / "e", enhanced=True, seed=seed)
    ds = pydicom.dcmread(path)
    per_frame, shared = ds.PerFrameFunctionalGroupsSequence, ds.SharedFunctionalGroupsSequence[0]
    damage = seed % 6
    with pydicom.config.disable_value_validation():
        if damage == 0:  # a frame without its position
            del per_frame[int(rng.integers(len(per_frame)))].PlanePositionSequence
        elif damage == 1:  # fewer groups than frames
            del per_frame[int(rng.integers(len(per_frame)))]
        elif damage == 2:
            del shared.PixelMeasuresSequence
        elif damage == 3:  # nonsense in a nested position
            item = per_frame[int(rng.integers(len(per_frame)))].PlanePositionSequence[0]
            item["ImagePositionPatient"] = pydicom.DataElement(0x00200032, "LO", FUZZ_VALUES[seed % 10])
        elif damage == 4:
            ds.NumberOfFrames = int(rng.integers(0, 10**9))
        else:  # the pixels cut short
            ds.PixelData = ds.PixelData[: int(rng.integers(len(ds.PixelData)))]
        ds.save_as(path)
    try:
        load_scan(path)
    except ImageError as err:
        assert str(err) and "\x1b" not in str(err)


def test_positions_rounded_to_two_decimals_still_read(series_pairs, tmp_path):
    """Some scanners write Image Position with two decimals: on an oblique
    stack that scatters the slices by hundredths of a millimetre, which is
    neither a tilt nor uneven spacing."""
    nifti, folder = series_pairs["coronal_oblique"]
    copy = tmp_path / "rounded"
    shutil.copytree(folder, copy)
    for path in copy.iterdir():
        _edit(path, ImagePositionPatient=[f"{float(v):.2f}" for v in pydicom.dcmread(path).ImagePositionPatient])
    rounded, exact = load_scan(copy), load_scan(nifti)
    np.testing.assert_array_equal(rounded.data, exact.data)
    np.testing.assert_allclose(rounded.affine, exact.affine, atol=0.01)


def test_make_dicom_and_list_series_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["make-dicom", "SYN_DEMO_02", "--out", str(out / "sag"), "--acquisition", "sagittal"]) == 0
    assert main(["make-dicom", "SYN_DEMO_02", "--out", str(out / "enh"), "--enhanced"]) == 0
    assert "SYNTHETIC subject SYN_DEMO_02 as a sagittal DICOM series (80 file(s))" in capsys.readouterr().out
    (out / "ct").mkdir()
    write_series(*_sample("SYN_DEMO_03"), out / "ct", description="HEAD CT", seed=4)
    for path in (out / "ct").iterdir():
        _edit(path, Modality="CT")
    assert main(["list-series", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "3 DICOM series in demo:" in listing
    assert "T1 SAGITTAL SYNTHETIC SYN_DEMO_02  80 slice(s)  sagittal  MR  [readable]" in listing
    assert "T1 AXIAL SYNTHETIC SYN_DEMO_02  80 slice(s)  axial  MR  [readable]" in listing
    assert "HEAD CT  80 slice(s)  axial  CT  [refused: HEAD CT [" in listing and "is a CT series" in listing
    np.testing.assert_array_equal(load_scan(out / "enh").data, load_scan(out / "sag").data)
    # a folder that holds anything already is refused: the new files would join another series' folder
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    assert main(["make-dicom", "SYN_DEMO_02", "--out", str(tmp_path / "mine")]) == 2
    assert "is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_the_affine_follows_the_standard_not_the_writer(tmp_path):
    """A sagittal series built by hand: rows along the patient's anterior
    (+y LPS is posterior, so -y), columns downward, 0.8 mm between columns
    and 0.5 mm between rows, slices 2 mm apart towards the left. Each pixel's
    value encodes its (slice, row, column); wherever the reader puts it, its
    world position must be the one DICOM's equation gives."""
    from pydicom.dataset import Dataset, FileMetaDataset

    rows, columns, n = 6, 7, 16
    row_dir, col_dir = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])  # LPS
    spacing = (0.5, 0.8)  # between rows, between columns
    folder = tmp_path / "hand"
    folder.mkdir()
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.3.4.5.{k}"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = (
            "1.2.840.10008.5.1.4.1.1.4",
            f"1.2.3.4.5.{k}",
            "1.2.3.4",
        )
        ds.Modality, ds.Rows, ds.Columns = "MR", rows, columns
        ds.ImagePositionPatient = [10.0 + 2 * k, -20.0, 30.0]
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.PixelSpacing = list(spacing)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        code = k * 100 + np.arange(rows)[:, None] * 10 + np.arange(columns)[None, :]
        ds.PixelData = code.astype("<u2").tobytes()
        ds.save_as(folder / f"{(k * 7) % n:02d}.dcm", enforce_file_format=True)
    volume = open_dicom(folder)
    inverse = np.linalg.inv(volume.affine)
    for k, r, c in [(0, 0, 0), (3, 5, 6), (15, 2, 4), (9, 1, 0)]:
        lps = np.array([10.0 + 2 * k, -20.0, 30.0]) + c * spacing[1] * row_dir + r * spacing[0] * col_dir
        ras = lps * [-1, -1, 1]
        ijk = np.round(inverse @ np.r_[ras, 1.0])[:3].astype(int)
        assert volume.data[tuple(ijk)] == k * 100 + r * 10 + c
    # canonical RAS: the axes run Right, Anterior, Superior with the spacings of their DICOM directions
    np.testing.assert_allclose(np.diag(volume.affine)[:3], [2.0, 0.8, 0.5])


def test_each_slice_takes_its_own_rescale(good_series):
    before = load_scan(good_series).data
    path = _by_position(good_series)[30]
    ds = pydicom.dcmread(path)
    _edit(path, RescaleSlope=str(2 * float(ds.RescaleSlope)), RescaleIntercept="-3")
    after = load_scan(good_series).data
    assert after.dtype == np.float32
    changed = np.flatnonzero([not np.array_equal(after[:, :, z], before[:, :, z]) for z in range(after.shape[2])])
    assert len(changed) == 1
    z = int(changed[0])
    np.testing.assert_allclose(after[:, :, z], 2 * before[:, :, z] - 3, rtol=1e-6)


def test_uids_in_folder_and_file_names_are_replaced_by_their_key(good_series, tmp_path, capsys):
    uid_folder = tmp_path / "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    shutil.copytree(good_series, uid_folder)
    victim = _by_position(uid_folder)[20]
    named = victim.with_name("1.2.840.113619.2.55.3.604688119.969.1268071029.321.dcm")
    victim.rename(named)
    _, kwargs, _ = dicom_reader.read_dicom(str(uid_folder))[0]
    assert "1.2.840.113619" not in kwargs["metadata"]["source_path"] and "uid-" in kwargs["metadata"]["source_path"]
    named.write_bytes(named.read_bytes()[:-1000])
    with pytest.raises(ImageError) as refused:
        load_scan(uid_folder)
    assert "1.2.840.113619" not in str(refused.value) and "uid-" in str(refused.value)
    assert main(["prepare", str(uid_folder), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "1.2.840.113619" not in capsys.readouterr().err


def test_selecting_every_slice_file_in_napari_opens_the_series_once(good_series, make_napari_viewer):
    viewer = make_napari_viewer()
    for path in good_series.iterdir():  # napari offers this reader for .dcm files (and folders)
        path.rename(path.with_suffix(".dcm"))
    files = sorted(str(p) for p in good_series.iterdir())
    dicom_reader._OPENED.clear()
    layers = viewer.open(files[:12], plugin="napari-hyperfusion")
    assert len(layers) == 1 and len(viewer.layers) == 1


def test_the_launcher_opens_a_dicomdir_and_a_folder(series_pairs, tmp_path, make_napari_viewer):
    from pydicom.fileset import FileSet

    from napari_hyperfusion.launch import _open_scan

    _, folder = series_pairs["axial"]
    fileset = FileSet()
    for path in sorted(folder.iterdir()):
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp_path / "media")
    viewer = make_napari_viewer()
    _open_scan(viewer, str(tmp_path / "media" / "DICOMDIR"))
    (layer,) = viewer.open(str(tmp_path / "media"), plugin="napari-hyperfusion")  # File > Open Folder
    np.testing.assert_array_equal(np.asarray(viewer.layers[0].data), np.asarray(layer.data))
    np.testing.assert_array_equal(np.asarray(layer.data, np.float32), load_scan(folder).data)
