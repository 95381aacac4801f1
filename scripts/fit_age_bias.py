"""Fit a brain-age model's age-bias correction on held-out subjects and
write it into the model file (``input_stats.age_bias``); with ``--test``,
measure the model before and after on other fresh subjects.

    python scripts/fit_age_bias.py models/brain_age_hyperfusion.safetensors \\
        --calibration data/ba_cal300_varied/participants.tsv --test data/ba_test200/participants.tsv

The calibration table must hold subjects the model never trained on (the
shipped model trained on ``make-cohort --seed 1 --anatomy varied``; ``data/ba_cal300_varied`` is
``--seed 2027 --anatomy varied``, ``data/ba_test200`` is ``--seed 2026``). The weights are not
touched; the file is rewritten atomically in the dtype it was stored in.
``--dry-run`` fits and measures without writing. See
``napari_hyperfusion/infer/age_bias.py`` for the correction and its caveat:
a corrected brain age uses the chronological age, so its MAE is no measure
of the model's accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np


def _predict(model, table: str):
    from napari_hyperfusion.infer.cohort import predict_cohort

    out = predict_cohort(model, table, jobs=2)
    if out["predicted_brain_age"].isna().any():
        raise ValueError(f"the input gate refused scans of {table}: use subjects the model can read")
    return out["predicted_brain_age"].to_numpy(float), out["chronological_age"].to_numpy(float)


def measure(predicted: np.ndarray, age: np.ndarray, bias=None) -> dict[str, float]:
    """MAE, the slope of prediction on age, and the gap's correlation with age."""
    gap = predicted - age
    row = {
        "n": len(age),
        "mae": float(np.abs(gap).mean()),
        "slope": float(np.polyfit(age, predicted, 1)[0]),
        "r_gap_age": float(np.corrcoef(gap, age)[0, 1]),
        "mean_gap_under_50": float(gap[age < 50].mean()) if (age < 50).any() else float("nan"),
        "mean_gap_over_70": float(gap[age > 70].mean()) if (age > 70).any() else float("nan"),
    }
    if bias is not None:
        corrected = bias.corrected_gap(predicted, age)
        row.update(
            corrected_r_gap_age=float(np.corrcoef(corrected, age)[0, 1]),
            corrected_mean_gap_under_50=float(corrected[age < 50].mean()) if (age < 50).any() else float("nan"),
            corrected_mean_gap_over_70=float(corrected[age > 70].mean()) if (age > 70).any() else float("nan"),
            corrected_sd_gap=float(corrected.std()),
        )
    return row


def main(argv: list[str] | None = None) -> int:
    from napari_hyperfusion.errors import HyperFusionError
    from napari_hyperfusion.infer.age_bias import fit_age_bias
    from napari_hyperfusion.io.model_file import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a brain-age model file")
    parser.add_argument("--calibration", required=True, help="held-out subjects to fit the age trend on")
    parser.add_argument("--test", default="", help="other fresh subjects to measure before and after on")
    parser.add_argument("--dry-run", action="store_true", help="fit and measure, do not write the model file")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, device="cpu")
        if model.info.task != "brain_age":
            print(f"fit_age_bias: error: {args.model} is not a brain-age model", file=sys.stderr)
            return 2
        predicted, age = _predict(model, args.calibration)
        digest = hashlib.sha256(Path(args.calibration).read_bytes()).hexdigest()[:12]
        bias = fit_age_bias(predicted, age, fitted_on=f"{len(age)} held-out subjects of "
                            f"{Path(args.calibration).parent.name}/{Path(args.calibration).name} (sha256 {digest})")  # fmt: skip
        test = _predict(model, args.test) if args.test else None
    except (HyperFusionError, ValueError) as err:
        print(f"fit_age_bias: error: {err}", file=sys.stderr)
        return 2
    print(f"age trend on {bias.fitted_on}: predicted = {bias.intercept:.2f} + {bias.slope:.3f} x age")
    rows = {"calibration": measure(predicted, age, bias)}
    if test is not None:
        rows["test"] = measure(*test, bias)
    keys = list(next(iter(rows.values())))
    print("| measure | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{r.get(key, float('nan')):.3f}" for r in rows.values()) + " |")
    if args.dry_run:
        return 0
    from napari_hyperfusion.io.model_file import update_info  # atomic, the weights as they were stored

    update_info(args.model, input_stats={**model.info.input_stats, "age_bias": bias.to_dict()})
    print(f"wrote the age trend into {args.model}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
