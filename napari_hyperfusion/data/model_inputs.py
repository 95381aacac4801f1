"""The network's non-image input: the EHR encoding, then (for a model that
reads notes) the note's embedding and presence flag.

Every path that feeds a network (training, batch prediction, the panel,
explanations, what-if) builds its input here, so they cannot disagree.

Shapes: one record -> ``[config.input_dim]``; a table -> ``[N, input_dim]``
float32, with ``input_dim = schema.n_features + config.note_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..nn.config import ModelConfig
from .schema import TabularSchema

__all__ = ["encode_record", "encode_records", "encode_table", "note_slice"]


def _with_notes(config: ModelConfig, ehr: np.ndarray, notes: Sequence[object] | None) -> np.ndarray:
    if not config.uses_note:
        return ehr
    from .notes import NOTE_DIM, embed_notes

    if config.note_dim != NOTE_DIM:
        raise ValueError(f"the model reads {config.note_dim} note numbers; this encoder gives {NOTE_DIM}")
    notes = [""] * len(ehr) if notes is None else list(notes)
    if len(notes) != len(ehr):
        raise ValueError(f"{len(notes)} notes for {len(ehr)} records")
    return np.concatenate([ehr, embed_notes(notes)], axis=1)


def encode_record(
    config: ModelConfig, schema: TabularSchema, record: Mapping[str, Any], note: object = ""
) -> np.ndarray:
    """One subject's input ``[input_dim]`` (a model without notes ignores
    ``note``). Raises :class:`~napari_hyperfusion.data.schema.SchemaError` for a
    bad record and :class:`~napari_hyperfusion.data.notes.NoteEncoderError` for
    an unusable note."""
    return _with_notes(config, schema.encode(record)[None], [note])[0]


def encode_records(
    config: ModelConfig, schema: TabularSchema, records: Sequence[Mapping[str, Any]], note: object = ""
) -> np.ndarray:
    """Many records sharing one note (what-if grids): ``[N, input_dim]``."""
    ehr = np.stack([schema.encode(r) for r in records]) if records else np.zeros((0, schema.n_features), np.float32)
    if not config.uses_note:
        return ehr
    note_part = _with_notes(config, np.zeros((1, 0), np.float32), [note])  # [1, note_dim], embedded once
    return np.concatenate([ehr, np.repeat(note_part, len(ehr), 0)], axis=1)


def encode_table(config: ModelConfig, schema: TabularSchema, table: Any, notes: Sequence[object] | None = None):
    """A pandas table's rows ``[N, input_dim]`` (``notes`` one per row)."""
    return _with_notes(config, schema.encode_frame(table), notes)


def note_slice(config: ModelConfig) -> slice:
    """Where the note's numbers sit in the input vector (empty slice when
    the model reads no note)."""
    return slice(config.tabular_dim, config.input_dim)
