"""Benchmark: images/s delivered to a model at 256 px from PNG files, today's way against the uint8 store.

    python benchmarks/bench_pixels.py [--files 2000] [--size 256] [--image-size 384] [--batch-size 64]

Writes `--files` PNGs of `--image-size` px (smooth colour fields with noise, so they compress like photos
rather than like pure noise) and measures, in the same run, with a DenseNet-121's preprocessing at `--size`:
- decode every time (`ImageStore(keep=False).batch`, what the paper profile did every epoch): decode, resize,
  convert, normalise on the CPU;
- first pass into the store (`PixelStore.ensure`: decode and resize once, written to disk) with 1 and 2
  decoding threads, then the store's rows as uint8 batches;
- from the store: uint8 batches in random order through `pixels.loader` (what a GPU receives; it converts and
  normalises them itself), and the same batches converted and normalised on the CPU, for comparison;
- a first epoch through `pixels.loader` on an empty store: seconds until its first batch (the loader decodes
  each batch as it comes up) against seconds for the whole decode pass the first batch used to wait for.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dfxlib.data.batches import ImageStore, order  # noqa: E402
from dfxlib.data.pixels import PixelStore, loader  # noqa: E402
from dfxlib.models.backbones import preprocess  # noqa: E402


def make_images(root: Path, n: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    rels = []
    for i in range(n):
        field = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size),
                                                                                        Image.Resampling.BICUBIC)
        arr = np.clip(np.asarray(field, dtype=np.int16) + rng.integers(-6, 7, (size, size, 3)), 0, 255)
        rel = f"{i // 1000:03d}/{i:06d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.astype(np.uint8)).save(root / rel)
        rels.append(rel)
    return rels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256, help="network input side")
    ap.add_argument("--image-size", type=int, default=384, help="side of the PNG files")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dfx-bench-pixels-"))
    t0 = time.perf_counter()
    rels = make_images(tmp / "data", args.files, args.image_size)
    kb = sum((tmp / "data" / r).stat().st_size for r in rels) / len(rels) / 1024
    print(f"{args.files} PNGs of {args.image_size} px ({kb:.0f} KB each) written in {time.perf_counter() - t0:.0f} s;"
          f" input {args.size} px, batch {args.batch_size}, {torch.get_num_threads()} torch threads")
    tf = preprocess("densenet121", args.size)
    bs = args.batch_size
    shuffled = [rels[i] for i in order(len(rels), 0, 1)]
    batches = [shuffled[i:i + bs] for i in range(0, len(shuffled), bs)]

    images = ImageStore(tmp / "data", keep=False)
    t0 = time.perf_counter()
    for b in batches:
        images.batch(b, tf)
    today = len(rels) / (time.perf_counter() - t0)
    print(f"decode every time (today's path, float batches)      : {today:8.0f} images/s")

    for workers in (1, 2):
        shutil.rmtree(tmp / "pixels", ignore_errors=True)
        store = PixelStore(tmp / "pixels", ImageStore(tmp / "data", keep=False), args.size, workers=workers)
        t0 = time.perf_counter()
        store.ensure(rels)
        built = time.perf_counter() - t0
        print(f"first pass into the store, {workers} thread(s)                : {len(rels) / built:8.0f} images/s "
              f"= {len(rels) / built / today:5.2f}x today ({store.data.stat().st_size / 2**20:.0f} MB on disk)")

    shutil.rmtree(tmp / "cold", ignore_errors=True)
    cold = PixelStore(tmp / "cold", ImageStore(tmp / "data", keep=False), args.size, workers=2)
    t0 = time.perf_counter()
    epoch = loader(cold, batches)
    next(epoch)
    first = time.perf_counter() - t0
    sum(len(x) for x in epoch)
    print(f"first epoch on an empty store: first batch after {first:.2f} s, the whole decode pass "
          f"{time.perf_counter() - t0:.1f} s (the first batch waited for all of it before)")

    t0 = time.perf_counter()
    n = sum(len(x) for x in loader(store, batches))
    rate = n / (time.perf_counter() - t0)
    print(f"from the store, uint8 batches (what a GPU receives)    : {rate:8.0f} images/s = {rate / today:5.1f}x today")
    t0 = time.perf_counter()
    for x in loader(store, batches):
        tf(x)
    rate = len(rels) / (time.perf_counter() - t0)
    print(f"from the store, converted and normalised on this CPU   : {rate:8.0f} images/s = {rate / today:5.1f}x today")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
