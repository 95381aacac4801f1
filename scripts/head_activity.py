"""How many units of a model's fully connected head a cohort's scans switch on.

A ReLU unit whose input is negative for every scan passes nothing and
learns nothing (a "dead" unit). When every unit of one hidden layer is off
for a scan, the output no longer depends on that scan at all: the model
answers a constant, and no gradient reaches the layers below to change it.
The ReLU brain-age files (the one shipped until this release, and the same
recipe on brains of many shapes) answered one age for the oldest quarter of
fresh subjects for this reason; the shipped file's head is leaky
(docs/models.md, "The head goes silent for old brains").

    python scripts/head_activity.py models/brain_age_hyperfusion.safetensors data/ba_test200/participants.tsv

Prints, per hidden layer of the head: its units, the units any scan
switches on, the mean switched on per scan, and the scans with none on;
then, for a regression model, the answer those scans get. SYNTHETIC data
only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def head_activity(model, table: str) -> tuple[list[np.ndarray], object]:
    """Predict ``table`` and record the head's hidden units.

    Returns:
        ``(active, predictions)``: per hidden layer a ``[subjects, units]``
        boolean array (the unit's input is positive), and the prediction
        table of :func:`~napari_hyperfusion.infer.cohort.predict_cohort`.
    """
    from napari_hyperfusion.infer.cohort import predict_cohort
    from napari_hyperfusion.nn.networks import MLPHead

    heads = [m for m in model.net.modules() if isinstance(m, MLPHead)]
    if not heads:
        raise ValueError(f"{model.info.name} has no fully connected head to inspect")
    hidden = list(heads[0].layers)[:-1]  # a ReLU follows each but the last
    seen: list[list[np.ndarray]] = [[] for _ in hidden]

    def keep(k):
        def hook(module, inputs, output):
            if output.device.type == "cpu":  # not the shape-only passes on the meta device
                seen[k].append((output > 0).detach().numpy())

        return hook

    handles = [layer.register_forward_hook(keep(k)) for k, layer in enumerate(hidden)]
    try:
        predictions = predict_cohort(model, table, jobs=2)
    finally:
        for handle in handles:
            handle.remove()
    return [np.concatenate(parts) for parts in seen], predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model file (.safetensors)")
    parser.add_argument("cohort", help="a cohort table the model reads")
    args = parser.parse_args(argv)
    from napari_hyperfusion.errors import HyperFusionError
    from napari_hyperfusion.io.model_file import load_model

    for path in (args.model, args.cohort):
        if not Path(path).is_file():
            print(f"head_activity: error: {path} does not exist", file=sys.stderr)
            return 2
    try:
        model = load_model(args.model, device="cpu")
        active, predictions = head_activity(model, args.cohort)
    except (HyperFusionError, ValueError) as err:
        print(f"head_activity: error: {err}", file=sys.stderr)
        return 2
    n = len(active[0])
    print(f"{model.info.name}: the head's hidden units on {n} scans of {Path(args.cohort).name} (SYNTHETIC)\n")
    print("| layer | units | units any scan switches on | switched on per scan (mean) | scans with none on |")
    print("|---|---|---|---|---|")
    silent = np.zeros(n, bool)
    for k, on in enumerate(active):
        none = ~on.any(1)
        silent |= none
        print(f"| {k + 1} | {on.shape[1]} | {int(on.any(0).sum())} | {on.sum(1).mean():.2f} | {int(none.sum())} |")
    slope = max(getattr(m, "negative_slope", 0.0) for m in model.net.modules())
    if slope:
        print(f"\nThe head's units are leaky ReLUs: a unit that is off still passes {slope:g} of its input and of "
              "its gradient, so no scan gets a constant answer.")  # fmt: skip
    elif model.info.task == "brain_age" and silent.any():
        pred = predictions["predicted_brain_age"].to_numpy(float)
        age = predictions["chronological_age"].to_numpy(float)
        print(
            f"\n{int(silent.sum())} scans reach a layer with every unit off: they all get {np.median(pred[silent]):.2f} "
            f"years (range {pred[silent].min():.2f}-{pred[silent].max():.2f}); their true ages "
            f"{age[silent].min():.0f}-{age[silent].max():.0f} (mean {age[silent].mean():.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
