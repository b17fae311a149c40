"""Benchmark: peak memory of `dfx predict` on huge images against small ones (flat in image size).

    python benchmarks/bench_predict_memory.py [--files 8] [--huge 9000] [--small 64] [--input-size 64]

Writes `--files` black PNGs of `--huge` px (a few hundred KB each: small files, huge rasters), the same number
of JPEGs and of 16-bit grayscale PNGs (PNG16) of that size, and `--files` noise PNGs of `--small` px, then runs
`dfx predict`'s path (`inference.predict_paths`, 2 decode workers) on each folder in a fresh process and prints
that process's peak resident memory (ru_maxrss). The huge folders are measured three ways in the same run: as
dfx reads them now (decoded whole, one raster above 16 megapixels at a time, resized in strips of rows: the
notebooks' path), reduced while decoding (a JPEG at 1/8 scale, other formats box-reduced: `dfx predict` before
issue #30, which gave other answers than the notebooks), and whole batches decoded at full size and each
converted whole to a tensor before its resize (before issue #17).
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

from dfxlib.data.decode import to_gray8  # noqa: E402
from dfxlib.predict import complete, inference  # noqa: E402


def _prepare_batch_full_size(models: list, items: list, max_pixels: int) -> inference._Batch:
    """Before #17: a whole batch decoded at full size, then each image converted whole to a tensor and resized."""
    from torchvision.transforms.v2 import functional as TF

    imgs, errors = [], []
    for name, data in items:
        try:
            imgs.append(inference.decode(name, data, max_pixels))
            errors.append("")
        except Exception as exc:
            errors.append(str(exc))
    size = models[0].input_size
    x = [torch.stack([TF.resize(TF.pil_to_tensor(img), [size, size], antialias=True) for img in imgs])]
    return inference._Batch([n for n, _ in items], errors, [""] * len(items), x if imgs else None)


def _prepare_reduced(models: list, items: list, max_pixels: int) -> inference._Batch:
    """Before #30: each image reduced while decoding (JPEG by its decoder, others by an integer box filter) to
    no less than twice the input, then resized."""
    import io

    size, xs, errors = models[0].input_size, [], []
    for name, data in items:
        with Image.open(io.BytesIO(data) if data else name) as img:
            if img.format == "JPEG":
                img.draft("RGB", (2 * size, 2 * size))
            img.load()
            img = to_gray8(img) if img.mode.startswith("I;16") else img  # 8 bits in strips, as it was
            factor = (max(1, img.width // (2 * size)), max(1, img.height // (2 * size)))
            xs.append(models[0].prepare((img.reduce(factor) if factor != (1, 1) else img).convert("RGB")))
            errors.append("")
    return inference._Batch([n for n, _ in items], errors, [""] * len(items), [torch.stack(xs)])


PATHS = {"now": None, "reduced": _prepare_reduced, "batch": _prepare_batch_full_size}


def child(images: str, run: str, path: str) -> None:
    """Predict every file of `images` with the model of `run` through `path`; print rows and peak RSS (MB)."""
    if PATHS[path]:
        inference._prepare = PATHS[path]
    pred = complete.load_predictor(run, device="cpu")
    t0 = time.perf_counter()
    rows = list(inference.predict_paths(pred, [images], batch_size=64, workers=2))
    errors = sum(bool(r["error"]) for r in rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(rows=len(rows), errors=errors, peak_mb=peak, seconds=time.perf_counter() - t0)))


def measure(images: Path, run: Path, path: str = "now") -> dict:
    cmd = [sys.executable, __file__, "--child", str(images), "--run", str(run), "--path", path]
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
    ap.add_argument("--path", default="now", choices=list(PATHS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.run, args.path)

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
    ways = {"now": "decoded whole, resized in strips (now)   ", "reduced": "reduced while decoding (before #30)     ",
            "batch": "whole batches at full size (before #17)"}
    for name in ("huge_png", "huge_jpeg", "huge_png16"):
        for path, how in ways.items():
            m = measure(folders[name], run, path)
            print(f"{args.files} {name[5:].upper():5s} of {args.huge} px, {how}: peak RSS {m['peak_mb']:7.0f} MB = "
                  f"{m['peak_mb'] / base['peak_mb']:4.2f}x the small images' ({m['seconds']:.1f} s, "
                  f"{m['errors']} errors)")


if __name__ == "__main__":
    main()
