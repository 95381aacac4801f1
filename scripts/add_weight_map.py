"""Fit the weight-space map of a trained HyperFusion model file and write it
into the file (``input_stats.weight_map``), on the model's own training rows.

    python scripts/add_weight_map.py models/configs/ad_hyperfusion.toml --model models/ad_hyperfusion.safetensors

``hyperfusion train`` fits the map itself; this is for model files trained
before it did (the shipped ones). The training rows are found as training
found them: the config's cohort table, split with the config's seed and
fractions; the model's number of training rows must agree. The map needs the
EHR values only, so where the cohort is the SYNTHETIC one and missing, its
table is regenerated without scans (``make_cohort(..., scans=False)``: the
same records under the same IDs). The weights are not touched; the file is
rewritten atomically in the dtype it was stored in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from napari_hyperfusion.data.dataset import read_cohort
    from napari_hyperfusion.errors import HyperFusionError
    from napari_hyperfusion.infer.weight_map import fit_weight_map
    from napari_hyperfusion.io.model_file import load_model, save_model, stored_dtype
    from napari_hyperfusion.synth.cohort import make_cohort
    from napari_hyperfusion.train.loop import TrainConfig, load_config_file, split_indices
    from napari_hyperfusion.train.run import prepare_data, weight_map_targets

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the training config the model was trained with")
    parser.add_argument("--model", required=True, help="the model file to add the map to")
    parser.add_argument("--cohort", default="", help="the training table (default: the config's cohort)")
    parser.add_argument("--synthetic-n", type=int, default=0, help="regenerate a missing synthetic cohort of N")
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig.from_dict(load_config_file(args.config))
        model = load_model(args.model, device="cpu")
        table = Path(args.cohort or cfg.cohort)
        with tempfile.TemporaryDirectory() as scratch:
            if not table.exists():
                n = args.synthetic_n or int(model.info.metrics.get("n_train", 0) + model.info.metrics.get(
                    "n_validation", 0) + model.info.metrics.get("n_test", 0))  # fmt: skip
                task = "brain_age" if cfg.task == "brain_age" else "ad"
                print(f"{table} is missing: regenerating the SYNTHETIC table of {n} subjects (seed 0, no scans)")
                table = make_cohort(task, n, seed=0, out=Path(scratch) / "cohort", scans=False)
            cohort = read_cohort(table, cfg.spec, model.info.schema, need_target=True, need_images=False)
            fractions = [cfg.test_fraction, cfg.val_fraction] if cfg.test_fraction > 0 else [cfg.val_fraction]
            parts = split_indices(cohort.y, fractions, cfg.seed, cfg.spec.is_classification)
            train_idx = parts[-1]
            expected = model.info.metrics.get("n_train")
            if expected is not None and expected != len(train_idx):
                raise SystemExit(f"{len(train_idx)} training rows, but the model says {expected}: another cohort?")
            train = prepare_data(cohort, None, model.info.schema, train_idx, model.info.config)
            net = model.net.eval()
            wmap = fit_weight_map(net, train.tabular, *weight_map_targets(cfg.spec, train.y),
                                  fitted_on=f"{len(train_idx)} training rows of {Path(cfg.cohort).name}")  # fmt: skip
    except HyperFusionError as err:
        print(f"add_weight_map: error: {err}", file=sys.stderr)
        return 2
    if wmap is None:
        print(f"{args.model}: no generated layers, no map")
        return 0
    info = model.info
    info.input_stats = {**info.input_stats, "weight_map": wmap.to_dict()}
    save_model(args.model, net.cpu(), info, dtype=stored_dtype(args.model))
    shares = ", ".join(f"{v:.1%}" for v in wmap.explained)
    print(f"{args.model}: weight map of {len(wmap.points)} training subjects, {wmap.n_parameters:,} generated "
          f"parameters, axes hold {shares} of their variance")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
