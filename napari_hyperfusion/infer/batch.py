"""Cohort-scale prediction into one CSV: streamed, resumable, data-parallel.

:func:`predict_to_csv` splits the cohort table into chunks of
``chunk_size`` rows and predicts one chunk at a time, so memory stays
constant whatever the cohort's size (one chunk's views, about 20 MB for
256 AD subjects). Each finished chunk is written atomically as its own part
file in a work folder beside the output (``.<out name>.parts/``), with a
manifest that ties the parts to the model file and the cohort table (their
SHA-256). A run that is stopped keeps its finished chunks; run again with
``resume=True`` and only the missing chunks are computed. When every chunk
is done the parts are joined, in table order, into the output (written
atomically) and the work folder is removed.

Under ``torchrun`` each process takes every ``world``-th chunk (rank ``r``
takes chunks ``r, r + world, ...``); the processes share the work folder,
so they may run on several nodes over a shared file system, and rank 0
joins the parts after a barrier. Chunks do not depend on the rank, so a run
may be resumed with another number of processes.

Example:
    >>> from napari_hyperfusion.io.model_file import load_model
    >>> model = load_model("models/ad_hyperfusion.safetensors", device="cpu")  # doctest: +SKIP
    >>> summary = predict_to_csv(model, "data/ad600/cohort.csv", "predictions.csv")  # doctest: +SKIP
    >>> summary.n_rows, summary.n_refused  # doctest: +SKIP
    (600, 0)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CohortError
from ..io.atomic import atomic_write, write_text_atomically
from ..io.csv_text import to_csv_text
from ..nn.devices import dist_info
from .cohort import predict_rows, read_model_cohort

__all__ = ["BatchSummary", "predict_to_csv", "parts_folder", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


@dataclass
class BatchSummary:
    """What a run wrote (counted while joining the parts; rank 0 only,
    other ranks get ``n_rows = 0``).

    Attributes:
        n_rows: subjects in the output.
        n_refused: rows the input gate refused (no prediction).
        n_warned: rows with input-gate warnings.
        n_flagged: rows with out-of-distribution flags.
        refused_ids: the first refused subject IDs (up to 5).
        first_reason: the gate's reason for the first refused row.
        chunks_resumed: chunks kept from an interrupted run.
        chunks_total: chunks in the cohort.
    """

    n_rows: int = 0
    n_refused: int = 0
    n_warned: int = 0
    n_flagged: int = 0
    refused_ids: list[str] = field(default_factory=list)
    first_reason: str = ""
    chunks_resumed: int = 0
    chunks_total: int = 0


def parts_folder(out: str | Path) -> Path:
    """The work folder of ``out``'s chunks (``.<name>.parts`` beside it)."""
    out = Path(out)
    return out.parent / f".{out.name}.parts"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _manifest(model, table: Path, n_rows: int, chunk_size: int, prepare: bool) -> dict:
    return {
        "version": MANIFEST_VERSION, "model_sha256": model.sha256, "table": table.name,
        "table_sha256": _sha256(table), "n_rows": n_rows, "chunk_size": chunk_size, "prepare": bool(prepare),
    }  # fmt: skip


def _open_work_folder(parts: Path, wanted: dict, resume: bool, overwrite: bool) -> None:
    """Create the work folder, or check that the one there belongs to this
    run (same model, table, chunking) before resuming it."""
    manifest = parts / "manifest.json"
    if parts.exists() and not resume:
        if not overwrite:
            raise CohortError(
                f"{parts} holds the finished chunks of an interrupted run; pass --resume to continue it, "
                "or --overwrite to start again"
            )
        shutil.rmtree(parts)
    if parts.exists():
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError):
            raise CohortError(f"{parts}: no readable manifest.json; delete the folder to start again") from None
        differs = [k for k in wanted if found.get(k) != wanted[k]]
        if differs:
            raise CohortError(
                f"{parts} was written for another run ({', '.join(differs)} differ: another model, table "
                "or chunk size); resume with the same ones, or pass --overwrite to start again"
            )
        return
    parts.mkdir(parents=True, exist_ok=True)
    write_text_atomically(manifest, json.dumps(wanted, indent=1))


def _on_rank_zero(world: int, rank: int, work: Callable[[], None]) -> None:
    """Run ``work`` on rank 0 only; every rank then raises the error it
    raised (a ``CohortError``), or goes on together."""
    message = None
    if rank == 0:
        try:
            work()
        except CohortError as err:
            message = str(err)
    if world > 1:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise CohortError(message)


def _part(parts: Path, index: int) -> Path:
    return parts / f"chunk_{index:07d}.csv"


def _join(parts: Path, n_chunks: int, out: Path, summary: BatchSummary) -> None:
    """Concatenate the parts in order into ``out`` (atomically, one part in
    memory at a time) and count what they hold."""
    import pandas as pd

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as sink:
            for index in range(n_chunks):
                text = _part(parts, index).read_text()
                header, _, body = text.partition("\n")
                sink.write(text if index == 0 else body)
                frame = pd.read_csv(_part(parts, index), dtype=str, keep_default_na=False)
                summary.n_rows += len(frame)
                refused = frame[frame["input_qc"] == "refuse"]
                summary.n_refused += len(refused)
                if len(refused) and not summary.first_reason:
                    summary.first_reason = str(refused["qc_reasons"].iloc[0])
                summary.refused_ids += list(refused.iloc[:, 0])[: 5 - len(summary.refused_ids)]
                summary.n_warned += int((frame["input_qc"] == "warn").sum())
                summary.n_flagged += int((frame["ood_flags"].str.len() > 0).sum())

    atomic_write(out, write)


def predict_to_csv(
    model,
    table: str | Path,
    out: str | Path,
    batch_size: int = 16,
    chunk_size: int = 256,
    jobs: int = 1,
    prepare: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> BatchSummary:
    """Predict a cohort table into the CSV ``out``, chunk by chunk.

    Args:
        model: a :class:`~napari_hyperfusion.io.model_file.LoadedModel`.
        table: the cohort CSV/TSV (checked in full before any chunk runs).
        out: the predictions CSV (columns as
            :func:`~napari_hyperfusion.infer.cohort.predict_rows`; text
            cells neutralised against spreadsheet formulas).
        batch_size: subjects per forward pass.
        chunk_size: subjects per part file (memory: one chunk's views).
        jobs: processes loading scans.
        prepare: register each scan to MNI first (extra ``[prep]``).
        resume: continue an interrupted run from its finished chunks.
        overwrite: replace ``out`` and discard an interrupted run's chunks.
        progress: ``progress("predict", rows_done, rows_total)`` after each chunk.

    Returns:
        A :class:`BatchSummary`.

    Raises:
        CohortError: a bad table or scan (naming the row), or a work folder
            of another run.
    """
    out, table = Path(out), Path(table)
    rank, world = dist_info()
    cohort = read_model_cohort(model, table)
    n = len(cohort)
    n_chunks = (n + chunk_size - 1) // chunk_size
    parts = parts_folder(out)
    wanted = _manifest(model, table, n, chunk_size, prepare)
    summary = BatchSummary(chunks_total=n_chunks)

    def open_folder() -> None:
        _open_work_folder(parts, wanted, resume, overwrite)
        summary.chunks_resumed = sum(_part(parts, k).exists() for k in range(n_chunks))

    _on_rank_zero(world, rank, open_folder)
    mine = [k for k in range(rank, n_chunks, world) if not _part(parts, k).exists()]
    done_rows = sum(min(chunk_size, n - k * chunk_size) for k in range(rank, n_chunks, world)) - sum(
        min(chunk_size, n - k * chunk_size) for k in mine
    )
    total_rows = done_rows + sum(min(chunk_size, n - k * chunk_size) for k in mine)
    for k in mine:
        rows = range(k * chunk_size, min((k + 1) * chunk_size, n))
        frame = predict_rows(model, cohort.subset(rows), batch_size=batch_size, jobs=jobs, prepare=prepare)
        write_text_atomically(_part(parts, k), to_csv_text(frame))
        done_rows += len(rows)
        if progress:
            progress("predict", done_rows, total_rows)

    def join() -> None:
        missing = [k for k in range(n_chunks) if not _part(parts, k).exists()]
        if missing:  # a rank was stopped: keep the parts for --resume
            raise CohortError(f"{len(missing)} chunk(s) are missing from {parts}; rerun with --resume")
        out.parent.mkdir(parents=True, exist_ok=True)
        _join(parts, n_chunks, out, summary)
        shutil.rmtree(parts)

    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # every rank's chunks are written
    _on_rank_zero(world, rank, join)
    return summary
