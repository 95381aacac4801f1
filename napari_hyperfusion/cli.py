"""The ``hyperfusion`` command line.

Errors the user can fix (a bad file, a bad argument) print one message to
stderr and exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as is, exit status 2."""


def _cmd_info(args: argparse.Namespace) -> None:
    from .model_file import ModelFileError, read_info

    try:
        info = read_info(args.model)
    except ModelFileError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(info.to_dict(), indent=2, sort_keys=True))
        return
    c = info.config
    print(f"{info.name}")
    print(f"  task:        {info.task}")
    print(f"  outputs:     {', '.join(info.outputs)}{' (' + info.output_unit + ')' if info.output_unit else ''}")
    print(f"  network:     {c.backbone} / {c.fusion}, input {'x'.join(map(str, c.input_shape))}")
    if c.hyper_sites:
        print(f"  generated:   {', '.join(c.hyper_sites)} (embedding {c.embedding}, dim {c.emb_dim})")
    print(f"  EHR fields:  {', '.join(info.schema.names)} -> {info.schema.n_features} numbers")
    if info.flags_text:
        print(f"  flags:       {info.flags_text}")
    for key, value in info.metrics.items():
        print(f"  metric {key}: {value}")


def _cmd_make_cohort(args: argparse.Namespace) -> None:
    from .cohort import make_cohort

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"{out} exists and is not empty; choose another folder or pass --overwrite")
    if args.n < 1:
        raise CLIError(f"--n must be at least 1, got {args.n}")
    try:
        from tqdm import tqdm
    except ImportError:  # progress bar is a nicety
        tqdm = None
    bar = tqdm(total=args.n, unit="scan", desc=f"{args.task} cohort", disable=args.quiet) if tqdm else None
    start = time.perf_counter()
    path = make_cohort(args.task, args.n, args.seed, out, jobs=args.jobs,
                       progress=(lambda done, total: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    print(f"wrote {args.n} SYNTHETIC subjects to {path} in {time.perf_counter() - start:.1f} s")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="hyperfusion",
        description="HyperFusion image + EHR models: inspect model files, generate synthetic cohorts "
        "(research and teaching use only).",
    )
    parser.add_argument("--version", action="version", version=f"napari-hyperfusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show a model file's metadata without loading its weights")
    info.add_argument("model", help="a .safetensors model file")
    info.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    info.set_defaults(func=_cmd_info)
    cohort = sub.add_parser("make-cohort", help="generate a synthetic cohort (scans + ADNIMERGE-style table)")
    cohort.add_argument("--task", choices=("ad", "brain_age"), default="ad")
    cohort.add_argument("--n", type=int, default=800, help="number of subjects (default 800)")
    cohort.add_argument("--seed", type=int, default=0)
    cohort.add_argument("--out", required=True, help="output folder")
    cohort.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    cohort.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    cohort.add_argument("--quiet", action="store_true", help="no progress bar")
    cohort.set_defaults(func=_cmd_make_cohort)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except CLIError as err:
        print(f"hyperfusion {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
