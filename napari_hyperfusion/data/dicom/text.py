"""Header text made safe to show: DICOM strings may hold anything."""

from __future__ import annotations

__all__ = ["plain_text"]


def plain_text(text: str, longest: int = 64) -> str:
    """``text`` with control characters dropped, runs of blanks made one
    space and cut to ``longest`` characters (an ellipsis marks the cut)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return text if len(text) <= longest else text[: longest - 1] + "…"
