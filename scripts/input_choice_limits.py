"""What each choice of image input can hold, before any network is trained.

Two measurements on the fresh SYNTHETIC AD test subjects:

1. the Bayes limit of the AD task given the EHR and only the true volumes an
   input covers (the generator's exact posterior with the other volumes
   integrated out): hippocampus only, medial temporal lobe (hippocampus +
   entorhinal cortex), whole brain (also ventricles and brain tissue);
2. how much of each template region a model's crop grid covers (the share
   of the region's partial-volume mass inside the union of its views).

    python scripts/input_choice_limits.py --test-cohort data/ad_test1000/cohort.csv \\
        --model models/ad_hyperfusion.safetensors --model models/brain_age_hyperfusion.safetensors
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

CHOICES = {
    "EHR only": (),
    "EHR + hippocampus": ("HIPPOCAMPUS_PERMILLE",),
    "EHR + medial temporal lobe (hippocampus, entorhinal)": ("HIPPOCAMPUS_PERMILLE", "ENTORHINAL_MM3"),
    "EHR + whole brain (hippocampus, entorhinal, ventricles, brain tissue)": (
        "HIPPOCAMPUS_PERMILLE", "ENTORHINAL_MM3", "VENTRICLES_PERMILLE", "BRAIN_PERMILLE",
    ),
}  # fmt: skip


def choice_limits(table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Balanced accuracy and macro AUC of the exact posterior for each of
    :data:`CHOICES`, with a 95 % bootstrap interval of the balanced accuracy."""
    from sklearn.metrics import balanced_accuracy_score

    from napari_hyperfusion.data.dataset import TASK_SPECS
    from napari_hyperfusion.synth.truth import VOLUME_FIELDS, ad_posterior, balanced_posterior
    from napari_hyperfusion.train.loop import task_scores

    spec = TASK_SPECS["ad"]
    y = table["DX"].map({c: i for i, c in enumerate(spec.classes)}).to_numpy()
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]
    rows = []
    for name, kept in CHOICES.items():
        masked = table.copy()
        for column in VOLUME_FIELDS:
            if column not in kept:
                masked[column] = np.nan  # integrated out: the posterior drops its factor
        post = balanced_posterior(ad_posterior(masked, use_volumes=bool(kept)))
        scores = task_scores(spec, y, post)
        # a resample that lacks a class has no balanced accuracy (small tables only)
        decided = post.argmax(1)
        ba = [balanced_accuracy_score(y[b], decided[b]) for b in boots if len(np.unique(y[b])) == 3]
        low, high = np.percentile(ba, [2.5, 97.5])
        rows.append({"input": name, "balanced_accuracy": scores["balanced_accuracy"], "ci_low": low, "ci_high": high,
                     "auc_macro_ovr": scores["auc_macro_ovr"]})  # fmt: skip
    return pd.DataFrame(rows)


def crop_coverage(model_path: str) -> dict[str, float]:
    """Share of each template region inside the model's views (0 to 1)."""
    from napari_hyperfusion.data.preprocess import ModelGrid
    from napari_hyperfusion.io.model_file import read_info
    from napari_hyperfusion.synth.coverage import region_coverage

    return region_coverage(ModelGrid.from_dict(read_info(model_path).image))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-cohort", required=True, help="fresh SYNTHETIC AD subjects (a make-cohort table)")
    parser.add_argument("--model", action="append", default=[], help="model files whose crop coverage to measure")
    args = parser.parse_args(argv)
    table = pd.read_csv(args.test_cohort)
    limits = choice_limits(table)
    print(f"Bayes limit by input, {len(table)} fresh SYNTHETIC subjects of {args.test_cohort}:\n")
    print("| input | balanced accuracy [95 % CI] | macro AUC |")
    print("|---|---|---|")
    for r in limits.itertuples():
        print(f"| {r.input} | {r.balanced_accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.auc_macro_ovr:.3f} |")
    if args.model:
        names = list(crop_coverage(args.model[0]))
        print("\nShare of each template region inside the model's views:\n")
        print("| model | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for path in args.model:
            cover = crop_coverage(path)
            print(f"| {path} | " + " | ".join(f"{cover[n]:.0%}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
