"""Benchmark: indexing speed (files per second) and memory on a synthetic tree, at two sizes.

    python benchmarks/bench_index.py [--files 100000] [--check header]

Prints files/s for a cold index (headers read, files hashed) and a warm one (per-file cache), at N/10 and N
files: linear scaling shows as similar rates; flat memory as a peak RSS that grows only with the table.
"""

from __future__ import annotations

import argparse
import io
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dfxlib.data.index import build_index


def make_tree(root: Path, n: int, seed: int = 0) -> None:
    """n tiny unique PNGs spread over the paper layout (10 generators per family, 3 families)."""
    rng = np.random.default_rng(seed)
    folders = [root / fam / f"g{g}" for fam in ("dm_generated", "gan_generated", "real") for g in range(10)]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    for i in range(n):
        arr = base.copy()
        arr.flat[: 8] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)  # unique content
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
        (folders[i % len(folders)] / f"{i:07d}.png").write_bytes(buf.getvalue())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--check", default="header", choices=["header", "full"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dfx-bench-index-"))
    try:
        rates = {}
        for n in (args.files // 10, args.files):
            root = work / f"tree{n}"
            t0 = time.perf_counter()
            make_tree(root, n)
            print(f"built {n} files in {time.perf_counter() - t0:.1f} s")
            cache = work / f"cache{n}.csv"
            for phase in ("cold", "warm"):
                t0 = time.perf_counter()
                idx = build_index(root, check=args.check, cache=cache, progress=False)
                dt = time.perf_counter() - t0
                assert len(idx.usable) == n, (len(idx.usable), n)
                rates[(n, phase)] = n / dt
                print(f"{n:>8} files  {phase}: {dt:7.2f} s  {n / dt:9.0f} files/s  peak RSS {peak_rss_mb():.0f} MB")
            shutil.rmtree(root)
        small, big = args.files // 10, args.files
        for phase in ("cold", "warm"):
            print(f"linearity ({phase}): rate at {big} / rate at {small} = "
                  f"{rates[(big, phase)] / rates[(small, phase)]:.2f} (1.00 = perfectly linear)")
        print(f"warm/cold speed-up at {big}: {rates[(big, 'warm')] / rates[(big, 'cold')]:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
