"""Synthetic DICOM series written from a volume in world space: the test
data of the DICOM reader (no real series can ship), and a way to show a
clinician the plugin on the files a scanner gives.

Each series is MR, one classic file a slice (or one enhanced multi-frame
file), int16 pixels with a Rescale Slope / Intercept where the values are
not whole numbers, file names and Instance Numbers shuffled, so a reader
that trusts either gets it wrong. Its header carries made-up patient,
visit and institution identifiers (:data:`SYNTHETIC_IDENTITY`), which the
tests look for in everything the tool writes.

Example:
    >>> data, affine = ...                       # [X, Y, Z], voxel -> RAS mm
    >>> write_series(data, affine, "out/t1_axial", acquisition="axial")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["SYNTHETIC_IDENTITY", "ACQUISITIONS", "quantize", "write_series"]

# made-up identifiers: the identifier test searches every output for each of these values
SYNTHETIC_IDENTITY = {
    "PatientName": "Zqxvort^Elspeth",
    "PatientID": "ZQX-4471-PID",
    "PatientBirthDate": "19480317",
    "PatientSex": "F",
    "PatientAge": "077Y",
    "OtherPatientIDs": "ZQX-OTHER-9923",
    "PatientAddress": "17 Qwzzy Lane",
    "AccessionNumber": "ACC99817263",
    "StudyID": "STQ8812",
    "InstitutionName": "Hospital of Qwzzy Ridge",
    "InstitutionAddress": "1 Ridge Road, Qwzzyton",
    "ReferringPhysicianName": "Drqwill^Hortense",
    "OperatorsName": "Opqwerty^Tamsin",
    "StationName": "QWZSTATION7",
    "DeviceSerialNumber": "SN-88Q1-77",
    "StudyDate": "20250611",
    "SeriesDate": "20250611",
    "StudyTime": "101357",
    "StudyDescription": "BRAIN Qwzzy research protocol",
}
# (the array axis the slices step along, flips of the other two) in canonical RAS input
ACQUISITIONS = {
    "axial": (2, True),  # rows run anterior -> posterior, columns right -> left: how scanners write axials
    "sagittal": (0, False),
    "coronal": (1, True),
}
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"


def quantize(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Store values as int16 with a slope and intercept, as scanners do.

    Args:
        data: ``[X, Y, Z]`` values.

    Returns:
        ``(decoded float32 [X, Y, Z], stored int16 [X, Y, Z], slope,
        intercept)``: ``decoded`` is what a reader gets back (stored x slope
        + intercept in float64, then float32), so a NIfTI made of it holds
        the very values the series does. Whole-number data in int16's range
        is stored as it is (slope 1, intercept 0).
    """
    data = np.asarray(data)
    if data.dtype.kind in "iu" and data.min() >= -32768 and data.max() <= 32767:
        return data.astype(np.float32), data.astype(np.int16), 1.0, 0.0
    low, high = float(data.min()), float(data.max())
    intercept = float(f"{low:.6g}")
    slope = float(f"{max(high - intercept, 1e-6) / 30000:.6g}")  # short decimals: DS strings hold them exactly
    stored = np.clip(np.round((data.astype(np.float64) - intercept) / slope), -32768, 32767).astype(np.int16)
    decoded = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    return decoded, stored, slope, intercept


def _flip(data: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    flip = np.eye(4)
    flip[axis, axis] = -1
    flip[axis, 3] = data.shape[axis] - 1
    return np.flip(data, axis), affine @ flip


def _ds(value: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def write_series(
    data: np.ndarray,
    affine: np.ndarray,
    folder: str | Path,
    acquisition: str = "axial",
    description: str = "T1 MPRAGE SYNTHETIC",
    seed: int = 0,
    enhanced: bool = False,
    series_number: int = 3,
    identity: dict[str, str] | None = None,
) -> list[Path]:
    """Write a volume as a DICOM series (LPS patient coordinates).

    Args:
        data: ``[X, Y, Z]`` voxel values (float or integer), canonical RAS.
        affine: ``[4, 4]`` voxel -> RAS mm; any rotation (oblique) is kept.
        folder: where the files go (created).
        acquisition: ``axial``, ``sagittal`` or ``coronal``: which axis the
            slices step along, and the usual flips of that plane.
        description: the Series Description.
        seed: shuffles file names and Instance Numbers, and makes the UIDs.
        enhanced: one Enhanced MR multi-frame file instead of a file a slice
            (its frames also in shuffled order).
        series_number: the Series Number.
        identity: identifying header fields; :data:`SYNTHETIC_IDENTITY` by default.

    Returns:
        The files written.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian

    slice_axis, flip_in_plane = ACQUISITIONS[acquisition]
    _, stored, slope, intercept = quantize(data)
    affine = np.asarray(affine, dtype=float)
    volume = stored
    if flip_in_plane:
        for axis in (a for a in range(3) if a != slice_axis):
            volume, affine = _flip(volume, affine, axis)
    order = [a for a in range(3) if a != slice_axis] + [slice_axis]
    volume = np.transpose(volume, order)  # [column, row, slice]
    affine = affine[:, order + [3]]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    row_dir = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    col_dir = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    spacing = [_ds(np.linalg.norm(lps[:3, 1])), _ds(np.linalg.norm(lps[:3, 0]))]  # between rows, between columns
    thickness = _ds(np.linalg.norm(lps[:3, 2]))
    n = volume.shape[2]
    rng = np.random.default_rng(seed)
    instance = rng.permutation(n) + 1
    study_uid, series_uid, frame_uid = _uid(seed, "study"), _uid(seed, description, "series"), _uid(seed, "frame")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def base(sop_class: str, sop_uid: str) -> Dataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        for keyword, value in (SYNTHETIC_IDENTITY if identity is None else identity).items():
            setattr(ds, keyword, value)
        ds.Modality = "MR"
        ds.Manufacturer = "SYNTHETIC (napari-hyperfusion)"
        ds.MagneticFieldStrength = "3"
        ds.SeriesDescription = description
        ds.SeriesNumber = series_number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        return ds

    def position(k: int) -> list[str]:
        return [_ds(v) for v in (lps @ [0.0, 0.0, float(k), 1.0])[:3]]

    orientation = [_ds(v) for v in (*row_dir, *col_dir)]
    if not enhanced:
        written = []
        names = rng.permutation(n)
        for k in range(n):
            ds = base(MR_IMAGE, _uid(seed, description, k))
            ds.InstanceNumber = int(instance[k])
            ds.ImagePositionPatient = position(k)
            ds.ImageOrientationPatient = orientation
            ds.PixelSpacing = spacing
            ds.SliceThickness = thickness
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
            ds.PixelData = np.ascontiguousarray(volume[:, :, k].T).astype("<i2").tobytes()
            path = folder / f"IM{names[k]:05d}"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
        return written
    frame_order = rng.permutation(n)
    ds = base(ENHANCED_MR_IMAGE, _uid(seed, description, "enhanced"))
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n
    shared = Dataset()
    measures, plane, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = spacing, thickness
    plane.ImageOrientationPatient = orientation
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = _ds(slope), _ds(intercept), "US"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([plane])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in frame_order:
        item, where = Dataset(), Dataset()
        where.ImagePositionPatient = position(int(k))
        item.PlanePositionSequence = Sequence([where])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    frames = np.stack([volume[:, :, k].T for k in frame_order])
    ds.PixelData = np.ascontiguousarray(frames).astype("<i2").tobytes()
    path = folder / "ENHANCED_MR.dcm"
    ds.save_as(path, enforce_file_format=True)
    return [path]
