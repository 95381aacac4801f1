"""Generated corruptions of model files, NIfTIs and CSVs (tests/fuzz_cases.py)
give a clear message or a checked result: no traceback, no allocation above
the cap, nothing executed.

Each corpus runs in a child process whose address space is capped
(``RLIMIT_AS``) so a file that makes us allocate too much fails as a crash
instead of taking the test machine with it. The default run takes the named
cases and a few generated ones; ``-m slow`` takes hundreds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CAP_MIB = 1536  # what a file may make us allocate beyond the imported libraries


def _run_corpus(corpus: str, work: Path, limit: int) -> list[dict]:
    command = [sys.executable, str(HERE / "fuzz_cases.py"), corpus, str(work), "--limit", str(limit),
               "--cap-mib", str(CAP_MIB)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert rows and rows[-1] == {"executed": False}, rows[-1:]  # no payload ran
    return rows[:-1]


def _check(rows: list[dict], named: list[str]) -> None:
    crashes = [f"{r['case'][:80]}: {r['error']}: {r['message'][:200]}" for r in rows if r["outcome"] == "crash"]
    assert not crashes, "\n".join(crashes)
    cases = {r["case"]: r for r in rows}
    for name in named:  # the cases are all there, and refused
        assert cases[name]["outcome"] == "refused", cases[name]
    for row in rows:
        if row["outcome"] == "refused":
            message = row["message"]
            assert message.strip() and "Traceback" not in message, row
            assert len(message) < 1000, f"{row['case']}: a {len(message)}-character message"


MODEL_NAMED = ["400 base filters", "512^3 input grid", "thresholds are text", "outputs as a string",
               "image spacing zero", "image grid huge", "deep nesting in metrics", "metadata value is a number",
               "tensor data_offsets -> missing", "a pickle that runs code", "NaN weights", "empty file"]  # fmt: skip
NIFTI_NAMED = ["a pickle that runs code", "a text file", "gzip truncated", "all three dims 32767", "dim1 = -1",
               "datatype = 9999", "vox_offset = inf", "scl_inter = nan"]  # fmt: skip
CSV_NAMED = ["binary garbage", "empty file", "no AGE column", "duplicate subject", "a pickle that runs code"]


@pytest.mark.parametrize(
    "corpus, limit, named",
    [("model", 12, MODEL_NAMED), ("nifti", 8, NIFTI_NAMED), ("csv", 8, CSV_NAMED)],
)
def test_corrupted_files_are_refused_clearly(corpus, limit, named, tmp_path):
    rows = _run_corpus(corpus, tmp_path / corpus, limit)
    _check(rows, named)
    outcomes = {r["outcome"] for r in rows}
    assert outcomes == {"refused", "accepted"}  # harmless edits still open
    if corpus == "model":  # HTML in a name is text: it loads, and what it says is kept as written
        html = next(r for r in rows if r["case"] == "html model name")
        assert html["outcome"] == "accepted" and "<h1>Trusted</h1>" in html["message"]


@pytest.mark.slow
@pytest.mark.parametrize("corpus, limit", [("model", 300), ("nifti", 120), ("csv", 120)])
def test_corrupted_files_at_length(corpus, limit, tmp_path):
    _check(_run_corpus(corpus, tmp_path / corpus, limit), [])
