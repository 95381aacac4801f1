"""Reading DICOM series: time and memory, beside reading the same volume as NIfTI.

    python benchmarks/bench_dicom.py [--repeats 3] [--files 100000]

A clinical 3D T1 (SYN_DEMO_01 resampled to 1 mm: 176 sagittal slices of
256 x 256, scaled int16, as a folder of classic files and as one enhanced
multi-frame file) is read with the plugin's reader: headers (finding and
grouping the series), pixels (ordering, decoding, rescaling, canonical
reorientation) and the whole ``load_scan``; the same volume as a
``.nii.gz`` is the baseline. A folder of ``--files`` empty ``.dcm`` files
measures the refusal of a study archive, which must come before any file is
opened. Peak memory is Python's allocations (tracemalloc) during the step.
Times are medians of ``--repeats``, all in one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
from common import machine_line, print_table
from scipy import ndimage

from napari_hyperfusion.data.dicom import find_series, read_series
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.data.scan_file import open_nifti, read_canonical
from napari_hyperfusion.errors import ImageError
from napari_hyperfusion.resources import sample_data_dir
from napari_hyperfusion.synth.dicom_series import quantize, write_series


def _clinical_t1() -> tuple[np.ndarray, np.ndarray]:
    """SYN_DEMO_01 on a 176 x 256 x 256 grid of 1 mm (a sagittal MPRAGE's)."""
    data, affine = read_canonical(open_nifti(sample_data_dir() / "SYN_DEMO_01.nii.gz"))
    shape = (176, 256, 256)
    zoom = np.array(shape) / np.array(data.shape)
    values = ndimage.zoom(data, zoom, order=1)
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] / zoom
    return quantize(values * 3.7)[0], new


def _measure(fn, repeats: int) -> tuple[float, float]:
    """(median ms, peak MiB of Python allocations in the first run)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--files", type=int, default=100_000, help="files in the study-archive folder")
    args = parser.parse_args()
    print(machine_line())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        values, affine = _clinical_t1()
        nifti = root / "t1.nii.gz"
        nib.save(nib.Nifti1Image(values, affine), nifti)
        classic, enhanced = root / "classic", root / "enhanced"
        write_series(values, affine, classic, acquisition="sagittal", seed=1)
        write_series(values, affine, enhanced, acquisition="sagittal", seed=2, enhanced=True)
        baseline, baseline_peak = _measure(lambda: load_scan(nifti), args.repeats)
        rows.append(["NIfTI .nii.gz (baseline)", "load_scan", baseline, baseline_peak, 1.0])
        for name, folder in (("176 classic files", classic), ("1 enhanced file", enhanced)):
            series = find_series(folder)[0]
            for step, fn in (
                ("headers (find_series)", lambda folder=folder: find_series(folder)),
                ("pixels (read_series)", lambda series=series: read_series(series)),
                ("load_scan", lambda folder=folder: load_scan(folder)),
            ):
                ms, peak = _measure(fn, args.repeats)
                rows.append([name, step, ms, peak, ms / baseline if step == "load_scan" else ""])
        archive = root / "archive"
        for i in range(args.files + 1):
            sub = archive / f"{i // 10_000:02d}"
            if i % 10_000 == 0:
                sub.mkdir(parents=True)
            (sub / f"{i}.dcm").touch()

        def refuse() -> None:
            try:
                find_series(archive)
            except ImageError:
                return
            raise AssertionError("the archive was not refused")

        ms, peak = _measure(refuse, args.repeats)
        rows.append([f"{args.files + 1:,} empty files", "refused (find_series)", ms, peak, ""])
    print_table(["input", "step", "median ms", "peak MiB", "x NIfTI"], rows)


if __name__ == "__main__":
    main()
