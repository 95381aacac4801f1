"""Cohort tables for training and batch prediction, checked row by row.

A cohort is a CSV (or TSV) with one row per subject: an ID, an image path
(relative to the table's folder, or absolute), the EHR columns the schema
names and, for training, the target. The two layouts researchers have work
as they are:

- AD (ADNIMERGE-style ``cohort.csv``): ``PTID``, ``IMAGE``, ``DX`` in
  ``CN``/``MCI``/``AD`` (ADNIMERGE's ``Dementia`` is read as ``AD``);
- brain age (BIDS ``participants.tsv``): ``participant_id``, ``image``,
  ``age`` and ``sex`` (read as ``PTGENDER``);
- multilabel risk (the AD layout): four 0/1 columns ``AMYLOID_POS``,
  ``HIPPO_ATROPHY``, ``IMPAIRED``, ``DEMENTIA`` and an optional free-text
  ``NOTE`` (a missing or empty note is allowed).

Every problem is a :class:`CohortError` naming the row (1-based, with the
subject's ID) and the column. Images are loaded on the model grid once, in
worker processes, into one float16 array ``[N, V, D, H, W]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CohortError
from .input_qc import check_input
from .labels import RISK_LABELS
from .preprocess import ImageError, ModelGrid, load_scan, prepare_views
from .schema import SchemaError, TabularSchema
from .table_header import duplicate_message, duplicated_columns

__all__ = ["CohortError", "TaskSpec", "TASK_SPECS", "Cohort", "read_cohort", "load_images", "AD_CLASSES"]

AD_CLASSES = ("CN", "MCI", "AD")


@dataclass(frozen=True)
class TaskSpec:
    """How a task's table is laid out and what its target is."""

    name: str
    model_task: str  # ModelInfo.task
    id_column: str
    image_column: str
    target_column: str
    classes: tuple[str, ...] = ()  # empty for regression
    target_aliases: dict[str, str] = field(default_factory=dict)
    rename: dict[str, str] = field(default_factory=dict)  # table column -> schema field
    target_range: tuple[float, float] = (0.0, 120.0)
    unit: str = ""
    label_columns: tuple[str, ...] = ()  # multilabel: one 0/1 column per label
    labels: tuple[str, ...] = ()  # multilabel: the labels' names
    note_column: str = ""

    @property
    def is_classification(self) -> bool:
        """Single-label classification (softmax over ``classes``)."""
        return bool(self.classes)

    @property
    def is_multilabel(self) -> bool:
        return bool(self.label_columns)

    @property
    def kind(self) -> str:
        """``"multiclass"``, ``"multilabel"`` or ``"regression"``."""
        return "multiclass" if self.classes else "multilabel" if self.label_columns else "regression"

    @property
    def outputs(self) -> list[str]:
        if self.is_multilabel:
            return list(self.labels)
        return list(self.classes) if self.classes else ["brain age"]


TASK_SPECS = {
    "ad": TaskSpec(
        "ad", "ad_classification", "PTID", "IMAGE", "DX", AD_CLASSES,
        target_aliases={"DEMENTIA": "AD", "NL": "CN", "EMCI": "MCI", "LMCI": "MCI"},
    ),
    "brain_age": TaskSpec(
        "brain_age", "brain_age", "participant_id", "image", "age",
        rename={"sex": "PTGENDER"}, target_range=(0.0, 120.0), unit="years",
    ),
    "risk": TaskSpec(
        "risk", "risk_multilabel", "PTID", "IMAGE", "",
        label_columns=tuple(RISK_LABELS), labels=tuple(RISK_LABELS.values()), note_column="NOTE",
    ),
}  # fmt: skip
_TRUE = {"1", "1.0", "true", "yes", "y", "positive"}
_FALSE = {"0", "0.0", "false", "no", "n", "negative"}


@dataclass
class Cohort:
    """A checked cohort: ``table`` (schema columns renamed, ``image`` as an
    absolute path), ``ids`` and ``y`` (class indices, or the target in its
    unit; ``None`` when the table has no target column)."""

    table: pd.DataFrame
    ids: list[str]
    image_paths: list[Path]
    y: np.ndarray | None
    spec: TaskSpec
    source: Path

    @property
    def notes(self) -> list[str]:
        """The clinical notes (empty text where there is none)."""
        column = self.spec.note_column
        if not column or column not in self.table:
            return [""] * len(self)
        return ["" if pd.isna(v) else str(v) for v in self.table[column]]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int]) -> Cohort:
        index = list(index)
        return Cohort(
            table=self.table.iloc[index].reset_index(drop=True),
            ids=[self.ids[i] for i in index],
            image_paths=[self.image_paths[i] for i in index] if self.image_paths else [],
            y=None if self.y is None else self.y[index],
            spec=self.spec,
            source=self.source,
        )


def _where(row: int, ident: str, column: str) -> str:
    return f"row {row + 1} ({ident}), column {column}"


def read_cohort(
    path: str | os.PathLike,
    spec: TaskSpec,
    schema: TabularSchema,
    need_target: bool = True,
    need_images: bool = True,
) -> Cohort:
    """Read and check a cohort table.

    Checks: the file exists and parses; the ID, image (``need_images``),
    target (``need_target``) and every schema column exist; each EHR value
    parses under the schema (range, units, categories; missing allowed where
    the schema can fill it); each target is a known class or a finite number
    in range; each image path exists. Raises :class:`CohortError`."""
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"{path}: no such cohort table")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        table = pd.read_csv(path, sep=sep, dtype={spec.id_column: str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise CohortError(f"{path.name} cannot be read as a {'TSV' if sep == chr(9) else 'CSV'} table: {err}") from None
    twice = duplicated_columns(path, sep, {k.lower(): v for k, v in spec.rename.items()})
    if twice:
        raise CohortError(duplicate_message(path.name, twice))
    table = table.rename(columns={k: v for k, v in spec.rename.items() if k in table.columns})
    needed = [spec.id_column]
    if need_images:
        needed.append(spec.image_column)
    if need_target:
        needed.extend(spec.label_columns or [spec.target_column])
    needed += [f.name for f in schema.fields if f.name not in needed]
    absent = [c for c in needed if c not in table.columns]
    if absent:
        shown = [next((k for k, v in spec.rename.items() if v == c), c) for c in absent]
        raise CohortError(
            f"{path.name} lacks the column(s) {', '.join(shown)}; it has {', '.join(map(str, table.columns))}"
        )
    if table.empty:
        raise CohortError(f"{path.name} has no rows")
    ids = [str(v) for v in table[spec.id_column]]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise CohortError(f"{path.name}: subject ID {dup!r} appears more than once in column {spec.id_column}")
    for i, (_, row) in enumerate(table.iterrows()):
        try:
            schema.fill(row)
        except SchemaError as err:
            raise CohortError(f"{path.name}: {_where(i, ids[i], err.field or '?')}: {err}") from None
    y = _parse_targets(table, ids, spec, path.name) if need_target else None
    images: list[Path] = []
    if need_images:
        for i, value in enumerate(table[spec.image_column]):
            if not isinstance(value, str) or not value.strip():
                raise CohortError(f"{path.name}: {_where(i, ids[i], spec.image_column)}: no image path")
            image = Path(value.strip())
            image = image if image.is_absolute() else path.parent / image
            try:
                found = image.is_file() or image.is_dir()  # a folder is a DICOM series
            except OSError as err:  # e.g. a name longer than the file system allows
                raise CohortError(
                    f"{path.name}: {_where(i, ids[i], spec.image_column)}: {_shorten(str(image))} is not a path "
                    f"that can be opened ({err.strerror})"
                ) from None
            if not found:
                raise CohortError(
                    f"{path.name}: {_where(i, ids[i], spec.image_column)}: {_shorten(str(image))} does not exist"
                )
            images.append(image)
    return Cohort(table=table, ids=ids, image_paths=images, y=y, spec=spec, source=path)


def _shorten(text: str, most: int = 160) -> str:
    """``text`` cut to ``most`` characters for a message (a cell may hold anything)."""
    return text if len(text) <= most else text[: most - 1] + "…"


def _parse_flag(raw: object) -> int | None:
    text = "" if pd.isna(raw) else str(raw).strip().lower()
    return 1 if text in _TRUE else 0 if text in _FALSE else None


def _parse_targets(table: pd.DataFrame, ids: list[str], spec: TaskSpec, name: str) -> np.ndarray:
    if spec.is_multilabel:
        out = np.zeros((len(table), len(spec.label_columns)), dtype=np.float32)
        for j, column in enumerate(spec.label_columns):
            for i, raw in enumerate(table[column]):
                flag = _parse_flag(raw)
                if flag is None:
                    shown = "missing" if pd.isna(raw) or not str(raw).strip() else repr(raw)
                    raise CohortError(f"{name}: {_where(i, ids[i], column)}: label {shown} is not 0 or 1")
                out[i, j] = flag
        return out
    values = []
    for i, raw in enumerate(table[spec.target_column]):
        where = _where(i, ids[i], spec.target_column)
        if spec.is_classification:
            text = "" if pd.isna(raw) else str(raw).strip()
            label = spec.target_aliases.get(text.upper(), text)
            if label not in spec.classes:
                shown = "missing" if not text else repr(text)
                raise CohortError(f"{name}: {where}: label {shown} is not one of {', '.join(spec.classes)}")
            values.append(spec.classes.index(label))
        else:
            try:
                number = float(raw)
            except (TypeError, ValueError):
                raise CohortError(f"{name}: {where}: {_shorten(repr(raw))} is not a number") from None
            low, high = spec.target_range
            if not np.isfinite(number) or not low <= number <= high:
                raise CohortError(
                    f"{name}: {where}: {_shorten(repr(raw))} is missing or outside {low:g} to {high:g} {spec.unit}"
                )
            values.append(number)
    return np.asarray(values, dtype=np.int64 if spec.is_classification else np.float32)


def _load_one(args: tuple[str, ModelGrid]) -> np.ndarray | str:
    try:
        return prepare_views(load_scan(args[0]), args[1]).astype(np.float16)
    except ImageError as err:
        return str(err)


def _load_checked(args: tuple[str, ModelGrid, dict | None, bool]) -> tuple[np.ndarray | None, dict] | str:
    """Views and the input gate's verdict (after registering the scan to
    MNI when ``args[3]``); no views for a refused scan."""
    try:
        scan = load_scan(args[0])
        if args[3]:
            from .registration import prepare_scan

            scan = prepare_scan(scan).scan
        qc = check_input(scan, args[2])
        if qc.verdict == "refuse":
            return None, qc.to_dict()
        return prepare_views(scan, args[1]).astype(np.float16), qc.to_dict()
    except ImageError as err:
        return str(err)


def load_images(
    cohort: Cohort,
    grid: ModelGrid,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Every subject's views on ``grid``: float16 ``[N, V, D, H, W]``.

    A scan that cannot be used raises :class:`CohortError` naming its row."""
    views, _ = _load_all(cohort, grid, jobs, progress, gate=None)
    return views


def load_checked_images(
    cohort: Cohort,
    grid: ModelGrid,
    trained: dict | None,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    prepare: bool = False,
) -> tuple[np.ndarray, list[dict]]:
    """:func:`load_images` through the input gate
    (:func:`~napari_hyperfusion.data.input_qc.check_input` with the
    model's training statistics ``trained``).

    Returns:
        views ``[N, V, D, H, W]`` float16 (zeros for a refused scan) and
        each row's :class:`~napari_hyperfusion.data.input_qc.InputQC` as a
        dict (``verdict`` ``"refuse"`` rows must not be predicted).
        With ``prepare``, each scan is first registered to the MNI template
        (:func:`~napari_hyperfusion.data.registration.prepare_scan`, extra
        ``[prep]``; about 15 s a scan on one core).
    """
    return _load_all(cohort, grid, jobs, progress, gate=trained or {}, prepare=prepare)


def _load_all(cohort, grid, jobs, progress, gate, prepare=False):
    n = len(cohort)
    out = np.zeros((n, grid.n_views, *grid.shape), dtype=np.float16)
    qcs: list[dict] = [{} for _ in range(n)]
    worker = _load_one if gate is None else _load_checked
    work = [(str(p), grid) if gate is None else (str(p), grid, gate, prepare) for p in cohort.image_paths]

    def store(i: int, result) -> None:
        if isinstance(result, str):
            where = _where(i, cohort.ids[i], cohort.spec.image_column)
            raise CohortError(f"{cohort.source.name}: {where}: {result}")
        if gate is None:
            out[i] = result
        else:
            views, qcs[i] = result
            if views is not None:
                out[i] = views
        if progress:
            progress(i + 1, n)

    if jobs > 1 and n > 1:
        # threads, not processes: reading, resampling and the gate spend their time in numpy, scipy
        # and zlib, which release the GIL, and the views need not be pickled back
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for i, result in enumerate(pool.map(worker, work)):
                store(i, result)
    else:
        for i, item in enumerate(work):
            store(i, worker(item))
    return out, qcs
