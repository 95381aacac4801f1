"""How the panel tells the user something went wrong: napari notifications.

Every section reports through :func:`error` / :func:`warning` (looked up on
this module at call time), so tests can capture what the user was told.
"""

from __future__ import annotations

__all__ = ["error", "warning"]


def error(message: str) -> None:
    """Show ``message`` as a napari error notification (plain text)."""
    from napari.utils.notifications import show_error

    show_error(message)


def warning(message: str) -> None:
    """Show ``message`` as a napari warning notification (plain text)."""
    from napari.utils.notifications import show_warning

    show_warning(message)
