"""Check ``hyperfusion prepare`` on the sample scans (SYNTHETIC): each is
rotated (up to 15 degrees about each axis), moved (up to 20 mm), resampled
to 1 x 1.2 x 1 mm in LPI orientation at another intensity scale, and then
predicted by the shipped AD and brain-age models three ways: the original,
the native-space scan as it is (with the input gate off: the gate refuses
it, and the column shows the answer it prevents), and the native scan after
preparing. A
contrast-inverted and a pure-noise volume show what the QC refuses.
Prints a Markdown table.

    python scripts/check_prepare.py
    python scripts/check_prepare.py --subjects SYN_DEMO_01 --no-controls
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from napari_hyperfusion.data.input_qc import check_input
from napari_hyperfusion.data.preprocess import Scan, load_scan, scan_from_array
from napari_hyperfusion.data.registration import prepare_scan, qc_verdict
from napari_hyperfusion.infer.subject import predict_subject
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.resources import models_dir, sample_data_dir

NATIVE_AFFINE = np.array([[-1.0, 0, 0, 95], [0, -1.2, 0, 130], [0, 0, 1.0, -85], [0, 0, 0, 1]])
NATIVE_SHAPE = (180, 200, 170)


def to_native(scan: Scan, rng: np.random.Generator) -> tuple[Scan, str]:
    angles, shift = rng.uniform(-15, 15, 3), rng.uniform(-20, 20, 3)
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    motion[:3, 3] = shift
    m = np.linalg.inv(scan.affine) @ np.linalg.inv(motion) @ NATIVE_AFFINE
    data = ndimage.affine_transform(scan.data, m[:3, :3], offset=m[:3, 3], output_shape=NATIVE_SHAPE, order=1)
    how = f"rot ({', '.join(f'{a:.0f}' for a in angles)}) deg, shift ({', '.join(f'{s:.0f}' for s in shift)}) mm"
    return scan_from_array((data * 3.1).astype(np.float32), NATIVE_AFFINE), how


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", default="", help="comma-separated sample IDs (default: all five)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-controls", action="store_true", help="skip the inverted and noise volumes")
    parser.add_argument("--brain-age-model", default=str(models_dir() / "brain_age_hyperfusion.safetensors"),
                        help="the brain-age model file to score (default: the shipped one)")  # fmt: skip
    args = parser.parse_args()
    table = pd.read_csv(sample_data_dir() / "subjects.csv")
    if args.subjects:
        table = table[table["PTID"].isin(args.subjects.split(","))]
    ad = load_model(models_dir() / "ad_hyperfusion.safetensors", "cpu")
    age = load_model(args.brain_age_model, "cpu")
    rng = np.random.default_rng(args.seed)
    print("| subject (SYNTHETIC) | native placement | input gate on the native scan | P(AD) original / native* / "
          "prepared | brain age (y) original / native* / prepared | QC of the prepared scan |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for row in table.to_dict("records"):
        original = load_scan(sample_data_dir() / row["IMAGE"])
        native, how = to_native(original, rng)
        prepared = prepare_scan(native)
        scans = (original, native, prepared.scan)
        # native*: what the model would say with the gate off (the gate refuses these scans)
        p_ad = [predict_subject(ad, s, row, gate=s is not native).values[2] for s in scans]
        ages = [predict_subject(age, s, row, gate=s is not native).values[0] for s in scans]
        verdict = qc_verdict(prepared.qc)[0]
        gate = check_input(native, ad.info.input_stats.get("scan"))
        print(
            f"| {row['PTID']} | {how} | {gate.verdict} (NCC {gate.ncc:.2f}) | {' / '.join(f'{p:.2f}' for p in p_ad)} "
            f"| {' / '.join(f'{a:.1f}' for a in ages)} | {verdict}: NCC {prepared.qc.ncc:.2f}, "
            f"coverage {prepared.qc.coverage:.0%} |"
        )
    if args.no_controls:
        return
    base = load_scan(sample_data_dir() / "SYN_DEMO_02.nii.gz")
    controls = {
        "contrast inverted": np.where(base.data > 0, 255 - base.data, 0),
        "uniform noise": rng.uniform(0, 200, base.data.shape),
    }
    for name, data in controls.items():
        prepared = prepare_scan(scan_from_array(data.astype(np.float32), base.affine))
        verdict, reason = qc_verdict(prepared.qc)
        print(f"| {name} | - | - | - | - | {verdict}: {reason} |")


if __name__ == "__main__":
    main()
