"""Long work off the UI thread: one job at a time, with a progress bar, a
status line and Cancel.

A job is a generator function run by napari's ``thread_worker``: it may
``yield`` status strings, calls ``progress(done, total)`` from any thread,
checks ``should_stop()`` between steps, and returns its result. Errors the
user can fix (:class:`~napari_hyperfusion.errors.HyperFusionError`) come
back as a notification; cancelling ends in a clear "cancelled" state.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Generator
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..analysis.explain import Cancelled
from ..errors import HyperFusionError
from . import notify

__all__ = ["JobRunner", "Cancelled", "BUSY_ANIMATION_AFTER_MS"]

BUSY_ANIMATION_AFTER_MS = 600  # a job still running after this shows the moving busy bar
STATUS_AFTER_MS = 250  # a job's step lines appear once it has run this long (a fast job does not flicker)


class _Outcome:
    """What a job ended with when it did not return a result. (A worker
    that returns an exception instance has it re-raised by superqt, so a
    message travels in this plain object instead.)"""

    def __init__(self, cancelled: bool, message: str = "") -> None:
        self.cancelled, self.message = cancelled, message


class _Bridge(QObject):
    """Carries ``(done, total)`` from a worker thread to the progress bar."""

    step = Signal(int, int)


class JobRunner(QWidget):
    """Cancel button, progress bar and status line, and the worker they show.

    Signals:
        busy_changed(bool): a job started or ended.
        refused(str): a job ended with a user error (its message).
    """

    busy_changed = Signal(bool)
    refused = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._worker = None
        self._failure = ""
        self._stop = threading.Event()
        self._bridge = _Bridge()
        self._bridge.step.connect(self._on_step)
        self.started_at = 0.0
        # the moving busy bar starts only when a job outlasts a hand's movement: with napari's OpenGL
        # canvas in the window, each animation frame re-composes the whole window (10-20 ms of the UI
        # thread in software GL), and those frames slowed a 0.2 s Predict to 0.45 s
        self._busy_timer = QTimer(self)
        self._busy_timer.setSingleShot(True)
        self._busy_timer.setInterval(BUSY_ANIMATION_AFTER_MS)
        self._busy_timer.timeout.connect(self._show_busy)
        self._pending_status: str | None = None
        self._status_timer = QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(STATUS_AFTER_MS)
        self._status_timer.timeout.connect(self._show_pending_status)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status = QLabel()
        self.status.setObjectName("status")
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # messages carry layer and file names
        self.status.setWordWrap(True)
        layout.addWidget(self.status)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def report(self, done: int, total: int) -> None:
        """Progress from any thread."""
        self._bridge.step.emit(done, total)

    def start(
        self,
        job: Callable[[], Generator[str, None, Any]],
        on_result: Callable[[Any], None],
        label: str,
        failure: str,
        on_partial: Callable[[Any], None] | None = None,
    ) -> bool:
        """Run ``job`` in a worker thread; ``on_result(value)`` runs on the UI
        thread with what it returned. A job yields status strings, or
        partial results that ``on_partial`` shows at once (e.g. the image
        map before the slower EHR attribution). ``failure`` prefixes a user
        error's message ("Cannot predict"). Returns False if a job is running."""
        if self._worker is not None:
            notify.error("Wait for the running job to finish, or cancel it.")
            return False
        from napari.qt.threading import thread_worker

        @thread_worker
        def work():
            try:
                return (yield from job())
            except Cancelled:
                return _Outcome(cancelled=True)
            except HyperFusionError as err:  # bad input is an answer, not a crash
                return _Outcome(cancelled=False, message=f"{failure}: {err}")
            except Exception as err:  # noqa: BLE001
                # every failure must end the job: superqt drops a RuntimeError (torch raises those)
                # raised in a generator worker without emitting errored or finished
                traceback.print_exc()
                return _Outcome(cancelled=False, message=notify.bug_message(failure, err))

        worker = work()
        worker.yielded.connect(lambda value: self._on_yielded(value, on_partial))
        worker.returned.connect(lambda value: self._on_returned(value, on_result))
        worker.errored.connect(lambda err: self._on_errored(err, failure))
        worker.finished.connect(self._on_finished)
        self._stop.clear()
        self._worker = worker
        self._failure = failure
        self.started_at = time.perf_counter()
        self.cancel_button.setEnabled(True)
        self._busy_timer.start()  # then busy until the job reports steps
        self._pending_status = None
        self._status_timer.start()
        self.status.setText(label)
        self.busy_changed.emit(True)
        worker.start()
        return True

    def cancel(self) -> None:
        if self._worker is not None:
            self._stop.set()
            self._worker.quit()
            self.status.setText("cancelling...")

    def elapsed(self) -> float:
        """Seconds since the job's button was pressed."""
        return time.perf_counter() - self.started_at

    def _on_yielded(self, value: Any, on_partial: Callable[[Any], None] | None) -> None:
        if self._stop.is_set():  # cancelling: a step's status line would hide "cancelling..."
            return
        if isinstance(value, str):
            if self._status_timer.isActive():  # shown when the timer fires, if the job still runs
                self._pending_status = value
            else:
                self.status.setText(value)
        elif on_partial is not None and not self._stop.is_set():
            on_partial(value)

    def _show_pending_status(self) -> None:
        if self._worker is not None and self._pending_status is not None and not self._stop.is_set():
            self.status.setText(self._pending_status)
        self._pending_status = None

    def _drop_pending_status(self) -> None:
        self._status_timer.stop()
        self._pending_status = None

    def _show_busy(self) -> None:
        if self._worker is not None and self.progress.maximum() == 1 and self.progress.value() == 0:
            self.progress.setRange(0, 0)

    def _on_step(self, done: int, total: int) -> None:
        if self._worker is not None:
            self._busy_timer.stop()
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(done)

    def _on_returned(self, value: Any, on_result: Callable[[Any], None]) -> None:
        self._drop_pending_status()  # a step line must not overwrite the outcome
        if isinstance(value, _Outcome):
            if value.cancelled:
                self.status.setText("Cancelled; nothing was changed.")
            else:
                self.status.setText(value.message)
                notify.error(value.message)
                self.refused.emit(value.message)
            return
        try:
            on_result(value)
        except Exception as err:  # noqa: BLE001  showing a result must not leave the job half-ended
            traceback.print_exc()
            message = notify.bug_message(self._failure, err)
            self.status.setText(message)
            notify.error(message)

    def _on_errored(self, err: Exception, failure: str) -> None:
        self._drop_pending_status()
        message = notify.bug_message(failure, err)
        self.status.setText(message)
        notify.error(message)

    def _on_finished(self) -> None:
        if self._stop.is_set() and not self.status.text().startswith(("Cancelled", self._failure)):
            self.status.setText("Cancelled; nothing was changed.")
        self._worker = None
        self._stop.clear()
        self._busy_timer.stop()
        self._drop_pending_status()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(False)
        self.busy_changed.emit(False)
