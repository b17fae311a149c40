"""Benchmark: would the walkthrough's fits train faster as single-thread processes side by side?

The mini profile trains its base models, plain classifier and detectors one after another, each with every core
(torch's intra-op threads). This prints, for a base model's training step (EfficientNet-Lite0, the mini profile's
64 px, batch 32, float32 as `fit` runs on a CPU, Adam), the time of `--steps` steps with all cores, with one
thread, and the wall time of as many single-thread processes as cores each running the same steps side by side:
their throughput against the all-core run is the speed-up a pool of single-thread workers would give. It also says
whether one thread and all cores give the same weights after a few steps (if not, such a pool changes every
trained model's numbers, and the tables must be checked again over seeds).

    python benchmarks/bench_parallel_fits.py [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import torch

from dfxlib.models.backbones import create_backbone
from dfxlib.models.basemodels import network


def train(threads: int, steps: int) -> tuple[float, torch.Tensor]:
    """Seconds for `steps` training steps with `threads` intra-op threads, and the weights after them."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = network("unbalanced", create_backbone("efficientnet_lite0", "imagenet"))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(steps, 32, 3, 64, 64, generator=gen), torch.randint(0, 2, (steps, 32), generator=gen)
    net.train()
    t0 = time.perf_counter()
    for i in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, torch.cat([p.detach().flatten() for p in net.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(train(1, args.steps)[0])
        return
    cores = torch.get_num_threads()
    _, one = train(1, 5)
    _, every = train(cores, 5)
    print(f"weights after 5 steps, 1 thread against {cores}: "
          + ("identical" if torch.equal(one, every) else f"differ (largest {float((one - every).abs().max()):.2e})"))
    t_all, _ = train(cores, args.steps)
    t_one, _ = train(1, args.steps)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--steps", str(args.steps)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(cores)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a worker failed")
    t_side = time.perf_counter() - t0  # includes each process's start-up (imports, model creation)
    t_steps = max(float(o.split()[-1]) for o in outs)  # the slowest worker's steps alone
    print(f"{args.steps} steps, {cores} threads: {t_all:.1f} s; 1 thread: {t_one:.1f} s "
          f"({t_one / t_all:.2f}x the {cores}-thread time)")
    print(f"{cores} single-thread processes side by side, {args.steps} steps each: {t_side:.1f} s wall with start-up, "
          f"{t_steps:.1f} s of steps in the slowest; throughput {cores * t_all / t_side:.2f}x the {cores}-thread "
          f"run's with start-up, {cores * t_all / t_steps:.2f}x without")


if __name__ == "__main__":
    main()
