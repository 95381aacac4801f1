"""How often real records trip the what-if support check: for each numeric
field, the share of a cohort's subjects whose *own* value lies beyond
``SUPPORT_Z`` conditional SDs of what their other known fields lead the
model's training rows to expect (the false-alarm rate of the panel's grey
band and of the "Outside the training data as a whole" sentence).

    python scripts/support_rate.py models/ad_hyperfusion.safetensors data/ad_test1000/cohort.csv
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from napari_hyperfusion.analysis.support import SUPPORT_Z, check_support
    from napari_hyperfusion.errors import HyperFusionError
    from napari_hyperfusion.io.model_file import read_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model file (its schema carries the training rows' moments)")
    parser.add_argument("cohort", help="a cohort table (CSV or TSV) with the model's EHR columns")
    args = parser.parse_args(argv)
    try:
        schema = read_info(args.model).schema
        sep = "\t" if args.cohort.endswith((".tsv", ".tab")) else ","
        table = pd.read_csv(args.cohort, sep=sep)
        records = [schema.parse(row) for _, row in table.iterrows()]
    except (OSError, ValueError, HyperFusionError) as err:
        print(f"support_rate: error: {err}", file=sys.stderr)
        return 2
    fields = [f.name for f in schema.fields if f.kind == "number"]
    if not schema.joint_mean or not fields:
        print(f"support_rate: error: {args.model} carries no joint moments of numeric EHR fields", file=sys.stderr)
        return 2
    print(f"{len(records)} records of {args.cohort}; beyond {SUPPORT_Z:g} conditional SDs of the training rows'")
    print("expectation given each record's other known fields:\n")
    print(f"| field | records that know it | beyond {SUPPORT_Z:g} SD | 99th percentile of abs(z) |")
    print("|---|---|---|---|")
    for name in fields:
        z = np.array([c.z for r in records if (c := check_support(schema, r, name)) is not None])
        if not z.size:
            continue
        beyond = float(np.mean(np.abs(z) > SUPPORT_Z))
        print(f"| {name} | {z.size} | {beyond:.1%} | {np.percentile(np.abs(z), 99):.2f} |".replace("%", " %"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
