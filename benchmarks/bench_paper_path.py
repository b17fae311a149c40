"""Benchmark: what each stage of the paper path costs per image for each of the paper's backbones.

    python benchmarks/bench_paper_path.py [--device cuda] [--batch-size 32] [--steps 5] [--warmup 2]
                                          [--backbones densenet121,vit_b16] [--json out.json]

For each backbone (default: the paper's 14) at the paper profile's settings (256 px input, ViTs a 224 crop;
its lr, weight decay, Siamese margin and head lr), with random weights (speed does not depend on them):
images/s of an unbalanced base-model training step, of a Siamese step (two images per pair), of pooled
feature extraction, and of a fusion-head step (`dfxlib.workflow.throughput.calibrate`: the training code's step
functions and optimizer). The images are already on the device, so this is the model's side of the bill only:
what the data path has to deliver to keep it busy. `--json` saves every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dfxlib.config import resolve  # noqa: E402
from dfxlib.models.backbones import PAPER_BACKBONES  # noqa: E402
from dfxlib.workflow.throughput import calibrate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backbones", default=",".join(PAPER_BACKBONES))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    cfg = resolve("paper", {"data_root": "."})
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    else:
        print(f"device cpu, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps (median), input "
          f"{cfg.input_size} px, full precision")
    print(f"{'backbone':18s} {'params M':>8s} {'dim':>5s} {'base img/s':>11s} {'siamese img/s':>14s} "
          f"{'features img/s':>15s} {'head img/s':>11s} {'s':>6s}")
    out = []
    for name in args.backbones.split(","):
        t0 = time.perf_counter()
        c = calibrate(name, cfg, args.batch_size, args.device, steps=args.steps, warmup=args.warmup)
        r = c.images_per_s()
        print(f"{name:18s} {c.parameters / 1e6:8.1f} {c.feature_dim:5d} {r['base']:11.0f} {r['siamese']:14.0f} "
              f"{r['features']:15.0f} {r['head']:11.0f} {time.perf_counter() - t0:6.1f}", flush=True)
        out.append(dataclasses.asdict(c) | {"images_per_s": r})
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
