"""MedFusionNet against the HyperFusion AD model at the same input size:
parameters, forward and forward+backward time, decode-only time (what a
what-if slider move costs) and peak memory, plus the note encoder.

    python benchmarks/bench_medfusion.py [--device all|cpu|cuda] [--batch 4] [--repeats 5]

Sizes: "shipped" is what the demo models read (one 24 x 32 x 24 hippocampus
crop at 2 mm, 8 base filters); "paper" is the HyperFusion paper's crop
(64 x 96 x 64, 16 base filters; MedFusionNet with 16 base filters, growth
16, attention width 64). Both networks get 4 labels and the 16 EHR numbers;
MedFusionNet also the note (385 numbers). Times: median of ``--repeats``
runs after one warm-up. Memory: on the CPU the activations autograd keeps
for the backward pass of one training forward (counted exactly); on CUDA
the peak allocated during one forward+backward. Ratios are MedFusionNet /
HyperFusion from this run.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import devices, machine_line, median_ms, print_table

from napari_hyperfusion.data.notes import NOTE_DIM
from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.config import ModelConfig, paper_ad_config

SIZES = {
    "shipped": {"input_shape": (24, 32, 24), "base_filters": 8, "medfusion": {"growth": 8, "attn_dim": 32}},
    "paper": {"input_shape": (64, 96, 64), "base_filters": 16, "medfusion": {"growth": 16, "attn_dim": 64}},
}


def make_config(model: str, size: str) -> ModelConfig:
    s = SIZES[size]
    if model == "hyperfusion":
        return paper_ad_config("hyperfusion", input_shape=s["input_shape"], base_filters=s["base_filters"], n_outputs=4)
    return ModelConfig(
        backbone="medfusion", fusion="medfusion", n_outputs=4, input_shape=s["input_shape"],
        base_filters=s["base_filters"], tabular_columns=tuple(range(0, 16, 2)), note_dim=NOTE_DIM, **s["medfusion"],
    )  # fmt: skip


def _inputs(config: ModelConfig, batch: int, device: torch.device):
    return torch.randn(batch, 1, *config.input_shape, device=device), torch.randn(
        batch, config.input_dim, device=device
    )


def activation_mib(net: torch.nn.Module, image: torch.Tensor, tab: torch.Tensor) -> float:
    """MiB of tensors autograd keeps for the backward pass of one training
    forward (each storage counted once): the activation memory, the part of
    training memory that grows with the input; counted, not sampled, so
    the same on a busy machine."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    net.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(image, tab)
    return sum(storages.values()) / 2**20


def cuda_peak_mib(net: torch.nn.Module, image: torch.Tensor, tab: torch.Tensor) -> float:
    """Peak CUDA memory above the model and inputs during one forward+backward."""
    device = image.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    net.train()
    net(image, tab).sum().backward()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="shipped,paper")
    args = parser.parse_args()
    print(machine_line())
    for device in devices(args.device):
        rows = []
        for size in args.sizes.split(","):
            results = {}
            for model in ("hyperfusion", "medfusion"):
                config = make_config(model, size)
                net = build_model(config).to(device)
                image, tab = _inputs(config, args.batch, device)
                params = sum(p.numel() for p in net.parameters())
                net.eval()
                with torch.no_grad():
                    fwd = median_ms(lambda: net(image, tab), device, args.repeats)
                    features = net.encode_image(image[:1])
                    decode = median_ms(lambda: net.decode(features, tab[:1]), device, args.repeats * 4)
                net.train()

                def step() -> None:
                    net.zero_grad(set_to_none=True)
                    net(image, tab).sum().backward()

                train = median_ms(step, device, args.repeats)
                memory = activation_mib(net, image, tab)
                if device.type == "cuda":
                    memory = cuda_peak_mib(net, image, tab)
                results[model] = (params, fwd, train, decode, memory)
                rows.append([size, model, f"{params / 1e6:.2f} M", fwd, train, decode, memory])
            h, m = results["hyperfusion"], results["medfusion"]
            rows.append([size, "ratio MedFusion / HyperFusion", f"{m[0] / h[0]:.2f}x",
                         f"{m[1] / h[1]:.2f}x", f"{m[2] / h[2]:.2f}x", f"{m[3] / h[3]:.2f}x", f"{m[4] / max(h[4], 1e-6):.2f}x"])  # fmt: skip
        print(f"\n### {device.type}, batch {args.batch}\n")
        print_table(
            ["input", "model", "parameters", "forward ms", "fwd+bwd ms", "decode ms (1 scan)", "memory MiB"], rows
        )
    from napari_hyperfusion.data.notes import embed_notes

    note = "Reports forgetting recent conversations. Spouse reports repeated questions. Mother had Alzheimer's disease."
    embed_notes(["warm-up sentence."])
    start = time.perf_counter()
    embed_notes([note + f" Visit {i}." for i in range(32)])
    per_note = (time.perf_counter() - start) / 32 * 1e3
    print(f"\nNote encoder (all-MiniLM-L6-v2, CPU): {per_note:.1f} ms per new note in a batch of 32; "
          "a repeated note is memoised.")  # fmt: skip


if __name__ == "__main__":
    main()
