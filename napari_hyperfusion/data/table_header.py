"""The header of a CSV/TSV table as written, before pandas renames anything.

pandas reads two columns called ``AGE`` as ``AGE`` and ``AGE.1`` and every
lookup by name then takes the first: a table with two ages would predict
with one of them, silently. Tables are refused instead, naming the column.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter

__all__ = ["duplicated_columns", "duplicate_message"]

_HEADER_BYTES = 1 << 20  # a header longer than this is not a table we read


def duplicated_columns(path: str | os.PathLike, sep: str, aliases: dict[str, str] | None = None) -> list[str]:
    """Column names that occur more than once in the table's first line.

    Args:
        path: the CSV/TSV file.
        sep: its separator.
        aliases: how the reader renames columns (``{"age": "AGE"}``, keys
            lower case): two spellings of one column are duplicates too.

    Returns:
        The duplicated names (after renaming), in order of first occurrence.
    """
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=sep), [])
    names = [(aliases or {}).get(name.strip().lower(), name.strip()) for name in first]
    counts = Counter(names)
    return [name for name in dict.fromkeys(names) if name and counts[name] > 1]


def duplicate_message(file_name: str, names: list[str]) -> str:
    """What to tell the user about :func:`duplicated_columns`' answer."""
    listed = ", ".join(repr(n)[:60] for n in names[:5])
    return f"{file_name} has more than one column named {listed}: keep one (which value is meant cannot be guessed)"
