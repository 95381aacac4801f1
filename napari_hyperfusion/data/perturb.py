"""What real acquisitions change about a scan, as functions of a scan.

Each function takes a :class:`~napari_hyperfusion.data.preprocess.Scan`
(and a seeded generator where it is random) and returns a new one; the
input is never modified. Used three ways: by the robustness table (how much
a model's output moves under each change), by the input-QC calibration
(which changes the gate must refuse or warn about) and, through
:func:`augment_view`, by training.

Two kinds of change:

* **acquisition** (the brain is right, the picture differs):
  :func:`resample_iso` (voxel size), :func:`blur` (FWHM in mm),
  :func:`bias_field`, :func:`gamma` (contrast), :func:`rician_noise`, and
  a small :func:`move` (residual misregistration);
* **wrong input** (the gate's business): large :func:`move`, :func:`flip_lr`,
  :func:`invert_contrast`, :func:`pure_noise`.

Example:
    >>> rng = np.random.default_rng(0)
    >>> coarse = resample_iso(scan, 2.0)           # same brain, 2 mm voxels
    >>> moved = move(scan, rotate_deg=(10, 0, 0), shift_mm=(0, 5, 0))
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .preprocess import Scan, foreground_mask, resample_to_grid

__all__ = [
    "resample_iso",
    "blur",
    "bias_field",
    "gamma",
    "rician_noise",
    "move",
    "flip_lr",
    "invert_contrast",
    "pure_noise",
    "augment_view",
]


def _like(scan: Scan, data: np.ndarray, affine: np.ndarray | None = None) -> Scan:
    return Scan(data=np.asarray(data, dtype=np.float32), affine=scan.affine.copy() if affine is None else affine)


def resample_iso(scan: Scan, mm: float) -> Scan:
    """The same field of view on isotropic ``mm`` voxels (anti-aliased when
    coarser), as a scanner with another resolution would store it."""
    extent = np.array(scan.data.shape) * scan.voxel_size
    shape = tuple(int(max(8, round(e / mm))) for e in extent)
    # the new grid's axes follow the old ones (same orientation), only the step changes
    directions = scan.affine[:3, :3] / scan.voxel_size
    grid = np.eye(4)
    grid[:3, :3] = directions * mm
    centre = scan.affine[:3, :3] @ ((np.array(scan.data.shape) - 1) / 2.0) + scan.affine[:3, 3]
    grid[:3, 3] = centre - grid[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    return _like(scan, resample_to_grid(scan.data, scan.affine, grid, shape), grid)


def blur(scan: Scan, fwhm_mm: float) -> Scan:
    """Gaussian blur of ``fwhm_mm`` full width at half maximum (world mm)."""
    sigma = fwhm_mm / 2.3548 / scan.voxel_size
    return _like(scan, ndimage.gaussian_filter(scan.data, sigma=sigma))


def bias_field(scan: Scan, strength: float, rng: np.random.Generator) -> Scan:
    """Multiply by a smooth random field: ``exp`` of a random linear plus
    quadratic function of position, scaled so that it spans about
    ``+-strength`` (0.2: +-20 %) over the volume."""
    axes = [np.linspace(-1, 1, n) for n in scan.data.shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    terms = [x, y, z, x * y, y * z, x * z, x**2 - 0.33, y**2 - 0.33, z**2 - 0.33]
    field = sum(rng.normal() * t for t in terms)
    field *= strength / max(float(np.abs(field).max()), 1e-6)
    return _like(scan, scan.data * np.exp(field))


def gamma(scan: Scan, power: float) -> Scan:
    """Change the contrast: intensities ``x -> max * (x / max) ** power``
    (``power < 1`` flattens grey-white contrast, ``> 1`` deepens it)."""
    top = float(np.percentile(scan.data, 99.9))
    scaled = np.clip(scan.data / top, 0, None)
    return _like(scan, top * scaled**power)


def rician_noise(scan: Scan, fraction: float, rng: np.random.Generator) -> Scan:
    """Magnitude-image noise (Rician): Gaussian noise of SD ``fraction`` x
    the foreground mean in both the real and the imaginary channel, inside
    the head only (a skull-stripped scan is masked after acquisition)."""
    sd = fraction * float(scan.data[foreground_mask(scan.data)].mean())
    real = scan.data + rng.normal(0, sd, scan.data.shape)
    imag = rng.normal(0, sd, scan.data.shape)
    return _like(scan, np.where(scan.data > 0, np.sqrt(real**2 + imag**2), 0.0))


def move(scan: Scan, rotate_deg=(0.0, 0.0, 0.0), shift_mm=(0.0, 0.0, 0.0)) -> Scan:
    """Place the scan elsewhere in world space (the data is untouched; its
    affine changes): a rotation about the brain's centre (degrees about x,
    y, z) then a shift (mm). This is how a misregistration looks."""
    fg = np.argwhere(foreground_mask(scan.data)).mean(axis=0)
    centre = scan.affine[:3, :3] @ fg + scan.affine[:3, 3]
    rot = Rotation.from_euler("xyz", rotate_deg, degrees=True).as_matrix()
    motion = np.eye(4)
    motion[:3, :3] = rot
    motion[:3, 3] = centre - rot @ centre + np.asarray(shift_mm, dtype=float)
    return _like(scan, scan.data, motion @ scan.affine)


def flip_lr(scan: Scan) -> Scan:
    """Mirror the brain left-right in world space (a header that lies about
    the x axis)."""
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    return _like(scan, scan.data, mirror @ scan.affine)


def invert_contrast(scan: Scan) -> Scan:
    """Dark tissue bright and bright tissue dark inside the head (a T2-like
    contrast); the background stays 0."""
    fg = foreground_mask(scan.data)
    top = float(np.percentile(scan.data[fg], 99.5))
    return _like(scan, np.where(fg, top - scan.data, 0.0) + 0.05 * top * fg)


def pure_noise(scan: Scan, rng: np.random.Generator) -> Scan:
    """Uniform noise on the scan's own grid and placement (not a brain)."""
    top = float(np.percentile(scan.data, 99.5))
    return _like(scan, rng.uniform(0, top, scan.data.shape))


def augment_view(volume: np.ndarray, rng: np.random.Generator, spacing_mm: float) -> np.ndarray:
    """Random acquisition changes on one z-scored model-grid view (training).

    Drawn independently, each with probability 1/2: a blur (FWHM up to
    5 mm, i.e. scans from about 1 to 3 mm after anti-aliasing), a bias
    field of up to +-20 %, a contrast power in [0.7, 1.4] and Rician noise
    of up to 5 % of the tissue intensity. The result is rescaled to the
    input's foreground median and IQR, as the models' standardisation would.

    Args:
        volume: ``[D, H, W]`` float32, standardised (``prepare_views``).
        rng: the sample's seeded generator.
        spacing_mm: the grid's voxel size (to express the blur in mm).
    Returns:
        float32 ``[D, H, W]``.
    """
    x = volume.astype(np.float32) - float(volume.min())  # >= 0, background at 0
    fg = foreground_mask(x)
    if not fg.any():
        return volume
    scan = Scan(data=x, affine=np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0]))
    if rng.random() < 0.5:
        scan = blur(scan, float(rng.uniform(0.5, 5.0)))
    if rng.random() < 0.5:
        scan = bias_field(scan, float(rng.uniform(0.0, 0.2)), rng)
    if rng.random() < 0.5:
        scan = gamma(scan, float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))))
    if rng.random() < 0.5:
        scan = rician_noise(scan, float(rng.uniform(0.0, 0.05)), rng)
    out = scan.data
    before, after = volume[fg], out[fg]
    q_in, q_out = np.percentile(before, [25, 50, 75]), np.percentile(after, [25, 50, 75])
    spread = float(q_out[2] - q_out[0])
    if spread <= 0:
        return volume
    # back onto the input's robust scale (median, IQR) on the same voxels, as preprocessing would put it
    z = (out - q_out[1]) / spread * float(q_in[2] - q_in[0]) + float(q_in[1])
    background = ~fg & ~foreground_mask(out)
    z[background] = float(volume.min())
    return z.astype(np.float32)
