"""DICOM series -> napari layer data, placed in world space (no Qt needed).

napari's File > Open gives this reader a folder, a DICOM file or a DICOMDIR
(:func:`get_reader`). Every series found is read (:mod:`..data.dicom`) and
becomes one image layer, named from its Series Description and a six-digit
key hashed from its UID, so a folder holding several series offers them all
in the panel's scan picker; series that cannot be a T1 volume (a localiser,
a CT, a compressed series without its decoder) are skipped with a warning
that says why, and when none is left the reader raises the reasons.

A layer's ``metadata`` holds the affine, the source path and the header
fields :func:`~napari_hyperfusion.data.dicom.safe_metadata` keeps: never a
name, an ID, a date, an institution or a UID.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

from ..data.dicom import Series, find_series, is_dicom_file, read_series, safe_metadata, scrub_uids
from ..data.dicom.discover import read_header  # the UID of a slice file, no pixels
from ..errors import ImageError
from .nifti import scan_layer

__all__ = ["get_reader", "read_dicom", "layer_name", "describe_series"]

LayerData = tuple[Any, dict[str, Any], str]
SIBLING_WINDOW_S = 30.0  # a multiple selection's files arrive within this of each other
_OPENED: dict[str, tuple[float, Path]] = {}  # series UID -> (when, the slice file that opened it); memory only
PEEK_FILES = 64  # how many files of a folder get_reader looks at to recognise a DICOM folder


def layer_name(series: Series) -> str:
    """``<Series Description> · <key>``: no identifier, unique per series."""
    return f"{series.description or 'DICOM series'} · {series.key}"


def describe_series(metadata: dict[str, Any]) -> str:
    """One line about a DICOM layer for tooltips and notifications, from
    the kept (non-identifying) fields."""
    dicom = metadata.get("dicom", {})
    size = " x ".join(f"{v:g}" for v in dicom.get("voxel_size_mm", []))
    return (
        f"DICOM series {dicom.get('series_key', '?')}: {dicom.get('series_description') or '(no description)'}, "
        f"{dicom.get('slices', '?')} {dicom.get('orientation', '')} slices" + (f", {size} mm" if size else "")
    )


def _layer(series: Series, source: Path) -> LayerData:
    volume = read_series(series)
    # archives name folders by study and series UID: the source keeps their keys instead
    source_path = scrub_uids(str(source))
    metadata = {"dicom": safe_metadata(series, volume.affine)}
    return scan_layer(volume.data, volume.affine, layer_name(series), source_path, metadata)


def read_dicom(path: str | os.PathLike | list) -> list[LayerData]:
    """Read every readable series of a folder, DICOM file or DICOMDIR.

    Returns:
        One ``(data [X, Y, Z], kwargs, "image")`` per series, largest first.

    Raises:
        ImageError: nothing readable; the message gives each series' reason.
    """
    paths = path if isinstance(path, list) else [path]
    layers: list[LayerData] = []
    refused: list[str] = []
    skipped = 0
    for p in paths:
        source = Path(p)
        if _sibling_of_an_opened_series(source):
            skipped += 1
            continue
        for series in find_series(source):
            try:
                layers.append(_layer(series, source))
            except ImageError as err:
                refused.append(str(err))
    if not layers and skipped and not refused:
        return [(None,)]  # napari's "nothing to add": the series is open already
    if not layers:
        raise ImageError("no DICOM series here can be read as a T1 volume: " + " | ".join(refused))
    if refused:
        warnings.warn(f"opened {len(layers)} series; skipped {len(refused)}: " + " | ".join(refused), stacklevel=2)
    return layers


def _sibling_of_an_opened_series(source: Path) -> bool:
    """Whether ``source`` is one slice file of a series that another slice
    file opened moments ago. napari hands a reader each file of a multiple
    selection in turn, and one slice file opens its whole series: without
    this, selecting 176 slices would read the series 176 times."""
    if source.is_dir() or source.name.upper() == "DICOMDIR" or not is_dicom_file(source):
        return False
    try:
        head = read_header(source)
        uid = str(head.get("SeriesInstanceUID", ""))
        single = int(head.get("NumberOfFrames", 1) or 1) == 1
    except Exception:  # a damaged file: find_series says why
        return False
    now = time.monotonic()
    for key in [k for k, (when, _) in _OPENED.items() if now - when > SIBLING_WINDOW_S]:
        del _OPENED[key]
    opened = _OPENED.get(uid)
    if single and opened is not None and opened[1] != source:
        return True
    if single:
        _OPENED[uid] = (now, source)
    return False


def _looks_like_dicom_folder(folder: Path) -> bool:
    """A DICOMDIR or a DICOM file among the first files of the folder tree."""
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.upper() == "DICOMDIR" or is_dicom_file(Path(root) / name):
                return True
            seen += 1
            if seen >= PEEK_FILES:
                return False
    return False


def get_reader(path: str | list) -> Any:
    """npe2 reader hook.

    Args:
        path: what napari was asked to open: a path or a list of paths.

    Returns:
        :func:`read_dicom` for a DICOM folder, file or DICOMDIR, ``None``
        for anything else (decided without parsing, so napari can offer
        another reader).
    """
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        if not isinstance(p, (str, os.PathLike)):
            return None
        p = Path(p)
        if p.is_dir():
            if not _looks_like_dicom_folder(p):
                return None
        elif not (p.name.upper() == "DICOMDIR" or is_dicom_file(p)):
            return None
    return read_dicom
