"""Mid-slice montage of the shipped sample subjects -> docs/sample_subjects.png.

python scripts/make_data_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    table = pd.read_csv(ROOT / "sample_data" / "subjects.csv")
    fig, axes = plt.subplots(3, len(table), figsize=(2.6 * len(table), 7.6), facecolor="black")
    for col, row in table.iterrows():
        data = np.asarray(nib.load(ROOT / "sample_data" / row.IMAGE).dataobj, dtype=float)
        x, y, z = (s // 2 for s in data.shape)
        views = [data[x - 8], data[:, y - 2], data[:, :, z - 4]]  # sagittal through the hippocampus, coronal, axial
        for r, view in enumerate(views):
            ax = axes[r, col]
            ax.imshow(view.T, origin="lower", cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        apoe = "?" if pd.isna(row.APOE4) else int(row.APOE4)
        axes[0, col].set_title(
            f"{row.PTID}\n{row.DX}, {row.AGE:.0f} y, {row.PTGENDER}, APOE4 {apoe}", color="white", fontsize=9
        )
    fig.suptitle("SYNTHETIC subjects (MNI152 template, deformed) - not real patients", color="orange", fontsize=11)
    fig.tight_layout()
    out = ROOT / "docs" / "sample_subjects.png"
    fig.savefig(out, dpi=80, facecolor="black")
    print("wrote", out)


if __name__ == "__main__":
    main()
