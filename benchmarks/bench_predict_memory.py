"""Benchmark: peak memory of `dfx predict` on huge images against small ones (flat in image size).

    python benchmarks/bench_predict_memory.py [--files 8] [--huge 9000] [--small 64] [--input-size 64]

Writes `--files` black PNGs of `--huge` px (a few hundred KB each: small files, huge rasters), the same number
of JPEGs and of 16-bit grayscale PNGs (PNG16) of that size, and `--files` noise PNGs of `--small` px, then runs
`dfx predict`'s path (`inference.predict_paths`, 2 decode workers) on each folder in a fresh process and prints
that process's peak
resident memory (ru_maxrss). The huge folders are measured twice: as dfx decodes now (reduced to the input size
while decoding, one huge raster at a time) and with the reduction switched off (every image decoded at full
size and handed whole to the model's resize, the path before), so the figures compare in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture import make_run  # noqa: E402

from dfxlib.predict import inference  # noqa: E402


def _prepare_full_size(pred: inference.Predictor, items: list) -> inference._Batch:
    """The path before (d55df2f): a whole batch decoded at full size, then preprocessed together."""
    imgs, errors = [], []
    for name, data in items:
        try:
            imgs.append(inference.decode(name, data))
            errors.append("")
        except Exception as exc:
            errors.append(str(exc))
    x = torch.stack([pred.transform(img) for img in imgs]) if imgs else None
    return inference._Batch([n for n, _ in items], errors, [""] * len(items), x)


def child(images: str, run: str, full_size: bool) -> None:
    """Predict every file of `images` with the model of `run`; print rows and peak RSS (MB) as JSON."""
    if full_size:
        inference._prepare = _prepare_full_size
    pred = inference.load_predictor(run, device="cpu")
    t0 = time.perf_counter()
    rows = list(inference.predict_paths(pred, [images], batch_size=64, workers=2))
    errors = sum(bool(r["error"]) for r in rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(rows=len(rows), errors=errors, peak_mb=peak, seconds=time.perf_counter() - t0)))


def measure(images: Path, run: Path, full_size: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", str(images), "--run", str(run)] + (["--full-size"] if full_size else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--huge", type=int, default=9000, help="side of the huge images")
    ap.add_argument("--small", type=int, default=64, help="side of the small images")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--run", default="", help=argparse.SUPPRESS)
    ap.add_argument("--full-size", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.run, args.full_size)

    tmp = Path(tempfile.mkdtemp(prefix="dfx-bench-predict-memory-"))
    t0 = time.perf_counter()
    folders = {name: tmp / name for name in ("small", "huge_png", "huge_jpeg", "huge_png16")}
    for f in folders.values():
        f.mkdir()
    rng = np.random.default_rng(0)
    black = Image.new("RGB", (args.huge, args.huge))
    black16 = Image.new("I;16", (args.huge, args.huge))  # 16-bit grayscale (#32 item 7: 2.9 GB for two)
    for i in range(args.files):
        Image.fromarray(rng.integers(0, 256, (args.small, args.small, 3), dtype=np.uint8)).save(
            folders["small"] / f"{i:03d}.png")
        black.save(folders["huge_png"] / f"{i:03d}.png", compress_level=1)
        black.save(folders["huge_jpeg"] / f"{i:03d}.jpg", quality=90)
        black16.save(folders["huge_png16"] / f"{i:03d}.png", compress_level=1)
    del black, black16
    size = sum(p.stat().st_size for p in folders["huge_png"].iterdir()) / args.files / 1024
    print(f"{args.files} files per folder written in {time.perf_counter() - t0:.0f} s (huge PNG: {size:.0f} KB each)")
    run = make_run(tmp / "run", "test_resnet", input_size=args.input_size)

    base = measure(folders["small"], run)
    print(f"{args.files} PNGs of {args.small} px: peak RSS {base['peak_mb']:7.0f} MB "
          f"({base['seconds']:.1f} s, {base['errors']} errors)")
    for name in ("huge_png", "huge_jpeg", "huge_png16"):
        for full in (False, True):
            m = measure(folders[name], run, full)
            how = "decoded at full size (before)" if full else "reduced while decoding (now) "
            print(f"{args.files} {name[5:].upper():5s} of {args.huge} px, {how}: peak RSS {m['peak_mb']:7.0f} MB = "
                  f"{m['peak_mb'] / base['peak_mb']:4.2f}x the small images' ({m['seconds']:.1f} s, "
                  f"{m['errors']} errors)")


if __name__ == "__main__":
    main()
