"""Finding DICOM series: which files a folder, a file or a DICOMDIR holds,
read header by header (never a pixel), grouped by Series Instance UID.

The walk is bounded before anything is parsed: a folder with more than
:data:`MAX_FILES` entries is refused while it is being listed, so pointing
the tool at a PACS export of 100,000 files costs a directory listing, not an
hour of parsing or gigabytes of memory. A file is taken as DICOM when it
carries the Part 10 signature (``DICM`` after the 128-byte preamble); files
without it (notes, thumbnails, ``.DS_Store``) are skipped and counted.

Example:
    >>> series = find_series("study_folder")      # list[Series], headers only
    >>> [s.describe() for s in series]
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ImageError
from .text import plain_text

__all__ = [
    "MAX_FILES",
    "Frame",
    "Series",
    "find_series",
    "is_dicom_file",
    "read_header",
    "scrub_uids",
    "series_key",
    "shown_name",
]

_UID = re.compile(r"[0-9]+(?:\.[0-9]+){4,}")
MAX_FRAMES = 4096  # frames in one enhanced file: a 0.25 mm whole-head stack is under 1000
MAX_FILES = 20_000  # a 0.5 mm whole-head series is under 600 slices; a study folder a few thousand
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
ENHANCED_MR_CLASSES = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4")
# the header fields read from each file: enough to group, place and scale its slices
_HEADER_TAGS = [
    "SOPClassUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "SeriesNumber",
    "Modality",
    "ImageType",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "RescaleSlope",
    "RescaleIntercept",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "PixelRepresentation",
    "Manufacturer",
    "MagneticFieldStrength",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
]


@dataclass(frozen=True)
class Frame:
    """One 2D slice of a series: a classic file, or one frame of an
    enhanced multi-frame file. Positions are DICOM patient coordinates
    (LPS, mm); ``spacing`` is Pixel Spacing (between rows, between columns)."""

    path: Path
    index: int | None  # the frame's number in an enhanced file; None for a one-slice file
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, ...] | None
    rows: int
    columns: int
    slope: float = 1.0
    intercept: float = 0.0


@dataclass
class Series:
    """The slices sharing one Series Instance UID, with the header fields
    that decide whether and how they are read. No identifying field is kept."""

    uid: str
    description: str = ""
    number: int | None = None
    modality: str = ""
    image_type: tuple[str, ...] = ()
    transfer_syntaxes: set[str] = field(default_factory=set)
    photometric: str = "MONOCHROME2"
    samples_per_pixel: int = 1
    manufacturer: str = ""
    field_strength: float | None = None
    enhanced: bool = False
    frames: list[Frame] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A short name for the series that is not its UID (UIDs identify)."""
        return series_key(self.uid)

    @property
    def n_slices(self) -> int:
        return len(self.frames)

    @property
    def orientation(self) -> str:
        """``axial``, ``sagittal``, ``coronal``, ``oblique (near axial)``, ...,
        or ``mixed`` / ``unknown``, from the slices' normal."""
        found = {f.orientation for f in self.frames if f.orientation is not None}
        if not found or any(len(o) != 6 for o in found):
            return "unknown"
        cosines = np.array(sorted(found), dtype=float)
        if np.abs(cosines - cosines[0]).max() > 1e-4:
            return "mixed"
        normal = np.cross(cosines[0][:3], cosines[0][3:])
        axis = int(np.argmax(np.abs(normal)))
        name = ("sagittal", "coronal", "axial")[axis]
        tilt = np.degrees(np.arccos(min(1.0, abs(float(normal[axis])) / max(np.linalg.norm(normal), 1e-12))))
        return name if tilt < 1.0 else f"oblique (near {name})"

    def describe(self) -> str:
        """One line for a list of series: key, description, slices, plane."""
        text = self.description or "(no description)"
        return f"{self.key}  {text}  {self.n_slices} slice(s)  {self.orientation}  {self.modality or '?'}"


def series_key(uid: str) -> str:
    """A name for a series (or any UID) that does not disclose it.

    Args:
        uid: a Series Instance UID (any text).

    Returns:
        The first six hex digits of its SHA-256.
    """
    return hashlib.sha256(uid.encode()).hexdigest()[:6]


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether the file carries the DICOM Part 10 signature (no parsing)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _list_files(folder: Path, max_files: int, recursive: bool = True) -> list[Path]:
    """Every file under ``folder`` (symbolic links not followed; only the
    folder itself unless ``recursive``), refused as soon as the count passes
    ``max_files``: nothing is parsed before."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        if not recursive:
            dirs.clear()
        dirs.sort()
        for name in sorted(files):
            found.append(Path(root) / name)
            if len(found) > max_files:
                raise ImageError(
                    f"{folder.name} holds more than {max_files:,} files; that is a study archive, not a series. "
                    "Open the folder of one series (a T1 series is a few hundred files)"
                )
    return found


def _dicomdir_files(path: Path, max_files: int) -> list[Path]:
    """The image files a DICOMDIR lists, resolved beside it (at most ``max_files``)."""
    from pydicom import dcmread

    try:
        ds = dcmread(path)
    except Exception as err:  # pydicom and zlib raise many types for a damaged file
        text = plain_text(str(err), 120)
        raise ImageError(f"{shown_name(path)} cannot be read as a DICOMDIR ({type(err).__name__}: {text})") from None
    if len(ds.get("DirectoryRecordSequence", [])) > max_files:
        raise ImageError(
            f"{shown_name(path)} lists more than {max_files:,} files; that is an archive, not a series. "
            "Open the folder of one series"
        )
    out = []
    for record in ds.get("DirectoryRecordSequence", []):
        ref = record.get("ReferencedFileID")
        if ref is None:
            continue
        parts = [ref] if isinstance(ref, str) else list(ref)
        out.append(path.parent.joinpath(*[str(p) for p in parts]))
    if not out:
        raise ImageError(f"{path.name} is a DICOMDIR that lists no image files")
    return out


def _value(ds: Any, name: str, default: Any = None) -> Any:
    element = ds.get(name)
    return default if element is None or element == "" else element


def _floats(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if all(np.isfinite(out)) else None


def _group(ds: Any, sequence: str, attribute: str, per_frame: Any) -> Any:
    """An enhanced file's attribute: the frame's own functional group first,
    then the shared one."""
    shared = _value(ds, "SharedFunctionalGroupsSequence")
    for groups in (per_frame, shared[0] if shared else None):
        items = None if groups is None else groups.get(sequence)
        if items:
            value = items[0].get(attribute)
            if value is not None:
                return value
    return None


def _frames_of(ds: Any, path: Path) -> list[Frame]:
    """The slices one file holds (one, or an enhanced file's frames)."""
    rows, columns = int(_value(ds, "Rows", 0)), int(_value(ds, "Columns", 0))
    n_frames = int(_value(ds, "NumberOfFrames", 1) or 1)
    per_frame = _value(ds, "PerFrameFunctionalGroupsSequence")
    if not 1 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"Number of Frames is {n_frames}, not 1 to {MAX_FRAMES}")
    if per_frame is not None and len(per_frame) != n_frames:
        raise ValueError(f"{len(per_frame)} per-frame functional groups for {n_frames} frames")
    if per_frame is None and n_frames == 1:
        return [
            Frame(
                path,
                None,
                _floats(_value(ds, "ImagePositionPatient")),
                _floats(_value(ds, "ImageOrientationPatient")),
                _floats(_value(ds, "PixelSpacing")),
                rows,
                columns,
                float(_value(ds, "RescaleSlope", 1.0)),
                float(_value(ds, "RescaleIntercept", 0.0)),
            )
        ]
    out = []
    for k in range(n_frames):
        groups = per_frame[k] if per_frame is not None and k < len(per_frame) else None
        slope = _group(ds, "PixelValueTransformationSequence", "RescaleSlope", groups)
        intercept = _group(ds, "PixelValueTransformationSequence", "RescaleIntercept", groups)
        out.append(
            Frame(
                path,
                k,
                _floats(_group(ds, "PlanePositionSequence", "ImagePositionPatient", groups)),
                _floats(_group(ds, "PlaneOrientationSequence", "ImageOrientationPatient", groups)),
                _floats(_group(ds, "PixelMeasuresSequence", "PixelSpacing", groups)),
                rows,
                columns,
                1.0 if slope is None else float(slope),
                0.0 if intercept is None else float(intercept),
            )
        )
    return out


def _header_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged or truncated header can raise: pydicom's own
    errors, zlib's for a broken deflated file, and our conversions of
    nonsense values (``int("abc")``); a damaged file is a refusal, never a crash."""
    return (Exception,)


def _words(value: Any) -> tuple[str, ...]:
    """A multi-valued string element as its values (a single value is one word, not its letters)."""
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(plain_text(str(v), 32) for v in values)


def _new_series(ds: Any, uid: str) -> Series:
    """A series' fields from the header of its first file (nothing identifying)."""
    strength = _floats([_value(ds, "MagneticFieldStrength")]) if _value(ds, "MagneticFieldStrength") else None
    number = _value(ds, "SeriesNumber")
    return Series(
        uid=uid,
        description=plain_text(str(_value(ds, "SeriesDescription", "")), 64),
        number=int(number) if number is not None else None,
        modality=plain_text(str(_value(ds, "Modality", "")), 16),
        image_type=_words(_value(ds, "ImageType")),
        photometric=plain_text(str(_value(ds, "PhotometricInterpretation", "MONOCHROME2")), 32),
        samples_per_pixel=int(_value(ds, "SamplesPerPixel", 1)),
        manufacturer=plain_text(str(_value(ds, "Manufacturer", "")), 64),
        field_strength=strength[0] if strength else None,
    )


def scrub_uids(text: str) -> str:
    """``text`` with every DICOM UID in it (five or more dot-separated
    numbers, as PACS and archives name files and folders) replaced by
    ``uid-<key>``: UIDs identify a patient's study."""
    return _UID.sub(lambda m: f"uid-{series_key(m.group())}", text)


def shown_name(path: Path) -> str:
    """A file or folder's name for a message: plain text, UIDs replaced by their key."""
    return plain_text(scrub_uids(path.name or str(path)), 80)


def read_header(path: Path) -> Any:
    """The header fields this reader uses (no pixels, no identifying field),
    as a pydicom ``Dataset``; raises what pydicom raises."""
    from pydicom import dcmread

    return dcmread(path, stop_before_pixels=True, defer_size="4 KB", specific_tags=_HEADER_TAGS)


def find_series(
    source: str | os.PathLike,
    max_files: int = MAX_FILES,
    progress: Callable[[int, int], None] | None = None,
) -> list[Series]:
    """The DICOM series a folder, a file or a DICOMDIR holds.

    A single classic file stands for its whole series: the files beside it
    with the same Series Instance UID. An enhanced multi-frame file stands
    for itself.

    Args:
        source: a folder (searched with its subfolders), a DICOM file, or a
            DICOMDIR.
        max_files: the most files a folder may hold (checked while listing).
        progress: called as ``progress(done, total)`` while headers are read.

    Returns:
        The series, largest first; each with its slices in file order (not
        yet sorted in space).

    Raises:
        ImageError: no such path, too many files, no DICOM file at all, or
            damaged DICOM files (named).
    """

    source = Path(source)
    if not source.exists():
        raise ImageError(f"{source}: no such file or folder")
    only_uid = None
    if source.is_dir():
        files = _list_files(source, max_files)
        where = source
    elif source.name.upper() == "DICOMDIR":
        files = _dicomdir_files(source, max_files)
        where = source.parent
    else:
        if not is_dicom_file(source):
            raise ImageError(
                f"{shown_name(source)} is not a DICOM file (no 'DICM' signature after the 128-byte preamble); "
                "files written without the DICOM Part 10 header can be converted with dcmconv or gdcmconv"
            )
        try:
            head = read_header(source)
            multi_frame = int(_value(head, "NumberOfFrames", 1) or 1) > 1
        except _header_errors() as err:
            text = plain_text(str(err), 120)
            raise ImageError(f"{shown_name(source)} is truncated or damaged ({type(err).__name__}: {text})") from None
        if multi_frame or str(_value(head, "SOPClassUID", "")) in ENHANCED_MR_CLASSES:
            files = [source]
        else:
            files = _list_files(source.parent, max_files, recursive=False)
            only_uid = str(_value(head, "SeriesInstanceUID", ""))
        where = source.parent
    by_uid: dict[str, Series] = {}
    damaged: list[str] = []
    n_dicom = 0
    for i, path in enumerate(files):
        if progress is not None:
            progress(i, len(files))
        if not is_dicom_file(path):
            continue
        n_dicom += 1
        try:
            ds = read_header(path)
            if str(_value(ds, "SOPClassUID", "")) == DICOMDIR_CLASS:
                continue  # a DICOMDIR inside the folder: its files are in the folder too
            uid = str(_value(ds, "SeriesInstanceUID", ""))
            if only_uid is not None and uid != only_uid:
                continue
            frames = _frames_of(ds, path)
            series = by_uid.get(uid) or _new_series(ds, uid)
        except _header_errors() as err:
            damaged.append(f"{shown_name(path)} ({type(err).__name__}: {plain_text(str(err), 120)})")
            continue
        by_uid[uid] = series
        series.enhanced |= str(_value(ds, "SOPClassUID", "")) in ENHANCED_MR_CLASSES or len(frames) > 1
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        series.transfer_syntaxes.add(str(tsyntax) if tsyntax else "")
        series.frames.extend(frames)
    if progress is not None:
        progress(len(files), len(files))
    if damaged:
        shown = "; ".join(damaged[:3]) + (f"; and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        raise ImageError(f"{len(damaged)} DICOM file(s) in {shown_name(where)} are truncated or damaged: {shown}")
    if not by_uid:
        if n_dicom:
            raise ImageError(f"{shown_name(where)} holds {n_dicom} DICOM file(s) but no image series")
        raise ImageError(
            f"{shown_name(source)} holds no DICOM file ({len(files)} file(s) looked at, none with the DICOM "
            "signature); open the folder that holds the series' .dcm files"
        )
    return sorted(by_uid.values(), key=lambda s: (-s.n_slices, s.number if s.number is not None else 1 << 30))
