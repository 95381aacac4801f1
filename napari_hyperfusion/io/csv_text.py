"""CSV text that a spreadsheet opens as data, never as formulas.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is run as a formula by Excel, LibreOffice and Google Sheets
(`CSV injection <https://owasp.org/www-community/attacks/CSV_Injection>`_).
Our CSVs echo subject IDs, reasons and model names from files we were
handed, so every text cell that could be read as a formula gets a leading
``'`` (the quote a spreadsheet shows as "this is text"); numbers, including
negative ones, are left alone.

Example:
    >>> import pandas as pd
    >>> print(to_csv_text(pd.DataFrame({"PTID": ["=cmd|' /C calc'!A0", "002_S_0001"], "gap": [-1.5, 2.0]})))
    PTID,gap
    '=cmd|' /C calc'!A0,-1.5
    002_S_0001,2
    <BLANKLINE>
"""

from __future__ import annotations

import pandas as pd

__all__ = ["neutralise_formulas", "to_csv_text", "FORMULA_STARTS"]

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _safe(value):
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
        return "'" + value
    return value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names cannot be
    read as formulas.

    Args:
        frame: any table; numeric columns are untouched.

    Returns:
        The new table (``frame`` itself is not changed).
    """
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(_safe)
    out.columns = [_safe(str(c)) for c in out.columns]
    return out


def to_csv_text(frame: pd.DataFrame, header: bool = True, float_format: str | None = "%.6g") -> str:
    """``frame`` as CSV text (no index), formulas neutralised."""
    return neutralise_formulas(frame).to_csv(index=False, header=header, float_format=float_format)
