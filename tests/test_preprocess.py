"""Scans onto the model grid by world position; checks of bad scans."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_hyperfusion.data.preprocess import (
    ImageError,
    ModelGrid,
    foreground_stats,
    load_scan,
    prepare_views,
    resample_to_grid,
    scan_from_array,
)
from napari_hyperfusion.data.template import load_template


def _blob_volume(shape=(40, 48, 40)) -> np.ndarray:
    """A smooth, asymmetric test object (so flips and shifts show)."""
    grid = np.indices(shape).astype(np.float32)
    centre = np.array(shape)[:, None, None, None] * np.array([0.4, 0.55, 0.5])[:, None, None, None]
    r2 = (((grid - centre) / np.array([8, 10, 7])[:, None, None, None]) ** 2).sum(0)
    return (100 * np.exp(-r2) + 20 * (grid[0] / shape[0])).astype(np.float32)


def test_resampling_is_by_world_position_for_ras_las_and_rotated_grids(tmp_path):
    data = _blob_volume()
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    ras[:3, 3] = [-40, -50, -30]
    target = np.eye(4)
    target[:3, :3] *= 2.0
    target[:3, 3] = [-30, -40, -20]
    reference = resample_to_grid(data, ras, target, (20, 24, 20))
    # the same voxels stored left-to-right (LAS): the first axis flipped
    las = ras.copy()
    las[0, 0] = -2.0
    las[0, 3] = ras[0, 3] + 2.0 * (data.shape[0] - 1)
    np.testing.assert_allclose(resample_to_grid(data[::-1], las, target, (20, 24, 20)), reference, atol=1e-4)
    # a scan stored rotated by 90 degrees about z (axes swapped)
    rotated = np.transpose(data, (1, 0, 2))[::-1]
    # rotated[a, b, c] == data[b, n_y - 1 - a, c]
    rotated_affine = np.array([[0, 2.0, 0, 0], [-2.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
    rotated_affine[:3, 3] = ras[:3, 3] + np.array([0, 2.0 * (data.shape[1] - 1), 0])
    np.testing.assert_allclose(resample_to_grid(rotated, rotated_affine, target, (20, 24, 20)), reference, atol=1e-4)
    # and a file written by nibabel in LAS loads back in canonical RAS
    path = tmp_path / "las.nii.gz"
    nib.save(nib.Nifti1Image(data[::-1].copy(), las), str(path))
    scan = load_scan(path)
    assert nib.aff2axcodes(scan.affine) == ("R", "A", "S")
    np.testing.assert_allclose(resample_to_grid(scan.data, scan.affine, target, (20, 24, 20)), reference, atol=1e-4)


def test_downsampling_is_antialiased():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(64, 64, 64)).astype(np.float32)
    coarse = np.diag([4.0, 4.0, 4.0, 1.0])
    out = resample_to_grid(noise, np.eye(4), coarse, (16, 16, 16))
    assert out.std() < 0.5 * noise.std()  # plain sampling would keep std ~1


def test_hippocampus_views_centre_on_the_template_hippocampi():
    grid = ModelGrid(crop="hippocampus", shape=(24, 32, 24), spacing_mm=2.0)
    tpl = load_template()
    for view, side in ((0, "R"), (1, "L")):
        centre = grid.affine(view) @ np.r_[(np.array(grid.shape) - 1) / 2.0, 1.0]
        expected = tpl.affine @ np.r_[tpl.centroid(f"hippocampus_{side}"), 1.0]
        np.testing.assert_allclose(centre[:3], expected[:3], atol=1e-6)
    assert grid.affine(0)[0, 0] > 0 > grid.affine(1)[0, 0]  # the left view is mirrored
    assert ModelGrid.from_dict(grid.to_dict()) == grid


def test_prepare_views_on_a_shipped_sample_scan():
    from napari_hyperfusion.resources import sample_data_dir

    scan = load_scan(sample_data_dir() / "SYN_DEMO_03.nii.gz")
    grid = ModelGrid(crop="hippocampus", shape=(24, 32, 24), spacing_mm=2.0)
    views = prepare_views(scan, grid)
    assert views.shape == (2, 24, 32, 24) and views.dtype == np.float32
    # both crops hold tissue at their centre, normalised to the scan's foreground
    assert abs(views[:, 12, 16, 12]).max() < 4 and views.std() > 0.3
    mean, std = foreground_stats(scan.data)
    assert mean > 0 and std > 0


def test_a_scan_outside_mni_space_is_refused():
    data = _blob_volume()
    far = np.diag([2.0, 2.0, 2.0, 1.0])
    far[:3, 3] = [500, 500, 500]
    with pytest.raises(ImageError, match="MNI"):
        prepare_views(scan_from_array(data, far), ModelGrid(crop="whole", shape=(20, 24, 20), spacing_mm=8.0))


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((20, 20)), "2 dimensions"),
        (np.zeros((20, 20, 20, 3)), "4D with 3 volumes"),
        (np.full((20, 20, 20), np.nan), "NaN"),
        (np.zeros((4, 20, 20)), "not a brain volume"),
    ],
)
def test_bad_arrays_are_refused(data, match):
    with pytest.raises(ImageError, match=match):
        scan_from_array(data, np.eye(4))


def test_single_volume_4d_is_squeezed():
    assert scan_from_array(np.ones((10, 10, 10, 1)), np.eye(4)).data.shape == (10, 10, 10)


def test_unreadable_files_are_refused(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_scan(tmp_path / "missing.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a nifti file" * 10)
    with pytest.raises(ImageError, match="cannot be read as NIfTI"):
        load_scan(garbage)
    # a truncated gzip (a copy that stopped half-way)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(_blob_volume(), np.eye(4)), str(good))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="cannot be read as NIfTI"):
        load_scan(truncated)
    assert gzip.open(good).read(4)  # the intact file is fine
    assert load_scan(good).data.shape == (40, 48, 40)
