"""Time and peak memory of each attribution method on the shipped models.

    python benchmarks/bench_explain.py [--device cpu|cuda] [--repeats 3]

Each (model, method) runs in a fresh process so that its peak resident
memory (``ru_maxrss``, CPU) or peak CUDA allocation is its own; the table
shows the increase over the same process after loading the model and the
scan. Time is the median of ``--repeats`` runs after one warm-up.
Settings are the panel's defaults: IG 32 steps against the zero baseline,
occlusion with a 6-voxel cube and stride 3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import machine_line, print_table

CHILD = r"""
import json, resource, statistics, sys, time, torch
from napari_hyperfusion.analysis.explain import attribute_image, attribute_tabular
from napari_hyperfusion.io.model_file import load_model
from napari_hyperfusion.data.preprocess import load_scan
from napari_hyperfusion.resources import models_dir, sample_data_dir
from napari_hyperfusion.samples import SUBJECTS, subject_record
model_name, method, device, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
key = "sub-old" if "brain_age" in model_name else "SYN_DEMO_01"
model = load_model(models_dir() / f"{model_name}.safetensors", device)
scan, record = load_scan(sample_data_dir() / SUBJECTS[key][0]), subject_record(key)
run = (lambda: attribute_tabular(model, scan, record)) if method == "ehr_ig" else (
    lambda: attribute_image(model, scan, record, method))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
run()
times = []
for _ in range(repeats):
    start = time.perf_counter(); run(); times.append(time.perf_counter() - start)
peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
print(json.dumps({"seconds": statistics.median(times), "peak_mib": peak}))
"""


METHODS = ("saliency", "gradcam", "integrated_gradients", "occlusion", "ehr_ig")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--models", default="ad_hyperfusion,brain_age_hyperfusion", help="shipped models, comma-separated"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="methods, comma-separated")
    args = parser.parse_args()
    print(machine_line())
    rows = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            out = subprocess.run([sys.executable, "-c", CHILD, model, method, args.device, str(args.repeats)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append([args.device, model, method, result["seconds"], result["peak_mib"]])
    print_table(["device", "model", "method", "seconds", "extra peak MiB"], rows)


if __name__ == "__main__":
    main()
