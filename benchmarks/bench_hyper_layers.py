"""Which computation form is fastest for each hyper layer? (the basis of ``form="auto"``)

Prints, per layer shape and batch size, the median time of each form and
checks that every form gives the same result as the per-sample loop.

    python benchmarks/bench_hyper_layers.py [--device all|cpu|cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch
from common import devices, interleaved_ms, machine_line, print_table

from napari_hyperfusion.nn.hyper import HyperConv3d, HyperLinear

# (label, in, out, kernel, stride, padding, input spatial size)
CONV_CASES = [
    ("AD block4 shortcut 1x1x1 s2", 128, 256, 1, 2, 0, (8, 12, 8)),
    ("AD block3 conv1 3x3x3 s2", 64, 128, 3, 2, 1, (16, 24, 16)),
    ("AD block4 conv2 3x3x3", 256, 256, 3, 1, 1, (4, 6, 4)),
]
LINEAR_CASES = [
    ("AD fc1 256->64 (emb 8)", 256, 64, 8),
    ("brain-age fc1 flat->16 (emb 1)", 64 * 10 * 12 * 10, 16, 1),
    ("brain-age fc4 64->1 (emb 1)", 64, 1, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", default="1,8,64")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print(machine_line())
    rows = []
    torch.manual_seed(0)
    for device in devices(args.device):
        with torch.no_grad():
            for label, cin, cout, k, s, p, spatial in CONV_CASES:
                forms = ["bmm", "grouped", "loop"] if k == 1 else ["grouped", "loop"]
                for batch in batches:
                    x = torch.randn(batch, cin, *spatial, device=device)
                    e = torch.randn(batch, 8, device=device)
                    layer = HyperConv3d(cin, cout, k, 8, stride=s, padding=p).to(device)
                    layer.form = "loop"
                    ref = layer(x, e)
                    runs = {}
                    for form in forms:
                        layer.form = form
                        err = (layer(x, e) - ref).abs().max().item()
                        assert err < 1e-3, (label, form, err)
                        # one layer per form, called round-robin: a slow spell hits every form alike
                        twin = HyperConv3d(cin, cout, k, 8, stride=s, padding=p, form=form).to(device)
                        twin.load_state_dict(layer.state_dict())
                        runs[form] = lambda t=twin: t(x, e)
                    times = interleaved_ms(runs, device, args.repeats)
                    layer.form = "auto"
                    best = min(times, key=times.get)
                    rows.append(
                        [device.type, label, batch]
                        + [times.get(f, "-") for f in ("bmm", "grouped", "loop")]
                        + ["-", "-", layer.resolved_form(x), best]  # auto: measured on this input at first use
                    )
            for label, fin, fout, emb in LINEAR_CASES:
                for batch in batches:
                    x = torch.randn(batch, fin, device=device)
                    e = torch.randn(batch, emb, device=device)
                    layer = HyperLinear(fin, fout, emb, form="loop").to(device)
                    ref = layer(x, e)
                    runs = {}
                    for form in ("factored", "einsum", "loop"):
                        layer.form = form
                        assert (layer(x, e) - ref).abs().max().item() < 1e-2
                        twin = HyperLinear(fin, fout, emb, form=form).to(device)
                        twin.load_state_dict(layer.state_dict())
                        runs[form] = lambda t=twin: t(x, e)
                    times = interleaved_ms(runs, device, args.repeats)
                    best = min(times, key=times.get)
                    rows.append(
                        [
                            device.type,
                            label,
                            batch,
                            "-",
                            "-",
                            times["loop"],
                            times["factored"],
                            times["einsum"],
                            "factored",
                            best,
                        ]
                    )
    print_table(
        [
            "device",
            "layer",
            "batch",
            "bmm ms",
            "grouped ms",
            "loop ms",
            "factored ms",
            "einsum ms",
            "auto picks",
            "fastest",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
