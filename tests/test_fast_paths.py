"""The per-subject path of cohort prediction was made faster (issue 28);
these tests hold it to the answers it gave before.

- the separable resampling against scipy's general ``affine_transform``;
- the foreground moments from projections against listing the voxels;
- the gradient magnitude against ``np.gradient``;
- the paired-tap Gaussian against scipy's ``gaussian_filter1d`` and the
  high percentile against ``np.percentile``;
- the gate's measures and the predictions of a real synthetic cohort
  against values recorded with the code before the speed-up
  (``tests/data/golden_ad_predictions.json``), loading with one thread and
  with two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from napari_hyperfusion.data import input_qc
from napari_hyperfusion.data.preprocess import high_percentile, load_scan
from napari_hyperfusion.data.resample import antialias_sigma, axis_aligned, gaussian_filter1d, resample_to_grid

GOLDEN = Path(__file__).parent / "data" / "golden_ad_predictions.json"


def _scipy_resample(data, affine, grid, shape):
    """The general path, written out: Gaussian anti-aliasing, then trilinear."""
    scan_to_grid = np.linalg.inv(affine) @ grid
    src = data.astype(np.float32)
    sigma = antialias_sigma(scan_to_grid)
    if (sigma > 0.05).any():
        src = ndimage.gaussian_filter(src, sigma, mode="constant")
    return ndimage.affine_transform(
        src, scan_to_grid[:3, :3], offset=scan_to_grid[:3, 3], output_shape=shape, order=1, mode="constant",
        cval=0.0, prefilter=False,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_separable_resampling_gives_the_general_answer(seed):
    """Flips, axis swaps, up- and down-sampling, integer and fractional
    shifts, and the identity (every sample on a scan voxel and edge)."""
    rng = np.random.default_rng(seed)
    data = (rng.random(tuple(rng.integers(5, 30, 3))) * 100).astype(np.float32)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    for row, col in enumerate(rng.permutation(3)):
        affine[row, col] = rng.choice([-1, 1]) * (1.0 if seed % 4 == 0 else rng.uniform(0.3, 3))
    affine[:3, 3] = rng.uniform(-20, 20, 3) if seed % 3 else np.round(rng.uniform(-20, 20, 3))
    if seed % 5 == 0:
        grid, shape = affine.copy(), data.shape
    else:
        grid = np.diag([*rng.uniform(0.5, 3, 3), 1.0])
        grid[:3, 3] = rng.uniform(-30, 10, 3)
        shape = tuple(int(s) for s in rng.integers(4, 40, 3))
    assert axis_aligned(np.linalg.inv(affine) @ grid) is not None
    fast = resample_to_grid(data, affine, grid, shape)
    np.testing.assert_allclose(fast, _scipy_resample(data, affine, grid, shape), atol=1e-4, rtol=1e-5)


def test_an_oblique_grid_takes_the_general_path():
    rng = np.random.default_rng(0)
    data = rng.random((20, 22, 18)).astype(np.float32)
    angle = np.deg2rad(10)
    grid = np.eye(4)
    grid[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert axis_aligned(grid) is None
    np.testing.assert_allclose(
        resample_to_grid(data, np.eye(4), grid, (16, 16, 16)), _scipy_resample(data, np.eye(4), grid, (16, 16, 16))
    )


def test_foreground_moments_from_projections_equal_listing_the_voxels():
    rng = np.random.default_rng(1)
    mask = ndimage.gaussian_filter(rng.random((30, 40, 25)), 3) > 0.5
    listed = np.cov(np.argwhere(mask).T.astype(np.float64))
    np.testing.assert_allclose(input_qc._index_covariance(mask, int(mask.sum())), listed, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_magnitude_equals_numpys(dtype):
    volume = np.random.default_rng(2).random((12, 9, 7)).astype(dtype)
    expected = np.sqrt(sum(g**2 for g in np.gradient(volume.astype(np.float64), 2.0)))
    np.testing.assert_allclose(input_qc._gradient_magnitude(volume, 2.0), expected, rtol=1e-5)


@pytest.fixture(scope="module")
def golden(ad_cohort):
    """The recorded answers; the conftest cohort is the one they were made on."""
    from napari_hyperfusion.resources import models_dir

    recorded = json.loads(GOLDEN.read_text())
    model = models_dir() / "ad_hyperfusion.safetensors"
    from napari_hyperfusion.io.model_file import load_model

    loaded = load_model(model, device="cpu")
    if not recorded["model_sha256_prefix"].startswith(loaded.short_hash[:8]):
        pytest.fail("the shipped AD model changed: record tests/data/golden_ad_predictions.json again")
    return recorded["subjects"], loaded


def test_the_gate_measures_what_it_measured_before(ad_cohort, golden):
    subjects, model = golden
    table = pd.read_csv(ad_cohort)
    for _, row in table.iterrows():
        qc = input_qc.check_input(load_scan(Path(ad_cohort).parent / row["IMAGE"]), model.info.input_stats.get("scan"))
        before = subjects[row["PTID"]]["qc"]
        assert qc.verdict == before["verdict"], row["PTID"]
        for key in ("ncc", "coverage", "head_scale", "sharpness"):
            assert getattr(qc, key) == pytest.approx(before[key], rel=1e-5, abs=1e-6), (row["PTID"], key)


@pytest.mark.parametrize("jobs", [1, 2])
def test_cohort_predictions_are_what_they_were_before(ad_cohort, golden, tmp_path, jobs):
    from napari_hyperfusion.infer.batch import predict_to_csv

    subjects, model = golden
    out = tmp_path / "predictions.csv"
    predict_to_csv(model, ad_cohort, out, chunk_size=10, jobs=jobs)
    got = pd.read_csv(out)
    assert list(got["PTID"]) == list(subjects)
    probs = got[["prob_CN", "prob_MCI", "prob_AD"]].to_numpy()
    expected = np.array([s["prob"] for s in subjects.values()])
    np.testing.assert_allclose(probs, expected, atol=5e-5)  # float16 views: a rounding may flip in the 4th digit
    np.testing.assert_allclose(got["image_typicality_pct"], [s["typicality_pct"] for s in subjects.values()], atol=0.05)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
@pytest.mark.parametrize("sigma", [0.2, 0.6, 1.0, 2.3, 6.0])
def test_paired_tap_gaussian_matches_scipy(mode, sigma):
    # sigma 6 has a radius (24) wider than the short axis (10): the mirror must repeat as scipy's does
    volume = np.random.default_rng(int(sigma * 10)).random((10, 37, 29)).astype(np.float32) * 500
    for axis in range(3):
        ours = gaussian_filter1d(volume, sigma, axis, mode=mode)
        theirs = ndimage.gaussian_filter1d(volume, sigma, axis=axis, mode=mode)
        assert ours.dtype == np.float32 and ours.shape == volume.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)


def test_paired_tap_gaussian_refuses_other_modes():
    with pytest.raises(ValueError, match="mode"):
        gaussian_filter1d(np.zeros((4, 4, 4)), 1.0, 0, mode="wrap")


@pytest.mark.parametrize("q", [95, 99, 99.5, 99.9, 100])
def test_high_percentile_matches_numpy(q):
    rng = np.random.default_rng(int(q * 10))
    n = 50_000
    samples = {
        "uniform": rng.random(n),
        "few levels (ties at the percentile)": rng.integers(0, 5, n).astype(float),
        "half background": np.r_[np.zeros(n // 2), rng.random(n - n // 2)],
        "heavy tails": rng.standard_normal(n) ** 3,
        "sorted ascending (the stride sees only the low end)": np.sort(rng.random(n)),
        "a real scan": load_scan(Path(__file__).parents[1] / "sample_data" / "SYN_DEMO_01.nii.gz").data,
    }
    for name, values in samples.items():
        values = np.asarray(values, dtype=np.float32)
        assert high_percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-6), name
    with_nan = samples["uniform"].copy()
    with_nan[7] = np.nan
    assert np.isnan(high_percentile(with_nan, q))


def test_model_footprint_counts_every_layer_without_torchs_compiler(monkeypatch):
    """The footprint check (run on every model file opened) stands in for norms and activations on the
    meta device: the same count as running them, without importing torch._dynamo (2 s of start-up)."""
    import subprocess
    import sys

    from napari_hyperfusion.io.model_file import read_info
    from napari_hyperfusion.nn import footprint

    models = sorted((Path(__file__).parents[1] / "models").glob("*.safetensors"))
    configs = [read_info(path).config for path in models]
    fast = [footprint.estimate_footprint(config) for config in configs]
    monkeypatch.setattr(footprint, "_stand_in_for_shape_keeping_layers", lambda net: None)
    assert fast == [footprint.estimate_footprint(config) for config in configs]
    probe = (
        "import sys; from napari_hyperfusion.io.model_file import read_info; "
        f"[read_info(p) for p in {[str(p) for p in models]!r}]; print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
