"""How the panel tells the user something went wrong: napari notifications.

Every section reports through :func:`error` / :func:`warning` (looked up on
this module at call time), so tests can capture what the user was told.
"""

from __future__ import annotations

__all__ = ["error", "warning", "bug_message", "guarded"]


def error(message: str) -> None:
    """Show ``message`` as a napari error notification (plain text)."""
    from napari.utils.notifications import show_error

    show_error(message)


def warning(message: str) -> None:
    """Show ``message`` as a napari warning notification (plain text)."""
    from napari.utils.notifications import show_warning

    show_warning(message)


def bug_message(failure: str, err: BaseException) -> str:
    """``failure`` ("Cannot predict") and an unexpected error, in one plain line."""
    text = " ".join(str(err).split())[:300]  # however long the library's message
    return f"{failure}: unexpected {type(err).__name__}: {text} (a bug in napari-hyperfusion)"


def guarded(failure: str, default=None):
    """Decorate a slot that computes on the UI thread (a response curve, the
    twin view): a user error is said as ``failure: message``, any other error
    as a bug, and the slot returns ``default``; nothing escapes as a
    traceback dialog, and the panel stays usable."""
    import functools
    import traceback

    from ..errors import HyperFusionError

    def wrap(slot):
        import inspect

        # a Qt signal may pass more arguments (clicked's "checked") than the slot takes
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        takes = len([p for p in inspect.signature(slot).parameters.values() if p.kind in kinds])

        @functools.wraps(slot)
        def run(*args, **kwargs):
            try:
                return slot(*args[:takes], **kwargs)
            except HyperFusionError as err:
                error(f"{failure}: {err}")
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                error(bug_message(failure, err))
            return default

        return run

    return wrap
