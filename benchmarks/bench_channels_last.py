"""Benchmark: the networks dfx trains, in the usual (NCHW) layout against channels-last (NHWC).

The setting `memory_format` (default "channels_last", `backbones.in_layout`) puts every backbone's and compared
detector's convolutions in channels-last layout, as timm's `--channels-last` does; "contiguous" keeps the usual one.
This prints, for each network at the mini profile's shapes (64 px, batch 32 for a training step with its backward
pass, 256 for an evaluation batch; SSP's 32 px patches), the seconds per batch in
each layout and their ratio (above 1: channels-last is faster), and how far the two layouts' outputs lie apart
for the same weights (float rounding: the layouts sum in other orders, so trained weights, and the tables, move
within training's own noise; `dfx run --seeds` checks the claims).

    python benchmarks/bench_channels_last.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

from dfxlib.detectors.nets import BackboneLogit, GANFingerprint, SimpleCNN, SSPNet
from dfxlib.models.backbones import create_backbone
from dfxlib.models.basemodels import network


def seconds(make: Callable[[], nn.Module], shape: tuple[int, ...], layout: torch.memory_format, train: bool,
            repeats: int) -> tuple[float, torch.Tensor]:
    """Seconds per batch of a fresh seeded network in `layout` (a training step's forward and backward, or an
    evaluation forward), and its output on the first batch."""
    torch.manual_seed(0)
    net = make().to(memory_format=layout).train(train)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))

    def once() -> torch.Tensor:
        if not train:
            with torch.no_grad():
                return net(x)
        net.zero_grad(set_to_none=True)
        out = net(x)
        out.float().square().mean().backward()
        return out.detach()
    torch.manual_seed(2)  # dropout draws the same masks in both layouts
    first = once()
    once()
    t0 = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - t0) / repeats, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=8)
    args = ap.parse_args()
    lite0 = lambda: network("unbalanced", create_backbone("efficientnet_lite0", "imagenet"))  # noqa: E731
    cases = [
        ("EfficientNet-Lite0 base model, training step", lite0, (32, 3, 64, 64), True),
        ("EfficientNet-Lite0 base model, evaluation batch", lite0, (256, 3, 64, 64), False),
        ("SimpleCNN, training step", lambda: SimpleCNN(64), (32, 3, 64, 64), True),
        ("Wang2020 (test_resnet), training step", lambda: BackboneLogit(create_backbone("test_resnet", "none")),
         (32, 3, 64, 64), True),
        ("SSP (test_resnet), training step", lambda: SSPNet(create_backbone("test_resnet", "none"), 64),
         (32, 3, 32, 32), True),
        ("GANFingerprint (test_resnet), training step",
         lambda: GANFingerprint(create_backbone("test_resnet", "none")), (32, 3, 64, 64), True),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; seconds per batch (mean of {args.repeats})")
    print(f"{'network':50s} {'NCHW':>9s} {'NHWC':>9s} {'ratio':>6s} {'max |output difference|':>24s}")
    for name, make, shape, train in cases:
        a, out_a = seconds(make, shape, torch.contiguous_format, train, args.repeats)
        b, out_b = seconds(make, shape, torch.channels_last, train, args.repeats)
        diff = float((out_a - out_b).abs().max())
        print(f"{name:50s} {a:9.4f} {b:9.4f} {a / b:6.2f} {diff:24.2e}", flush=True)


if __name__ == "__main__":
    main()
