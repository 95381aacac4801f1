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
from .table_header import duplicate_message, duplicated_columns

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
    twice = duplicated_columns(path, sep, RENAMES)
    if twice:
        raise RecordError(duplicate_message(path.name, twice))
    frame = frame.rename(columns={c: RENAMES[c.lower()] for c in frame.columns if c.lower() in RENAMES})
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_column is None:
        raise RecordError(f"{path.name} has no subject ID column (one of {', '.join(ID_COLUMNS)})")
    if frame.empty:
        raise RecordError(f"{path.name} has no rows")
    return RecordTable(frame, id_column, path)


def record_from_row(table: RecordTable, subject: str, schema: TabularSchema | None = None) -> dict[str, Any]:
    """The subject's row as ``{column: value or None}``.

    With ``schema``, the table may hold only some of the model's fields (a
    BIDS ``participants.tsv`` often has just age and sex): the others come
    back as ``None`` (not known; the form and the model say which can be
    imputed). A table with none of the model's fields is refused, naming
    them.
    """
    if schema is not None and not any(f.name in table.frame.columns for f in schema.fields):
        raise RecordError(
            f"{table.path.name} has none of the fields this model reads ({', '.join(schema.names)}); "
            f"it has {', '.join(table.frame.columns)}"
        )
    rows = table.frame[table.frame[table.id_column] == str(subject)]
    if rows.empty:
        raise RecordError(f"{table.path.name} has no subject {subject!r} in column {table.id_column}")
    record = {k: (v if v != "" else None) for k, v in rows.iloc[0].to_dict().items()}
    if schema is not None:
        for name in schema.names:
            record.setdefault(name, None)
    return record
