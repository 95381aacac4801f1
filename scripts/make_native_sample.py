"""Make the native-space sample scan: SYN_DEMO_01 (SYNTHETIC) as a scanner
might store it, for trying ``hyperfusion prepare``.

The brain is rotated by (12, -8, 10) degrees and moved by (18, -12, 15) mm,
resampled to 1 x 1.2 x 1 mm voxels in LPI orientation on a 180 x 200 x 170
field of view, and stored as scaled int16 (``scl_slope`` set by nibabel, as
many scanners write it), at another scanner's intensity scale.

    python scripts/make_native_sample.py --out sample_data/native/SYN_DEMO_01_native.nii.gz
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.resources import sample_data_dir

ROTATION_DEG = (12.0, -8.0, 10.0)
SHIFT_MM = (18.0, -12.0, 15.0)
NATIVE_AFFINE = np.array([[-1.0, 0, 0, 95], [0, -1.2, 0, 130], [0, 0, 1.0, -85], [0, 0, 0, 1]])
NATIVE_SHAPE = (180, 200, 170)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="SYN_DEMO_01")
    parser.add_argument("--out", default=str(sample_data_dir() / "native" / "SYN_DEMO_01_native.nii.gz"))
    args = parser.parse_args()
    scan = load_scan(sample_data_dir() / f"{args.subject}.nii.gz")
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_euler("xyz", ROTATION_DEG, degrees=True).as_matrix()
    motion[:3, 3] = SHIFT_MM
    # native voxel -> native world -> (undo the motion) -> MNI world -> sample voxel
    to_source = np.linalg.inv(scan.affine) @ np.linalg.inv(motion) @ NATIVE_AFFINE
    data = ndimage.affine_transform(
        scan.data, to_source[:3, :3], offset=to_source[:3, 3], output_shape=NATIVE_SHAPE, order=1
    )
    # int16 counts with scl_slope 0.1, as many scanners write them; nibabel
    # resets the scaling of an array it is given, so it goes into the header after
    img = nib.Nifti1Image(np.round(data * 31.0).astype(np.int16), NATIVE_AFFINE)
    img.header["descrip"] = b"SYNTHETIC native-space sample (not a real scan)"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plain = out.with_name(out.name.removesuffix(".gz"))
    nib.save(img, str(plain))
    with open(plain, "r+b") as f:
        header = nib.Nifti1Header.from_fileobj(f)
        header["scl_slope"], header["scl_inter"] = 0.1, 0.0
        f.seek(0)
        f.write(header.binaryblock)
    if out.suffix == ".gz":
        with open(plain, "rb") as src, gzip.GzipFile(out, "wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    print(f"wrote {out} ({'x'.join(map(str, NATIVE_SHAPE))}, SYNTHETIC)")


if __name__ == "__main__":
    main()
