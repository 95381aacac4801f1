"""One subject's EHR record from a table (ADNIMERGE CSV or BIDS
participants.tsv), for filling the panel's form."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import RecordError
from .schema import TabularSchema

__all__ = ["RecordError", "RecordTable", "read_record_table", "record_from_row", "ID_COLUMNS", "RENAMES"]

ID_COLUMNS = ("PTID", "RID", "participant_id", "subject_id", "ID")
# BIDS / lower-case spellings -> ADNIMERGE field names
RENAMES = {"sex": "PTGENDER", "gender": "PTGENDER", "age": "AGE", "education": "PTEDUCAT", "apoe4": "APOE4"}


@dataclass
class RecordTable:
    frame: pd.DataFrame
    id_column: str
    path: Path

    @property
    def ids(self) -> list[str]:
        return [str(v) for v in self.frame[self.id_column]]


def read_record_table(path: str | os.PathLike) -> RecordTable:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise RecordError(f"{path.name} cannot be read as a table: {err}") from None
    frame = frame.rename(columns={c: RENAMES[c.lower()] for c in frame.columns if c.lower() in RENAMES})
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_column is None:
        raise RecordError(f"{path.name} has no subject ID column (one of {', '.join(ID_COLUMNS)})")
    if frame.empty:
        raise RecordError(f"{path.name} has no rows")
    return RecordTable(frame, id_column, path)


def record_from_row(table: RecordTable, subject: str, schema: TabularSchema | None = None) -> dict[str, Any]:
    """The subject's row as ``{column: value or None}``; with ``schema``,
    a table lacking the schema's columns is refused, naming them."""
    if schema is not None:
        absent = [f.name for f in schema.fields if f.name not in table.frame.columns]
        if absent:
            raise RecordError(
                f"{table.path.name} lacks the column(s) {', '.join(absent)} that this model needs; "
                f"it has {', '.join(table.frame.columns)}"
            )
    rows = table.frame[table.frame[table.id_column] == str(subject)]
    if rows.empty:
        raise RecordError(f"{table.path.name} has no subject {subject!r} in column {table.id_column}")
    return {k: (v if v != "" else None) for k, v in rows.iloc[0].to_dict().items()}
