"""Prepare a scan: from a T1 as it comes from the scanner to the models'
space, by registration to the shipped MNI152 template (SimpleITK, the
optional extra ``[prep]``).

Steps, each reported to ``progress``:

1. the scan is read in canonical RAS (any orientation, voxel size and field
   of view; :func:`~napari_hyperfusion.data.preprocess.load_scan`);
2. a rigid (6 parameters) then an affine (12 parameters) registration to the
   template T1, multi-resolution (4, 2, 1 x the template's 2 mm), Mattes
   mutual information (so the scanner's intensity scale does not matter),
   started from the images' centres of mass;
3. optionally a B-spline (deformable) refinement on a 5-node grid;
4. the scan is resampled onto the template grid (80 x 96 x 80) and masked
   with the template's intracranial mask ("the template's mask carried
   back"), which is the brain masking: it removes what lies outside the
   template's brain after alignment;
5. the voxel size of the result is the template's 2 mm times the head's
   linear scale (``|det|^(1/3)`` of the affine), so world-space volumes stay
   the subject's. This is the convention the models were trained on (the
   synthetic scans are stored the same way): they read absolute volumes, and
   an affine registration alone would normalise the head size away.

What it can and cannot handle: a skull-stripped or defaced T1 in any
orientation, voxel size and field of view, misplaced by rotations up to
about 30 degrees and shifts of centimetres. A scan that still has its skull
is aligned by its head outline and masked with the template's brain, so
scalp and skull near the brain's edge remain and the quality check reports
a lower correlation; brain extraction proper (e.g. HD-BET or SynthStrip) is
not part of this package. A left-right flip in the header is not detected:
the brain is nearly symmetric, so a flipped scan aligns as well (NCC 0.93
measured) and stays flipped. Other contrasts (T2, FLAIR) align by mutual
information but are not what the models were trained on.

Quality is measured after alignment, inside the template's brain mask
(:class:`RegistrationQC`): the normalised cross-correlation with the
template T1 and the fraction of the mask the scan covers.

Example:
    >>> prepared = prepare_scan(load_scan("native_t1.nii.gz"))
    >>> prepared.scan.data.shape, prepared.qc.ncc       # (80, 96, 80), 0.9...
    >>> write_prepared(prepared, "out/", "native_t1")    # NIfTI + .tfm + QC JSON
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HyperFusionError, ImageError
from .dicom import scrub_uids
from .input_qc import COVERAGE_REFUSE, NCC_REFUSE, NCC_WARN, template_agreement
from .preprocess import Scan, scan_from_array
from .template import load_template

__all__ = [
    "PrepUnavailable",
    "PrepCancelled",
    "RegistrationQC",
    "PreparedScan",
    "head_scale",
    "prepare_scan",
    "write_prepared",
    "to_native",
    "registration_qc",
    "qc_verdict",
    "PREP_INSTALL",
    "require_prep",
]

PREP_INSTALL = 'pip install "napari-hyperfusion[prep]"'
Progress = Callable[[float, str], None]


class PrepUnavailable(HyperFusionError, ImportError):
    """SimpleITK (the extra ``[prep]``) is not installed."""


class PrepCancelled(HyperFusionError):
    """Raised when ``should_stop()`` turned true during a registration."""


def require_prep() -> None:
    """Raise :class:`PrepUnavailable` (saying what to install) unless SimpleITK is there."""
    _sitk()


def _sitk() -> Any:
    try:
        import SimpleITK as sitk
    except ImportError:
        raise PrepUnavailable(
            f"preparing a scan needs SimpleITK, in the optional extra [prep]: {PREP_INSTALL}"
        ) from None
    return sitk


# RAS (nibabel, MNI) <-> LPS (ITK): x and y change sign
_LPS = np.diag([-1.0, -1.0, 1.0])


def _to_sitk(data: np.ndarray, affine: np.ndarray) -> Any:
    """A RAS voxel->mm volume ``[X, Y, Z]`` as a SimpleITK image (LPS)."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0)), dtype=np.float32))
    linear = _LPS @ affine[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (linear / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in _LPS @ affine[:3, 3]))
    return image


def _from_sitk(image: Any) -> np.ndarray:
    return np.transpose(_sitk().GetArrayFromImage(image), (2, 1, 0)).astype(np.float32)


@dataclass(frozen=True)
class RegistrationQC:
    """How well a prepared scan sits on the template, inside its brain mask.

    ``ncc``: normalised cross-correlation with the template T1 (1 = the same
    image up to brightness and contrast); ``coverage``: fraction of the mask
    where the scan has tissue (above 10 % of its median inside the mask);
    ``metric``: the final Mattes mutual information (negative, lower is
    better; for reference).
    """

    ncc: float
    coverage: float
    metric: float = float("nan")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass
class PreparedScan:
    """A scan on the template grid in MNI mm, with the transform that put it
    there. ``transform`` maps template (MNI) points to the native scan's
    points (ITK's convention for a registration's result); ``native`` is the
    scan as it was read (canonical RAS)."""

    scan: Scan
    native: Scan
    transform: Any
    qc: RegistrationQC
    stages: tuple[str, ...]

    @property
    def head_scale(self) -> float:
        """The head's linear size relative to the template's (see :func:`head_scale`)."""
        return head_scale(self.transform)


def qc_verdict(qc: RegistrationQC) -> tuple[str, str]:
    """``("ok" | "warn" | "refuse", reason)`` for a prepared scan's QC, with
    the input gate's thresholds (:mod:`~napari_hyperfusion.data.input_qc`):
    a prepared scan that passes here passes the gate before a prediction."""
    if qc.coverage < COVERAGE_REFUSE:
        return "refuse", f"the scan covers only {qc.coverage:.0%} of the template's brain after alignment"
    if qc.ncc < NCC_REFUSE:
        return "refuse", (
            f"correlation with the template {qc.ncc:.2f} < {NCC_REFUSE}: not a T1 brain that aligns with it "
            "(another contrast, or not a brain)"
        )
    if qc.ncc < NCC_WARN:
        return "warn", f"correlation with the template {qc.ncc:.2f} is below the usual {NCC_WARN}: check the overlay"
    return "ok", f"correlation with the template {qc.ncc:.2f}, brain coverage {qc.coverage:.0%}"


def registration_qc(data: np.ndarray, metric: float = float("nan")) -> RegistrationQC:
    """:class:`RegistrationQC` of a volume already on the template grid.

    Args:
        data: ``[80, 96, 80]`` float, on the template grid.
    Returns:
        the correlation and coverage inside the template's brain mask
        (:func:`~napari_hyperfusion.data.input_qc.template_agreement`).
    """
    ncc, coverage = template_agreement(data)
    return RegistrationQC(ncc=ncc, coverage=coverage, metric=float(metric))


def _register(
    sitk: Any,
    fixed: Any,
    moving: Any,
    initial: Any,
    kind: str,
    report: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> tuple[Any, float]:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed=0)  # seeded: the same scan gives the same result
    reg.SetInterpolator(sitk.sitkLinear)
    iterations = {"rigid": 150, "affine": 150, "deformable": 60}[kind]
    if kind == "deformable":
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations)
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1, 0])
        reg.SetMovingInitialTransform(initial)
        reg.SetInitialTransform(sitk.BSplineTransformInitializer(fixed, [5, 5, 5]), inPlace=True)
        levels = 2
    else:
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.6
        )
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        reg.SetSmoothingSigmasPerLevel([2, 1, 0])
        reg.SetInitialTransform(initial, inPlace=True)  # optimised in place: ``initial`` is the result
        levels = 3
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    state = {"level": 0, "stopped": False}

    def on_iteration() -> None:
        if should_stop():
            state["stopped"] = True
            reg.StopRegistration()
        report(min(1.0, (state["level"] + reg.GetOptimizerIteration() / iterations) / levels))

    def on_level() -> None:
        state["level"] = reg.GetCurrentLevel()

    reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
    reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
    result = reg.Execute(fixed, moving)
    if state["stopped"]:
        raise PrepCancelled("Cancelled: the scan was not prepared")
    if kind == "deformable":
        return sitk.CompositeTransform([initial, result]), float(reg.GetMetricValue())
    return initial, float(reg.GetMetricValue())


def prepare_scan(
    scan: Scan,
    deformable: bool = False,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PreparedScan:
    """Register ``scan`` to the template and resample it into MNI space.

    Args:
        scan: a T1 in canonical RAS (``load_scan``), any voxel size / field of view.
        deformable: add a B-spline refinement after the affine stage.
        progress: called with ``(fraction in [0, 1], stage name)``.
        should_stop: polled every optimiser iteration; when true the
            registration stops and :class:`PrepCancelled` is raised.

    Returns:
        :class:`PreparedScan`: the scan on the template grid ``[80, 96, 80]``
        (2 mm, MNI), masked to the template's brain, with its QC.

    Raises:
        PrepUnavailable: SimpleITK is not installed (extra ``[prep]``).
        ImageError: the scan has no usable intensities.
        PrepCancelled: ``should_stop()`` turned true.
    """
    sitk = _sitk()
    tpl = load_template()
    stages = ("rigid", "affine", *(("deformable",) if deformable else ()), "resample")
    weights = {"rigid": 0.35, "affine": 0.35, "deformable": 0.25, "resample": 0.05}
    total = sum(weights[s] for s in stages)
    done = 0.0

    def reporter(stage: str) -> Callable[[float], None]:
        def report(fraction: float) -> None:
            if progress is not None:
                progress(min(1.0, (done + weights[stage] * fraction) / total), stage)

        return report

    data = np.asarray(scan.data, dtype=np.float32)
    if np.count_nonzero(data > 0) < 1000:
        raise ImageError("the scan has fewer than 1,000 voxels above zero: nothing to register")
    fixed = _to_sitk(tpl.t1, tpl.affine)
    moving = _to_sitk(data, scan.affine)
    initial = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
        )
    )
    rigid, metric = _register(sitk, fixed, moving, initial, "rigid", reporter("rigid"), should_stop)
    done += weights["rigid"]
    affine_start = sitk.AffineTransform(3)
    affine_start.SetMatrix(rigid.GetMatrix())
    affine_start.SetTranslation(rigid.GetTranslation())
    affine_start.SetCenter(rigid.GetCenter())
    transform, metric = _register(sitk, fixed, moving, affine_start, "affine", reporter("affine"), should_stop)
    done += weights["affine"]
    if deformable:
        transform, metric = _register(sitk, fixed, moving, transform, "deformable", reporter("deformable"), should_stop)
        done += weights["deformable"]
    if should_stop():
        raise PrepCancelled("Cancelled: the scan was not prepared")
    resampled = _from_sitk(sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    resampled *= (tpl.regions["intracranial"] > 0.5).astype(np.float32)
    reporter("resample")(1.0)
    # keep the head's size: the voxels stay on the registered grid while the
    # voxel size carries the scale the affine removed, the convention the
    # models were trained on (world-space volumes are the subject's)
    prepared = scan_from_array(resampled, _head_size_affine(transform, tpl.affine), name="prepared scan")
    return PreparedScan(
        scan=prepared, native=scan, transform=transform, qc=registration_qc(resampled, metric), stages=stages
    )


def head_scale(transform: Any) -> float:
    """The linear scale of a template -> native transform, ``|det|^(1/3)``
    of its affine part (1.1: the native head is 10 % larger than the
    template's in each direction)."""
    sitk = _sitk()
    t = transform
    if isinstance(t, sitk.CompositeTransform):
        t = t.GetNthTransform(0)
    matrix = np.asarray(t.GetMatrix(), dtype=np.float64).reshape(3, 3)
    return float(abs(np.linalg.det(matrix)) ** (1.0 / 3.0))


def _head_size_affine(transform: Any, template_affine: np.ndarray) -> np.ndarray:
    k = head_scale(transform)
    return np.diag([k, k, k, 1.0]) @ template_affine


def to_native(volume: np.ndarray, prepared: PreparedScan, order: int = 1) -> np.ndarray:
    """Bring a volume on the template grid (e.g. an attribution map resampled
    to it) back onto the native scan's grid, through the saved transform.

    Args:
        volume: ``[80, 96, 80]`` on the template grid.
        prepared: the :class:`PreparedScan` the volume belongs to.
        order: 0 nearest neighbour (labels), 1 linear.
    Returns:
        float32 ``[X, Y, Z]`` on ``prepared.native``'s grid (0 outside).
    """
    sitk = _sitk()
    tpl = load_template()
    image = _to_sitk(np.asarray(volume, dtype=np.float32), tpl.affine)  # the registered grid
    reference = _to_sitk(np.zeros(prepared.native.data.shape, np.float32), prepared.native.affine)
    inverse = prepared.transform.GetInverse()
    method = sitk.sitkNearestNeighbor if order == 0 else sitk.sitkLinear
    return _from_sitk(sitk.Resample(image, reference, inverse, method, 0.0, sitk.sitkFloat32))


def write_prepared(prepared: PreparedScan, out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>_mni.nii.gz`` (the prepared scan), ``<stem>_to_mni.tfm``
    (the transform, ITK text format) and ``<stem>_prep.json`` (QC and
    provenance) into ``out_dir``. Returns the paths by kind."""
    import nibabel as nib

    sitk = _sitk()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "scan": out / f"{stem}_mni.nii.gz",
        "transform": out / f"{stem}_to_mni.tfm",
        "qc": out / f"{stem}_prep.json",
    }
    img = nib.Nifti1Image(prepared.scan.data, prepared.scan.affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"prepared: registered to MNI152 2009a"
    img.header.set_sform(prepared.scan.affine, code=4)  # 4: MNI152
    img.header.set_qform(prepared.scan.affine, code=4)
    nib.save(img, str(paths["scan"]))
    sitk.WriteTransform(prepared.transform, str(paths["transform"]))
    info = {
        # the user's own path, with any DICOM UID in it (archives name folders by UID) replaced by its key
        "source": scrub_uids(str(prepared.native.path)) if prepared.native.path else None,
        "native_shape": list(prepared.native.data.shape),
        "native_voxel_mm": [float(v) for v in prepared.native.voxel_size],
        "stages": list(prepared.stages),
        "template": "MNI152 ICBM 2009a (nonlinear), 2 mm, shipped in sample_data/template",
        "qc": prepared.qc.to_dict(),
        "transform_convention": "ITK: maps template (MNI, LPS) points to native scan points",
    }
    paths["qc"].write_text(json.dumps(info, indent=2))
    return paths
