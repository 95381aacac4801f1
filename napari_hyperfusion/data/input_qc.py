"""The input gate: is this scan what the models were trained to read?

Measured on every scan before a prediction (panel, CLI, batch), with numpy
only (no registration library needed):

* **template agreement**: the scan is sampled on the shipped MNI152 grid
  *at its own head size* (the models read absolute volumes, so the
  synthetic and prepared scans keep the head's scale in their voxel size;
  the scale is estimated from the second moments of the scan's foreground
  against the template's brain mask), then the normalised cross-correlation
  (NCC) with the template T1 and the fraction of the template's brain the
  scan covers are taken inside that mask. A rotated, shifted, flipped-in-
  depth, noise or wrong-contrast volume correlates poorly.
* **voxel size**: the largest voxel edge, against the largest the model
  saw in training;
* **sharpness**: the mean gradient magnitude over the brain, in units of
  the tissue's intensity spread, against the training scans' range (blur
  lowers it, noise raises it).

:func:`check_input` turns the measures into a verdict: ``"refuse"`` (the
model would not be reading a brain in MNI space: predict nothing, offer
Prepare), ``"warn"`` (predict, and say on the result what is unusual) or
``"ok"``. The thresholds are calibrated by ``scripts/calibrate_input_qc.py``
(docs/using.md, "The input quality gate").

Example:
    >>> qc = check_input(load_scan("sub-01_T1w.nii.gz"), model.info.input_stats.get("scan"))
    >>> qc.verdict, qc.ncc, qc.reasons         # ("ok", 0.86, ())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import ImageError
from .preprocess import Scan, foreground_mask, resample_to_grid
from .resample import gaussian_filter1d
from .template import load_template

__all__ = [
    "InputQC",
    "InputRefused",
    "measure_input",
    "check_input",
    "template_agreement",
    "NCC_REFUSE",
    "NCC_WARN",
    "COVERAGE_REFUSE",
]

# Calibrated by scripts/calibrate_input_qc.py on 40 synthetic subjects and
# their corrupted versions (docs/using.md, "The input quality gate"): valid
# scans at voxel sizes of 1 to 3 mm, blurred, biased, re-contrasted or noisy
# keep NCC >= 0.72; shifts of 10 mm fall to 0.32-0.54, rotations of 10
# degrees to 0.50-0.72, noise and inverted contrast below 0.3. On 1,000
# fresh, correctly placed synthetic scans the lowest NCC was 0.67:
# the refusal line sits below that, so a correct scan is not sent to Prepare.
NCC_REFUSE = 0.62
NCC_WARN = 0.72
COVERAGE_REFUSE = 0.90
HEAD_SCALE_RANGE = (0.75, 1.30)  # adult heads are within +-20 % of the template's linear size
VOXEL_MM_WARN = 3.0  # the default when a model file states no training range
SHARPNESS_MARGIN = 1.15  # how far outside the training range before a warning (calibrated: noise 30 % warns)


class InputRefused(ImageError):
    """The gate refused a scan; ``qc`` says why."""

    def __init__(self, message: str, qc: InputQC) -> None:
        super().__init__(message)
        self.qc = qc


@dataclass(frozen=True)
class InputQC:
    """The gate's measures and verdict for one scan.

    ``ncc``: correlation with the template T1 inside its brain mask, at the
    scan's head size (1 = the same picture); ``coverage``: fraction of the
    template's brain with tissue in the scan; ``head_scale``: the head's
    linear size / the template's; ``voxel_mm``: largest voxel edge;
    ``sharpness``: mean gradient / tissue spread (per mm); ``verdict``:
    ``"ok"``, ``"warn"`` or ``"refuse"``; ``reasons``: one sentence each.
    """

    ncc: float
    coverage: float
    head_scale: float
    voxel_mm: float
    sharpness: float
    verdict: str = "ok"
    reasons: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out

    def summary(self) -> str:
        """One line for a result view or a table cell."""
        measures = (
            f"NCC {self.ncc:.2f}, brain coverage {self.coverage:.0%}, voxels {self.voxel_mm:.1f} mm, "
            f"sharpness {self.sharpness:.2f}"
        )
        head = {"ok": "input QC ok", "warn": "input QC WARNING", "refuse": "input QC REFUSED"}[self.verdict]
        return f"{head} ({measures})" + (": " + "; ".join(self.reasons) if self.reasons else "")


def template_agreement(data: np.ndarray) -> tuple[float, float]:
    """NCC with the template T1 and brain coverage of a volume already on
    the template grid.

    Both images are smoothed by one template voxel (a Gaussian of sigma
    2 mm) first: the correlation then measures where the brain is, not how
    this brain's folds differ from the template's (unsmoothed, valid
    synthetic scans ranged 0.57-0.81 and overlapped 5 mm shifts; smoothed,
    0.75-0.91 against 0.33-0.66 for 10 degree or 10 mm misplacements).

    Args:
        data: ``[80, 96, 80]`` float on the template grid.
    Returns:
        ``(ncc, coverage)``: correlation in [-1, 1] inside the template's
        intracranial mask, and the fraction of that mask where the volume
        has tissue (above 10 % of its median there).
    """
    tpl = load_template()
    if data.shape != tpl.shape:
        raise ImageError(f"the QC needs the template grid {tpl.shape}, got {data.shape}")
    tissue = np.asarray(data)[_mask()]
    median = float(np.median(tissue)) if tissue.size else 0.0
    return _agreement(data, tissue, median)


def _agreement(data: np.ndarray, tissue: np.ndarray, median: float) -> tuple[float, float]:
    """:func:`template_agreement` given the volume's values inside the mask
    (``tissue``) and their median (shared with the sharpness measure)."""
    a = _smooth(data)[_mask()].astype(np.float64)
    a_c = a - a.mean()
    b_c, b_norm = _template_centred()
    denom = float(np.sqrt((a_c**2).sum()) * b_norm)
    # an elementwise sum, not a BLAS dot: BLAS threads busy-wait after each call and take the
    # cores from the other scans' loading threads
    ncc = float(np.multiply(a_c, b_c).sum() / denom) if denom > 0 else 0.0
    coverage = float((tissue > 0.1 * median).mean()) if median > 0 else 0.0
    return ncc, coverage


@lru_cache(maxsize=1)
def _template_centred() -> tuple[np.ndarray, float]:
    """The smoothed template inside its mask, centred, and its norm."""
    b = _smooth_template()[_mask()].astype(np.float64)
    b_c = b - b.mean()
    return b_c, float(np.sqrt((b_c**2).sum()))


@lru_cache(maxsize=1)
def _smooth_template() -> np.ndarray:
    return _smooth(load_template().t1)


def _smooth(volume: np.ndarray) -> np.ndarray:
    """A Gaussian of one template voxel (sigma 1), mirrored at the edges."""
    for axis in range(3):
        volume = gaussian_filter1d(volume, 1.0, axis, mode="reflect")
    return volume


@lru_cache(maxsize=1)
def _mask() -> np.ndarray:
    return load_template().regions["intracranial"] > 0.5


@lru_cache(maxsize=1)
def _template_spread() -> float:
    """Determinant of the second moments (mm^2) of the template's brain mask."""
    return float(np.linalg.det(np.cov(_world(np.argwhere(_mask()), load_template().affine).T)))


PARTIAL_FOV = 0.7  # a field of view shorter than this share of the brain along any axis is partial


def field_of_view_mm(scan: Scan) -> np.ndarray:
    """The scan's field of view along its three axes, sorted, in mm."""
    return np.sort(np.asarray(scan.data.shape[:3], dtype=float) * np.asarray(scan.voxel_size, dtype=float))


def fov_coverage(scan: Scan) -> float:
    """Share of the template's brain voxels inside the scan's array, placed
    by the scan's affine (0 to 1)."""
    world = _world(np.argwhere(_mask()), load_template().affine)
    ijk = (world - scan.affine[:3, 3]) @ np.linalg.inv(scan.affine[:3, :3]).T
    inside = np.all((ijk >= -0.5) & (ijk <= np.asarray(scan.data.shape[:3]) - 0.5), axis=1)
    return float(inside.mean())


@lru_cache(maxsize=1)
def _brain_extent_mm() -> np.ndarray:
    """The template brain's extent along its three axes, sorted, in mm."""
    world = _world(np.argwhere(_mask()), load_template().affine)
    return np.sort(world.max(axis=0) - world.min(axis=0))


def _world(ijk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _head_scale(scan: Scan) -> float:
    """The head's linear size relative to the template's brain, from the
    determinant of the foreground's second moments (orientation-free)."""
    fg = foreground_mask(scan.data)
    n = int(np.count_nonzero(fg))
    if n < 100:
        return float("nan")
    linear = np.asarray(scan.affine, dtype=np.float64)[:3, :3]
    det = float(np.linalg.det(linear @ _index_covariance(fg, n) @ linear.T))
    return float((det / _template_spread()) ** (1.0 / 6.0)) if det > 0 else float("nan")


def _index_covariance(mask: np.ndarray, n: int) -> np.ndarray:
    """Covariance (``ddof=1``, voxels^2) of the indices of a 3D mask's true
    voxels, ``[3, 3]``, from its three 2D projections: exact, without
    listing the voxels."""
    planes = {(0, 1): np.count_nonzero(mask, axis=2), (0, 2): np.count_nonzero(mask, axis=1),
              (1, 2): np.count_nonzero(mask, axis=0)}  # fmt: skip
    counts = [planes[0, 1].sum(1), planes[0, 1].sum(0), planes[0, 2].sum(0)]
    index = [np.arange(size, dtype=np.float64) for size in mask.shape]
    mean = np.array([np.dot(counts[a], index[a]) for a in range(3)]) / n
    second = np.empty((3, 3))
    for a in range(3):
        second[a, a] = counts[a] @ index[a] ** 2
        for b in range(a + 1, 3):
            # einsum, not BLAS: its threads busy-wait after each call (see _agreement)
            second[a, b] = second[b, a] = np.einsum("i,ij,j->", index[a], planes[a, b], index[b])
    return (second - n * np.outer(mean, mean)) / (n - 1)


def _sharpness(on_template: np.ndarray, spacing_mm: float, quartiles: tuple[float, float]) -> float:
    """Mean gradient magnitude (per mm) inside the template's mask, in units
    of the tissue's interquartile spread ``quartiles`` (25th, 75th
    percentile inside the mask, measured once with the coverage's median)."""
    mask = _mask()
    q1, q3 = (float(q) for q in quartiles)
    spread = q3 - q1
    if spread <= 0:
        return 0.0
    peak = max(abs(float(on_template.max())), abs(float(on_template.min())))
    if peak < 1e15 and peak / spread < 1e15:  # float32 squares cannot overflow: as it is, in float32
        gradient = _gradient_magnitude(np.asarray(on_template, dtype=np.float32), spacing_mm)
        return float(gradient[mask].mean(dtype=np.float64) / spread)
    # intensities near 1e30 would overflow their squares: in units of the tissue spread, in float64
    scaled = (on_template.astype(np.float64) - q1) / spread
    return float(_gradient_magnitude(scaled, spacing_mm)[mask].mean(dtype=np.float64))


def _gradient_magnitude(volume: np.ndarray, spacing: float) -> np.ndarray:
    """``sqrt(sum(np.gradient(volume, spacing) ** 2))``: central differences
    inside, one-sided at the edges, without numpy's per-axis copies."""
    total = np.zeros_like(volume)
    for axis in range(volume.ndim):
        diff = np.empty_like(volume)
        inner, ahead, behind = ([slice(None)] * volume.ndim for _ in range(3))
        inner[axis], ahead[axis], behind[axis] = slice(1, -1), slice(2, None), slice(None, -2)
        np.subtract(volume[tuple(ahead)], volume[tuple(behind)], out=diff[tuple(inner)])
        diff[tuple(inner)] /= 2 * spacing
        first, second, last, before_last = ([slice(None)] * volume.ndim for _ in range(4))
        first[axis], second[axis], last[axis], before_last[axis] = (
            slice(0, 1),
            slice(1, 2),
            slice(-1, None),
            slice(-2, -1),
        )
        diff[tuple(first)] = (volume[tuple(second)] - volume[tuple(first)]) / spacing
        diff[tuple(last)] = (volume[tuple(last)] - volume[tuple(before_last)]) / spacing
        total += diff * diff
    return np.sqrt(total)


def measure_input(scan: Scan) -> InputQC:
    """The gate's measures of ``scan`` (verdict not yet decided: ``"ok"``).

    Args:
        scan: any :class:`Scan` (world placement from its affine).
    Returns:
        :class:`InputQC` with ``ncc``, ``coverage``, ``head_scale``,
        ``voxel_mm`` and ``sharpness`` filled in.
    """
    tpl = load_template()
    k = _head_scale(scan)
    voxel = float(np.max(scan.voxel_size))
    if not np.isfinite(k):
        return InputQC(ncc=0.0, coverage=0.0, head_scale=k, voxel_mm=voxel, sharpness=0.0)
    lo, hi = HEAD_SCALE_RANGE
    k_used = float(np.clip(k, lo, hi))  # an absurd scale is reported, not followed
    grid = np.diag([k_used, k_used, k_used, 1.0]) @ tpl.affine
    on_template = resample_to_grid(scan.data, scan.affine, grid, tpl.shape)
    tissue = on_template[_mask()]
    q1, median, q3 = (float(q) for q in np.percentile(tissue, [25, 50, 75]))  # one sort for both measures
    ncc, coverage = _agreement(on_template, tissue, median)
    spacing = float(np.abs(tpl.affine[0, 0])) * k_used
    return InputQC(ncc=ncc, coverage=coverage, head_scale=k, voxel_mm=voxel,
                   sharpness=_sharpness(on_template, spacing, (q1, q3)))  # fmt: skip


def check_input(scan: Scan, trained: dict[str, Any] | None = None) -> InputQC:
    """Measure ``scan`` and decide: refuse, warn or ok.

    Args:
        scan: the scan about to be predicted.
        trained: what the model saw in training (``ModelInfo.input_stats
            ["scan"]``: ``voxel_mm_max``, ``sharpness`` ``[low, high]``);
            ``None`` for a model file without them (only the template
            checks and a 3 mm voxel limit apply).
    Returns:
        :class:`InputQC` with its ``verdict`` and ``reasons``.
    """
    qc = measure_input(scan)
    refuse: list[str] = []
    warn: list[str] = []
    lo, hi = HEAD_SCALE_RANGE
    fov, brain = field_of_view_mm(scan), _brain_extent_mm()
    partial = bool(np.any(fov < PARTIAL_FOV * brain))
    if partial:  # the size and coverage measures of a slab would blame the skull or the voxel sizes
        held = fov_coverage(scan)
        refuse.append(
            f"its field of view is {' x '.join(f'{v:.0f}' for v in fov)} mm, smaller than a whole brain "
            f"(about {' x '.join(f'{v:.0f}' for v in brain)} mm): a partial field of view (a slab or a cropped "
            f"scan) that holds {held:.0%} of the template's brain where the file places it; the "
            "model needs the whole brain"
            + (" (and this volume is not placed over the brain in MNI space at all)" if held < 0.01 else "")
        )
    elif not np.isfinite(qc.head_scale):
        refuse.append("the scan has no foreground to measure (empty, or a single intensity)")
    else:
        if not lo <= qc.head_scale <= hi:
            refuse.append(
                f"its foreground is {qc.head_scale:.2f} x the template brain's size, outside {lo}-{hi}: "
                "not a skull-stripped brain in mm (a head with its skull, or wrong voxel sizes)"
            )
        if qc.ncc < NCC_REFUSE:
            refuse.append(
                f"correlation with the MNI template {qc.ncc:.2f} < {NCC_REFUSE}: not a T1 brain aligned to MNI "
                "space (misplaced, another contrast, or not a brain)"
            )
        elif qc.ncc < NCC_WARN:
            warn.append(f"correlation with the MNI template {qc.ncc:.2f} < {NCC_WARN}: possibly misaligned")
        if qc.coverage < COVERAGE_REFUSE:
            refuse.append(f"the scan covers only {qc.coverage:.0%} of the template's brain")
    trained = trained or {}
    voxel_limit = float(trained.get("voxel_mm_max", VOXEL_MM_WARN / 1.25)) * 1.25
    if qc.voxel_mm > voxel_limit + 1e-6:
        warn.append(f"voxels of {qc.voxel_mm:.1f} mm are coarser than the model was trained on "
                    f"(up to {voxel_limit / 1.25:.1f} mm)")  # fmt: skip
    band = trained.get("sharpness")
    if band and not refuse:
        low, high = float(band[0]) / SHARPNESS_MARGIN, float(band[1]) * SHARPNESS_MARGIN
        if qc.sharpness < low:
            warn.append(f"the scan is smoother than any training scan (sharpness {qc.sharpness:.2f} < {low:.2f})")
        elif qc.sharpness > high:
            warn.append(f"the scan is noisier or sharper than any training scan "
                        f"(sharpness {qc.sharpness:.2f} > {high:.2f})")  # fmt: skip
    verdict = "refuse" if refuse else "warn" if warn else "ok"
    return InputQC(**{**qc.to_dict(), "verdict": verdict, "reasons": tuple(refuse or warn)})


def require_input(scan: Scan, trained: dict[str, Any] | None = None, name: str = "the scan") -> InputQC:
    """:func:`check_input`, raising :class:`InputRefused` on a refusal with
    a message that says what is wrong and how to prepare the scan."""
    qc = check_input(scan, trained)
    if qc.verdict == "refuse":
        raise InputRefused(
            f"{name} was refused by the input check: {'; '.join(qc.reasons)}. Prepare it first (the panel's "
            "Prepare button, or `hyperfusion prepare SCAN --out DIR`), or check that it is a skull-stripped T1.",
            qc,
        )
    return qc
