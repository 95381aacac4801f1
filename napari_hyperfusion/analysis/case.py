"""The case on screen, and the results that belong to it.

A *case* is what a result is computed from: the scan, the EHR record, the
clinical note, the model and the device. :class:`Case` holds the current
one (a plain class, no Qt: the panel's widgets are views of it) and the
results computed for it, each stored with the :class:`CaseIdentity` it was
computed for. A result is only ever returned for the case it belongs to:

- when any part of the case changes, results of the old identity are no
  longer "current" (views show them as stale or clear them), and
- a worker's result that arrives for an identity that is no longer current
  is refused by :meth:`Case.store` (the view never shows it under another
  case).

Results are kept per identity (so switching back to a scan shows its
prediction again without recomputing it), a bounded number of identities
at most, so that memory does not grow with every click.

Example:
    >>> case = Case()
    >>> case.set_record({"AGE": 70.0})
    >>> before = case.identity
    >>> case.store("prediction", before, "P(AD) 12 %")
    True
    >>> case.set_record({"AGE": 85.0})
    >>> case.result("prediction") is None, case.latest("prediction")[1]
    (True, 'P(AD) 12 %')
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from psygnal import Signal

__all__ = ["Case", "CaseIdentity", "scan_fingerprint", "record_fingerprint"]

# results of this many recent identities are kept (each may hold attribution maps)
KEEP_IDENTITIES = 6


@dataclass(frozen=True)
class CaseIdentity:
    """What a result was computed from. Two results belong to the same case
    exactly when their identities are equal."""

    scan_name: str = ""
    scan_fingerprint: str = ""
    record_fingerprint: str = ""
    model_name: str = ""
    model_sha256: str = ""
    device: str = ""

    def describe(self) -> str:
        """One line naming the case, e.g. ``scan 'SYN_DEMO_01' (3f2a9c1e),
        record 7d0e11aa, model HyperFusion AD (a187ca51), cpu``."""
        parts = []
        if self.scan_name:
            parts.append(f"scan '{self.scan_name}' ({self.scan_fingerprint[:8]})")
        parts.append(f"record {self.record_fingerprint[:8]}")
        if self.model_name:
            parts.append(f"model {self.model_name} ({self.model_sha256[:8]})")
        if self.device:
            parts.append(self.device)
        return ", ".join(parts)

    @property
    def scan_key(self) -> str:
        """The scan's name and fingerprint in one string (what cached image
        features depend on, with the model and the device)."""
        return f"{self.scan_name}:{self.scan_fingerprint}"

    def differences(self, other: CaseIdentity) -> list[str]:
        """What changed from ``other`` to this one, in words (``["scan", "record"]``)."""
        out = []
        if (self.scan_name, self.scan_fingerprint) != (other.scan_name, other.scan_fingerprint):
            out.append("scan")
        if self.record_fingerprint != other.record_fingerprint:
            out.append("record")
        if self.model_sha256 != other.model_sha256:
            out.append("model")
        if self.device != other.device:
            out.append("device")
        return out


def scan_fingerprint(data: np.ndarray, affine: np.ndarray) -> str:
    """A content fingerprint of a volume and its placement: shape, dtype,
    affine and a strided sample of about a million voxels (hashing a
    512 x 512 x 400 volume in full would take a noticeable fraction of a
    second on the UI thread; a changed scan changes the sample).

    Args:
        data: the volume ``[X, Y, Z]`` (any dtype).
        affine: ``[4, 4]`` voxel -> world (mm).
    Returns:
        16 hex digits.
    """
    data = np.asarray(data)
    step = max(1, int(round((data.size / 1_000_000) ** (1 / max(data.ndim, 1)))))
    sample = np.ascontiguousarray(data[(slice(None, None, step),) * data.ndim])
    h = hashlib.blake2b(digest_size=8)
    h.update(repr((data.shape, str(data.dtype))).encode())
    h.update(np.asarray(affine, dtype=np.float64).tobytes())
    h.update(sample.tobytes())
    return h.hexdigest()


def record_fingerprint(record: dict[str, Any], note: str = "") -> str:
    """A fingerprint of the record's values (``None`` for not known) and the note.

    Returns:
        16 hex digits; equal records give equal fingerprints.
    """
    text = json.dumps({"record": record, "note": note}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Case:
    """The current scan, record, note, model and device, and the results
    computed for them.

    Events (psygnal, delivered on the thread that made the change; the
    panel changes the case on the UI thread only):
        changed(identity): any part of the case changed.
        results_changed(kind): a result of ``kind`` was stored or dropped.
    """

    changed = Signal(object)
    results_changed = Signal(str)

    def __init__(self) -> None:
        self.model: Any = None  # a LoadedModel
        self.scan: Any = None  # a data.preprocess.Scan, or None
        self.scan_name = ""
        self.record: dict[str, Any] = {}
        self.note = ""
        self._scan_fp = ""
        self._results: OrderedDict[CaseIdentity, dict[str, Any]] = OrderedDict()

    # -- the case ---------------------------------------------------------------
    @property
    def identity(self) -> CaseIdentity:
        model = self.model
        uses_image = model is None or model.info.config.uses_image
        return CaseIdentity(
            scan_name=self.scan_name if uses_image else "",
            scan_fingerprint=self._scan_fp if uses_image else "",
            record_fingerprint=record_fingerprint(self.record, self.note),
            model_name=model.info.name if model is not None else "",
            model_sha256=model.sha256 if model is not None else "",
            device=str(model.device) if model is not None else "",
        )

    def snapshot(self) -> tuple[CaseIdentity, Any, Any, dict[str, Any], str]:
        """``(identity, model, scan, record, note)`` as they are now, for a
        worker: it computes from this copy and stores under this identity."""
        return self.identity, self.model, self.scan, dict(self.record), self.note

    def set_model(self, model: Any) -> None:
        """A model (always announced: the same file loaded again is a new
        object that views must pick up)."""
        self.model = model
        self.changed.emit(self.identity)

    def set_scan(self, name: str, scan: Any, fingerprint: str) -> None:
        """The scan layer's name, its :class:`Scan` (``None`` when there is
        no usable scan) and its :func:`scan_fingerprint`."""

        def apply() -> None:
            self.scan_name, self.scan, self._scan_fp = name, scan, fingerprint

        self._change(apply)

    def set_record(self, record: dict[str, Any]) -> None:
        self._change(lambda: setattr(self, "record", dict(record)))

    def set_note(self, note: str) -> None:
        self._change(lambda: setattr(self, "note", note))

    def device_changed(self) -> None:
        """Say that the model moved to another device."""
        self._change(lambda: None)

    def _change(self, apply) -> None:
        before = self.identity
        apply()
        after = self.identity
        if after != before:
            self.changed.emit(after)

    # -- results ----------------------------------------------------------------
    def store(self, kind: str, identity: CaseIdentity, result: Any) -> bool:
        """Keep ``result`` of ``kind`` for ``identity`` if that is still the
        current case; returns False (and keeps nothing) otherwise."""
        if identity != self.identity:
            return False
        slot = self._results.setdefault(identity, {})
        slot[kind] = result
        self._results.move_to_end(identity)
        while len(self._results) > KEEP_IDENTITIES:
            self._results.popitem(last=False)
        self.results_changed.emit(kind)
        return True

    def result(self, kind: str) -> Any:
        """The result of ``kind`` computed for the current case, or None."""
        return self._results.get(self.identity, {}).get(kind)

    def latest(self, kind: str) -> tuple[CaseIdentity, Any] | None:
        """The most recent result of ``kind`` for any case, with its identity
        (views show it as stale when the identity is not the current one)."""
        for identity in reversed(self._results):
            if kind in self._results[identity]:
                return identity, self._results[identity][kind]
        return None

    def forget(self, kind: str | None = None) -> None:
        """Drop results of ``kind`` (all kinds if None) for every case."""
        for slot in self._results.values():
            if kind is None:
                slot.clear()
            else:
                slot.pop(kind, None)
        self.results_changed.emit(kind or "")
