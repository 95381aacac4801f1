"""Cohort prediction at scale: subjects per second and peak memory of
``hyperfusion predict`` for N subjects, in one process and under
``torchrun`` with several.

    python benchmarks/bench_batch_predict.py [--sizes 100,1000,10000] [--procs 1,2] [--pool 200]

The cohorts are synthetic and made on the fly: ``--pool`` unique subjects
(scans written by nibabel, ``hyperfusion make-cohort``), and tables of N rows
that cycle through them under unique IDs, so a 10,000-row cohort costs 200
scans of disk. Every run predicts the whole table with the shipped AD model
on the CPU (``--chunk-size`` rows per part file, the default 256) into a
fresh output. Peak memory is the sum over processes of each one's peak
resident set (``ru_maxrss``): what the machine must hold. The CPU threads
are shared out: with P processes each gets ``cores / P``.

The scaling is read from the table: subjects/s should grow with processes
(until the cores run out) and peak memory per process should not grow with N
(one chunk's views at a time, whatever the cohort's size).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_table

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "ad_hyperfusion.safetensors"


def _child(report_dir: str, argv: list[str]) -> int:
    """Run the CLI in this process and leave its peak memory in ``report_dir``."""
    from napari_hyperfusion.cli import main

    code = main(argv)
    rank = os.environ.get("RANK", "0")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    Path(report_dir, f"rank{rank}.json").write_text(json.dumps({"peak_mib": peak_mib}))
    return code


def _tables(pool_csv: Path, sizes: list[int], folder: Path) -> dict[int, Path]:
    """Tables of N rows cycling through the pool's subjects, IDs made unique."""
    import pandas as pd

    pool = pd.read_csv(pool_csv, dtype=str, keep_default_na=False)
    pool["IMAGE"] = [str(pool_csv.parent / p) for p in pool["IMAGE"]]
    tables = {}
    for n in sizes:
        rows = pool.iloc[[i % len(pool) for i in range(n)]].copy()
        rows["PTID"] = [f"{pid}_r{i:06d}" for i, pid in enumerate(rows["PTID"])]
        tables[n] = folder / f"cohort_{n}.csv"
        rows.to_csv(tables[n], index=False)
    return tables


def _run(table: Path, procs: int, work: Path, chunk_size: int) -> dict:
    report = work / f"report_{table.stem}_{procs}"
    shutil.rmtree(report, ignore_errors=True)
    report.mkdir(parents=True)
    out = work / f"predictions_{table.stem}_{procs}.csv"
    cli = [str(MODEL), str(table), "--out", str(out), "--overwrite", "--quiet", "--device", "cpu",
           "--chunk-size", str(chunk_size)]  # fmt: skip
    script = [str(Path(__file__).resolve()), "--child", str(report), "--", "predict", *cli]
    if procs == 1:
        command = [sys.executable, *script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                   *script]  # fmt: skip
    threads = max(1, (os.cpu_count() or 1) // procs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peaks = [json.loads(p.read_text())["peak_mib"] for p in sorted(report.glob("rank*.json"))]
    rows = sum(1 for _ in out.open()) - 1
    out.unlink()
    return {"seconds": seconds, "peaks": peaks, "rows": rows}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        raise SystemExit(_child(sys.argv[2], sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="cohort sizes N, comma-separated")
    parser.add_argument("--procs", default="1,2", help="process counts, comma-separated (2+: torchrun)")
    parser.add_argument("--pool", type=int, default=200, help="unique synthetic subjects the tables cycle through")
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--work", default="", help="a scratch folder (default: a temporary one, removed)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    procs = [int(p) for p in args.procs.split(",")]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_batch_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        from napari_hyperfusion.synth.cohort import make_cohort

        start = time.perf_counter()
        pool_csv = make_cohort("ad", args.pool, seed=11, out=work / "pool", jobs=os.cpu_count() or 1)
        print(f"SYNTHETIC pool of {args.pool} subjects made in {time.perf_counter() - start:.0f} s; "
              f"{os.cpu_count()} CPU cores; model {MODEL.name}; chunk size {args.chunk_size}")  # fmt: skip
        tables = _tables(pool_csv, sizes, work)
        rows, rates = [], {}
        for n in sizes:
            for p in procs:
                result = _run(tables[n], p, work, args.chunk_size)
                assert result["rows"] == n, f"{result['rows']} rows written for N = {n}"
                rate = n / result["seconds"]
                rates[(n, p)] = rate
                speedup = rate / rates[(n, procs[0])]
                rows.append([n, p, round(result["seconds"], 1), round(rate, 1), f"{speedup:.2f}x",
                             round(sum(result["peaks"])), round(max(result["peaks"]))])  # fmt: skip
        print_table(["N", "processes", "wall s", "subjects/s", f"vs {procs[0]} proc", "peak MiB (sum)",
                     "peak MiB (largest process)"], rows)  # fmt: skip
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
