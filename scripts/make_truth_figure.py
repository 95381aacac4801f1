"""The model's what-if curves beside the ground truth -> docs/truth_whatif.png.

For each sample subject, the shipped AD model's response to one EHR field
(solid; the scan held, the other fields at the subject's values) and the
exact Bayes answer of the generator that made the subject (dashed; its
true regional volumes held). Where they part, the model learned something
the data do not say, or missed something they do.

python scripts/make_truth_figure.py --model models/ad_hyperfusion.safetensors --fields AGE,APOE4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from napari_hyperfusion.analysis.whatif import WhatIfSession  # noqa: E402
from napari_hyperfusion.data.preprocess import load_scan  # noqa: E402
from napari_hyperfusion.io.model_file import load_model  # noqa: E402
from napari_hyperfusion.resources import sample_data_dir  # noqa: E402
from napari_hyperfusion.samples import SUBJECTS, subject_record  # noqa: E402
from napari_hyperfusion.synth.truth import ad_truth_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"CN": "#0072B2", "MCI": "#E69F00", "AD": "#CC79A7"}  # Okabe-Ito: colour-blind safe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "ad_hyperfusion.safetensors"))
    parser.add_argument("--fields", default="AGE,APOE4", help="comma-separated EHR fields to sweep")
    parser.add_argument("--subjects", default="SYN_DEMO_01,SYN_DEMO_02,SYN_DEMO_04")
    parser.add_argument("--out", default=str(ROOT / "docs" / "truth_whatif.png"))
    args = parser.parse_args()
    model = load_model(args.model, device="cpu")
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()]
    fig, axes = plt.subplots(len(fields), len(subjects), figsize=(3.3 * len(subjects), 2.7 * len(fields)),
                             squeeze=False, sharey=True)  # fmt: skip
    for col, key in enumerate(subjects):
        record = subject_record(key)
        session = WhatIfSession(model, load_scan(sample_data_dir() / SUBJECTS[key][0]), key)
        filled, missing = model.info.schema.fill({k: record.get(k) for k in model.info.schema.names})
        # the model sees filled-in values; the truth keeps them missing (which are missing is evidence)
        measured = {k: v for k, v in filled.items() if k not in missing}
        for row, field in enumerate(fields):
            curve = session.response_curve(filled, field, n=40)
            truth = ad_truth_curve({**record, **measured}, field, curve.values)
            numeric = not isinstance(curve.values[0], str)
            x = curve.values if numeric else list(range(len(curve.values)))
            ax = axes[row, col]
            style = "-" if numeric and len(x) > 3 else "-o"  # a few categories: points joined, not a smooth line
            for k, name in enumerate(curve.output_names):
                ax.plot(x, curve.outputs[:, k], style, color=COLOURS.get(name), label=f"model: {name}", ms=4)
                ax.plot(x, truth[:, k], "--", color=COLOURS.get(name), label=f"truth: {name}", lw=1.2)
            if not numeric:
                ax.set_xticks(x, curve.values)
            elif len(x) <= 5:  # a count such as APOE4 alleles: its own values only
                ax.set_xticks(x, [f"{v:g}" for v in x])
            own = filled[field]
            ax.axvline(float(own) if numeric else x[curve.values.index(own)], color="k", ls=":", lw=1)
            ax.set_xlabel(model.info.schema[field].display_name + " (dotted: the subject's own)", fontsize=8)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(
                    f"{key}: {record['DX']}, {float(record['AGE']):.0f} y, APOE4 {record['APOE4']}", fontsize=8
                )
            if col == 0:
                ax.set_ylabel("probability", fontsize=8)
    axes[0, -1].legend(fontsize=6, loc="center right")
    fig.suptitle(f"{model.info.name}: what-if response (solid) vs the generator's exact answer (dashed)\n"
                 "SYNTHETIC subjects and model - research and teaching only", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
