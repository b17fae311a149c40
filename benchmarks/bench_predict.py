"""Benchmark: `dfx predict` throughput against the bare forward pass of the same model, and its memory.

    python benchmarks/bench_predict.py [--files 3000] [--size 64] [--backbone test_resnet] [--input-size 64]
    python benchmarks/bench_predict.py --files 100000 --size 32 --workers 2   # memory on 100,000 files

Writes `--files` PNGs of `--size` px into a temporary folder (nested, 1,000 per folder), makes a complete model
of seeded random weights (speed does not depend on training), then measures:
- bare forward: the complete model (three backbones + fusion head) on already-preprocessed batches;
- dfx predict: the full path (walk the folder, decode, preprocess, forward, write CSV rows), 1 and 2 decode
  workers; images/s and the ratio to the bare forward (target: at least 80%);
- resident memory (RSS) of the process at 10%, 50% and 100% of the files: flat when streaming.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture import make_run  # noqa: E402

from dfxlib.predict import inference, files  # noqa: E402


def rss_mb() -> float:
    """Resident memory of this process (MB), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_images(root: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"part{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64, help="side of the image files")
    ap.add_argument("--backbone", default="test_resnet")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="decode-worker counts to measure, e.g. 2")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dfx-bench-predict-"))
    t0 = time.perf_counter()
    make_images(tmp / "images", args.files, args.size)
    print(f"{args.files} PNGs of {args.size} px written in {time.perf_counter() - t0:.1f} s")
    pred = inference.load_predictor(make_run(tmp / "run", args.backbone, input_size=args.input_size), device="cpu")
    bs = args.batch_size

    # bare forward on preprocessed batches (a sample of the files, repeated to the same count)
    sample = sorted((tmp / "images").rglob("*.png"))[: min(args.files, 8 * bs)]
    x = torch.stack([pred.transform(Image.open(p).convert("RGB")) for p in sample])
    with torch.no_grad():
        pred.model(x[:bs])  # warm-up
        t0, done = time.perf_counter(), 0
        while done < args.files:
            k = min(bs, args.files - done)
            j = done % len(x)
            torch.softmax(pred.model(x[j:j + k] if j + k <= len(x) else x[:k]), 1)
            done += k
        bare = args.files / (time.perf_counter() - t0)
    print(f"model {pred.name} at {pred.input_size} px, batch {bs}, {torch.get_num_threads()} threads")
    print(f"bare forward (3 backbones + head)  : {bare:8.1f} images/s")

    for workers in (int(w) for w in args.workers.split(",")):
        marks = {int(args.files * f): f for f in (0.1, 0.5, 1.0)}
        mem = []
        t0 = time.perf_counter()
        with open(os.devnull, "w") as sink:
            def rows():
                for n, r in enumerate(inference.predict_paths(pred, [str(tmp / "images")], bs, workers=workers), 1):
                    if n in marks:
                        mem.append(f"{int(marks[n] * 100)}%: {rss_mb():.0f} MB")
                    yield r
            n = files.write_csv(rows(), sink, inference.columns())
        rate = n / (time.perf_counter() - t0)
        print(f"dfx predict, {workers} decode worker(s): {rate:8.1f} images/s = {100 * rate / bare:5.1f}% of bare "
              f"(target >= 80%); RSS {', '.join(mem)}")


if __name__ == "__main__":
    main()
