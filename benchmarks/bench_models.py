"""Forward and forward+backward time of every architecture at the paper's
input sizes, and the decode-only time with cached image features.

    python benchmarks/bench_models.py [--device all|cpu|cuda] [--batch 4] [--repeats 3]

Input sizes: AD task 64 x 96 x 64 (one hippocampus crop, as in the paper);
brain age 80 x 96 x 80 (a 2 mm MNI-space brain, our choice). Times are the
median of ``--repeats`` runs after one warm-up, per batch of ``--batch``
(default 4 on the CPU, 32 on CUDA), with the models' calls interleaved
round-robin so that the ratios between them hold on a shared machine. The last table compares, for one scan
(batch 1, eval mode), the full forward with ``decode`` from cached features:
what a what-if slider move costs.
"""

from __future__ import annotations

import argparse

import torch
from common import devices, interleaved_ms, machine_line, print_table

from napari_hyperfusion.nn.build import build_model
from napari_hyperfusion.nn.config import paper_ad_config, paper_brain_age_config

AD_FUSIONS = ("hyperfusion", "imaging", "tabular", "concat", "film", "daft")
AGE_FUSIONS = ("hyperfusion", "imaging", "tabular", "concat")


def configs():
    for fusion in AD_FUSIONS:
        yield "AD", paper_ad_config(fusion)
    for fusion in AGE_FUSIONS:
        yield "brain age", paper_brain_age_config(fusion)


def inputs(config, batch, device):
    image = torch.randn(batch, 1, *config.input_shape, device=device)
    if config.backbone == "brain_age_cnn":
        tabular = torch.nn.functional.one_hot(torch.arange(batch) % 2, 2).float().to(device)
    else:
        tabular = torch.randn(batch, config.tabular_dim, device=device)
    return image, tabular


def _warm_up(device, batch) -> None:
    """One untimed pass so that the first row does not pay for thread-pool
    and allocator start-up."""
    config = paper_ad_config("imaging")
    net = build_model(config).to(device).eval()
    with torch.no_grad():
        for _ in range(2):
            net(*inputs(config, batch, device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all")
    parser.add_argument("--batch", type=int, default=None, help="default: 4 on CPU, 32 on CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated fusions to run (default: all)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    print(machine_line())
    train_rows, decode_rows = [], []
    for device in devices(args.device):
        batch = args.batch or (32 if device.type == "cuda" else 4)
        _warm_up(device, batch)
        nets = {}
        for task, config in configs():
            if only and config.fusion not in only:
                continue
            torch.manual_seed(0)
            nets[(task, config.fusion)] = (config, build_model(config).to(device), inputs(config, batch, device))

        def forward(net, x):
            def run():
                net.eval()
                with torch.no_grad():
                    net(*x)

            return run

        def step(net, x):
            def run():
                net.train()
                net.zero_grad(set_to_none=True)
                net(*x).square().mean().backward()

            return run

        fwd = interleaved_ms({k: forward(n, x) for k, (_, n, x) in nets.items()}, device, args.repeats)
        fwd_bwd = interleaved_ms({k: step(n, x) for k, (_, n, x) in nets.items()}, device, args.repeats)
        singles, decodes = {}, {}
        caches = {}
        for key, (config, net, _) in nets.items():
            net.eval()
            one = inputs(config, 1, device)
            with torch.no_grad():
                features = net.encode_image(one[0])
            caches[key] = (features, one)
            singles[key] = forward(net, one)
            decodes[key] = lambda n=net, f=features, t=one[1]: n.decode(f, t)
        with torch.no_grad():
            full = interleaved_ms(singles, device, max(args.repeats, 5))
            dec = interleaved_ms(decodes, device, 50)
        for key, (config, net, _) in nets.items():
            task = key[0]
            reference = fwd.get((task, "imaging"))
            params = sum(p.numel() for p in net.parameters())
            shape = "x".join(map(str, config.input_shape))
            ratio = f"{fwd[key] / reference:.2f}" if reference else "-"
            train_rows.append([device.type, task, config.fusion, shape, batch, f"{params / 1e6:.2f}M", fwd[key],
                               ratio, fwd_bwd[key], fwd[key] / batch])  # fmt: skip
            cached = sum(v.numel() for v in caches[key][0].values()) * 4 / 1024
            decode_rows.append([device.type, task, config.fusion, full[key], dec[key], f"{full[key] / dec[key]:.0f}x",
                                f"{cached:.0f}"])  # fmt: skip
    print()
    print_table(
        ["device", "task", "fusion", "input", "batch", "params", "forward ms", "forward / imaging", "fwd+bwd ms",
         "forward ms/sample"],
        train_rows,
    )  # fmt: skip
    print()
    print_table(
        ["device", "task", "fusion", "full forward ms (1 scan)", "decode ms (cached)", "speed-up", "cache KiB"],
        decode_rows,
    )


if __name__ == "__main__":
    main()
