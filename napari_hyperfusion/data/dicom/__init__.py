"""DICOM series as scans: found (:mod:`.discover`), placed in space
(:mod:`.geometry`), read (:mod:`.volume`) and described without a single
identifying header field (:func:`safe_metadata`).

Parsing is pydicom's (pure Python, no compiled parts, so it is a core
dependency; compressed transfer syntaxes need its optional decoder plugins,
which the refusal names).

What is kept from the headers: the series description, modality,
manufacturer, field strength, number of slices, orientation, voxel sizes and
transfer syntax name, and a six-digit key hashed from the Series Instance
UID. Everything else (patient name, ID, birth date, sex, age, accession
number, institution, physicians, dates, times, station, serial numbers and
every UID) is never read into anything the tool shows or writes.

Example:
    >>> volume = open_dicom("t1_folder")                 # one series, or refused
    >>> volume = open_dicom("study", series="3fa2b1")    # one of several
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import ImageError
from .discover import MAX_FILES, Frame, Series, find_series, is_dicom_file, scrub_uids, series_key, shown_name
from .geometry import MIN_SLICES, stack_geometry
from .text import plain_text
from .volume import DicomVolume, check_readable, read_series, series_name

__all__ = [
    "MAX_FILES",
    "MIN_SLICES",
    "DicomVolume",
    "Frame",
    "Series",
    "SeriesChoiceError",
    "check_readable",
    "choose_series",
    "find_series",
    "is_dicom_file",
    "is_dicom_source",
    "open_dicom",
    "plain_text",
    "read_series",
    "safe_metadata",
    "scrub_uids",
    "series_key",
    "shown_name",
    "series_name",
    "stack_geometry",
]

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


class SeriesChoiceError(ImageError):
    """A folder holds several series and none was chosen; ``series`` lists them."""

    def __init__(self, message: str, series: list[Series]):
        super().__init__(message)
        self.series = series


def is_dicom_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` is for the DICOM reader, decided without parsing.

    Args:
        path: any path.

    Returns:
        True for a folder (which :func:`find_series` then searches), a
        DICOMDIR, a ``.dcm`` / ``.dicom`` / ``.ima`` file or a file with the
        DICOM signature.
    """
    path = Path(path)
    if path.is_dir():
        return True
    return path.name.upper() == "DICOMDIR" or path.suffix.lower() in DICOM_SUFFIXES or is_dicom_file(path)


def choose_series(found: list[Series], wanted: str | None, source: str) -> Series:
    """The series to read: the one ``wanted`` names, or the only one there is.

    Args:
        found: what :func:`find_series` returned.
        wanted: a series' key (six hex digits, as the list shows) or its
            full UID; ``None`` when the source should hold one series.
        source: how messages name the folder.

    Returns:
        The chosen :class:`Series`.

    Raises:
        SeriesChoiceError: several series and none named, or no series
            with that name; the message lists them (key, description,
            slices, orientation).
    """
    listing = "\n".join("  " + s.describe() for s in found)
    if wanted:
        wanted = wanted.strip()
        match = [s for s in found if s.key == wanted.lower() or s.uid == wanted]
        if match:
            return match[0]
        raise SeriesChoiceError(f"{source} holds no series {plain_text(wanted)!r}; it holds:\n{listing}", found)
    if len(found) == 1:
        return found[0]
    raise SeriesChoiceError(
        f"{source} holds {len(found)} DICOM series; choose one by its key (the first column; "
        f"`hyperfusion prepare --series KEY`), or name the folder of that series alone:\n{listing}",
        found,
    )


def open_dicom(
    source: str | os.PathLike,
    series: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DicomVolume:
    """Find, choose and read one series.

    Args:
        source: a folder, a DICOM file or a DICOMDIR.
        series: the series' key (from the list a refusal gives) or UID;
            needed only when the source holds several.
        progress: ``progress(done, total)`` over the slices read.

    Returns:
        The :class:`DicomVolume` (canonical RAS, world mm).

    Raises:
        ImageError: every refusal of discovery, choice, geometry and reading.
    """
    source = Path(source)
    chosen = choose_series(find_series(source), series, shown_name(source))
    return read_series(chosen, progress=progress)


def safe_metadata(series: Series, affine: Any = None) -> dict[str, Any]:
    """What the tool keeps of a series' headers: nothing that identifies
    the patient, the visit or the institution (see the module's docstring).

    Args:
        series: the series read.
        affine: its voxel -> world matrix ``[4, 4]``, for the voxel size (mm).

    Returns:
        A JSON-friendly dict: key, description, modality, manufacturer,
        slices, orientation, enhanced or not, field strength (T), voxel
        size (mm), transfer syntax name.
    """
    import numpy as np

    out: dict[str, Any] = {
        "series_key": series.key,
        "series_description": series.description,
        "modality": series.modality,
        "manufacturer": series.manufacturer,
        "slices": series.n_slices,
        "orientation": series.orientation,
        "enhanced_multiframe": series.enhanced,
    }
    if series.field_strength is not None:
        out["field_strength_T"] = series.field_strength
    if affine is not None:
        out["voxel_size_mm"] = [round(float(v), 4) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))]
    from pydicom.uid import UID

    out["transfer_syntax"] = ", ".join(sorted(UID(u).name for u in series.transfer_syntaxes if u))
    return out
