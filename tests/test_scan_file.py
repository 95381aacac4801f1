"""Reading scans as nibabel defines them, and refusing what cannot be a scan
before anything is allocated (issue 16: reader fixes)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from napari_hyperfusion.data.preprocess import ModelGrid, load_scan, prepare_views
from napari_hyperfusion.data.scan_file import MAX_SCAN_VOXELS, open_nifti
from napari_hyperfusion.errors import ImageError
from napari_hyperfusion.io.nifti import read_nifti
from napari_hyperfusion.resources import sample_data_dir

SAMPLE = sample_data_dir() / "SYN_DEMO_01.nii.gz"


def _brain(tmp_path, name, transform=lambda d: d, affine=None, dtype=None, slope=None):
    src = nib.load(str(SAMPLE))
    data = transform(np.asarray(src.dataobj, dtype=np.float64))
    img = nib.Nifti1Image(data.astype(dtype or np.float32), src.affine if affine is None else affine)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    path = tmp_path / name
    nib.save(img, str(path))
    return path


def test_scaled_integer_file_reads_as_the_scaled_floats_nibabel_defines(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 3000, size=(20, 22, 24)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.diag([-2.0, 2.0, 2.0, 1.0]))  # LAS: flipped on reading
    img.header.set_slope_inter(0.25, 7.5)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    expected = nib.as_closest_canonical(nib.load(str(path))).get_fdata()
    assert not np.allclose(expected, np.round(expected))  # the fractions are what a cast would lose
    data, kwargs, _ = read_nifti(path)[0]
    assert data.dtype == np.float32
    np.testing.assert_allclose(data, expected, rtol=1e-6)
    np.testing.assert_allclose(load_scan(path).data, expected, rtol=1e-6)


def test_unscaled_integers_stay_integers_in_the_layer(tmp_path):
    raw = np.arange(16 * 16 * 16, dtype=np.uint8).reshape(16, 16, 16)
    path = tmp_path / "u8.nii.gz"
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(path))
    data = read_nifti(path)[0][0]
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, raw)


def test_any_orientation_is_reoriented_exactly_as_nibabel_does(tmp_path):
    # axes permuted and two flipped, oblique by 10 degrees
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    affine = np.array([[0, 0, -2.0 * c, 90], [2.0 * s, 2.0 * c, 0, -120], [2.0 * c, -2.0 * s, 0, -70], [0, 0, 0, 1]])
    path = _brain(tmp_path, "oblique.nii.gz", affine=affine)
    ref = nib.as_closest_canonical(nib.load(str(path)))
    scan = load_scan(path)
    np.testing.assert_allclose(scan.affine, ref.affine)
    np.testing.assert_array_equal(scan.data, ref.get_fdata(dtype=np.float32))


def test_extreme_intensities_normalise_without_overflow(tmp_path):
    path = _brain(tmp_path, "huge_values.nii.gz", transform=lambda d: d / max(d.max(), 1) * 1e32)
    grid = ModelGrid(crop="whole", shape=(20, 24, 20), spacing_mm=8.0)
    normal = prepare_views(load_scan(SAMPLE), grid)
    views = prepare_views(load_scan(path), grid)
    assert np.isfinite(views).all()
    assert views.std() > 0.5  # not a blank image
    np.testing.assert_allclose(views, normal, atol=1e-3)  # z-scoring makes the scale irrelevant


def test_values_beyond_float32_are_refused(tmp_path):
    path = _brain(tmp_path, "beyond.nii.gz", transform=lambda d: d * 1e300, dtype=np.float64)
    with pytest.raises(ImageError, match="beyond what a float32 image"):
        load_scan(path)


@pytest.mark.parametrize("reader", [load_scan, read_nifti])
def test_singular_affine_is_refused(tmp_path, reader):
    # a singular matrix can only be stored as the sform (the qform is a rotation)
    src = nib.load(str(SAMPLE))
    img = nib.Nifti1Image(np.asarray(src.dataobj, dtype=np.float32), None)
    img.header.set_sform(np.diag([2.0, 2.0, 0.0, 1.0]), code=2)
    img.header.set_qform(None, code=0)
    path = tmp_path / "singular.nii.gz"
    nib.save(img, str(path))
    assert np.linalg.det(nib.load(str(path)).affine[:3, :3]) == 0
    with pytest.raises(ImageError, match="singular affine"):
        reader(path)


@pytest.mark.parametrize("reader", [load_scan, read_nifti])
def test_rgb_volume_is_refused(tmp_path, reader):
    rgb = np.zeros((16, 16, 16), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    with pytest.raises(ImageError, match="RGB"):
        reader(path)


def _forged_header(tmp_path, shape=(4000, 4000, 4000)):
    """A 352-byte header claiming a volume of 64 billion float32 voxels."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    path = tmp_path / "forged.nii"
    with open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


@pytest.mark.parametrize("reader", [load_scan, read_nifti])
def test_header_claiming_a_huge_volume_is_refused_before_allocating(tmp_path, reader):
    path = _forged_header(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="million voxels"):
            reader(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20, f"allocated {peak / 2**20:.1f} MiB before refusing"
    assert MAX_SCAN_VOXELS < 4000**3


def test_four_d_file_reads_only_its_first_volume(tmp_path):
    src = nib.load(str(SAMPLE))
    first = np.asarray(src.dataobj, dtype=np.float32)
    stack = np.stack([first, first * 0 + 5.0], axis=-1)
    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(stack, src.affine), str(path))
    img = open_nifti(path)
    assert img.shape[3] == 2
    with pytest.warns(UserWarning, match="2 volumes"):
        data = read_nifti(path)[0][0]
    np.testing.assert_array_equal(data, nib.as_closest_canonical(src).get_fdata(dtype=np.float32))


def test_cli_refuses_a_forged_scan_with_a_message(tmp_path):
    """hyperfusion predict on a cohort whose scan header is forged: one line, exit 2."""
    forged = _forged_header(tmp_path)
    table = tmp_path / "participants.tsv"
    table.write_text(f"participant_id\timage\tage\tsex\nsub-1\t{forged.name}\t70\tM\n")
    model = sample_data_dir().parent / "models" / "brain_age_hyperfusion.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_hyperfusion.cli", "predict", str(model), str(table),
         "--out", str(tmp_path / "p.csv"), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "million voxels" in proc.stderr
