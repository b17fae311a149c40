"""Benchmark: `dfx predict` throughput against the bare forward pass of the same model, and its memory.

    python benchmarks/bench_predict.py [--files 3000] [--size 64] [--backbone test_resnet] [--input-size 64]
    python benchmarks/bench_predict.py --run-dir runs/mini --detector all --files 2000 --size 256
    python benchmarks/bench_predict.py --files 100000 --size 32 --workers 2   # memory on 100,000 files

Writes `--files` PNGs of `--size` px into a temporary folder (nested, 1,000 per folder). The models: with
`--run-dir`, those `dfx predict --detector` loads from that run (every trained one with `all`); without it, a
complete model of seeded random weights (speed does not depend on training). Then, per model:
- bare forward: the model alone on already-prepared batches (`Served.forward`);
- dfx predict: the full path (walk the folder, decode, prepare, forward, write CSV rows) with 1 and 2 decode
  workers; images/s and the ratio to the bare forward (target: at least 80%);
- resident memory (RSS) at 10%, 50% and 100% of the files: flat when streaming; and with `--peak`, the peak
  RSS of a whole `dfx predict` process on the first tenth of the files and on all of them.
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

from dfxlib.config import DEFAULT_MAX_PIXELS  # noqa: E402
from dfxlib.predict import complete, files, inference, served  # noqa: E402


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


def bare_rate(model, paths: list[Path], n: int, bs: int) -> float:
    """images/s of `model.forward` alone on prepared batches (a sample of the files, repeated to `n` images)."""
    x = torch.stack([model.prepare(inference.decode(str(p))) for p in paths[: min(n, 8 * bs)]])
    with torch.no_grad():
        model.forward(x[:bs])  # warm-up
        t0, done = time.perf_counter(), 0
        while done < n:
            k = min(bs, n - done)
            j = done % len(x)
            model.forward(x[j:j + k] if j + k <= len(x) else x[:k])
            done += k
    return n / (time.perf_counter() - t0)


def prepare_rate(model, paths: list[Path], bs: int, workers: int) -> float:
    """images/s of decoding and preparing alone (no forward pass), `workers` batches at a time: the ceiling the
    CPU sets on `dfx predict` when the model is faster than decoding."""
    from concurrent.futures import ThreadPoolExecutor

    parts = [[(str(p), None) for p in paths[i:i + bs]] for i in range(0, len(paths), bs)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(lambda part: inference._prepare([model], part, DEFAULT_MAX_PIXELS), parts))
    return len(paths) / (time.perf_counter() - t0)


def predict_rate(model, folder: Path, n_files: int, bs: int, workers: int) -> tuple[float, list[str]]:
    """images/s of the whole `dfx predict` path into a CSV sink, and the RSS at 10%, 50% and 100%."""
    marks = {int(n_files * f): f for f in (0.1, 0.5, 1.0)}
    mem: list[str] = []
    t0 = time.perf_counter()
    with open(os.devnull, "w") as sink:
        def rows():
            for n, r in enumerate(inference.predict_paths(model, [str(folder)], bs, workers=workers), 1):
                if n in marks:
                    mem.append(f"{int(marks[n] * 100)}%: {rss_mb():.0f} MB")
                yield r
        n = files.write_csv(rows(), sink, inference.columns(model))
    return n / (time.perf_counter() - t0), mem


def peak_mb(run_dir: str, detector: str, inputs: list[str]) -> float:
    """Peak RSS (MB) of one `dfx predict` process over `inputs` (its own getrusage, printed as it ends)."""
    import subprocess

    code = ("import resource, sys; from dfxlib.workflow.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "predict", *inputs, "--model", run_dir, "--detector", detector,
                           "--device", "cpu", "--out", os.devnull], check=True, stderr=subprocess.PIPE, text=True)
    return int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64, help="side of the image files")
    ap.add_argument("--run-dir", default="", help="a finished run: measure the models dfx predict loads from it")
    ap.add_argument("--detector", default="deepfeaturex", help="with --run-dir: which (all: every trained model)")
    ap.add_argument("--backbone", default="test_resnet", help="without --run-dir: the random complete model's")
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="1,2", help="decode-worker counts to measure, e.g. 2")
    ap.add_argument("--peak", action="store_true", help="with --run-dir: peak RSS of a dfx predict process on "
                    "a tenth of the files and on all of them")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dfx-bench-predict-"))
    t0 = time.perf_counter()
    make_images(tmp / "images", args.files, args.size)
    print(f"{args.files} PNGs of {args.size} px written in {time.perf_counter() - t0:.1f} s")
    if args.run_dir:
        models = served.load_models(args.run_dir, args.detector, device="cpu")
    else:
        models = [complete.load_predictor(make_run(tmp / "run", args.backbone, input_size=args.input_size),
                                           device="cpu")]
    paths = sorted((tmp / "images").rglob("*.png"))
    print(f"batch {args.batch_size}, {torch.get_num_threads()} threads")
    for model in models:
        bare = bare_rate(model, paths, args.files, args.batch_size)
        print(f"{model.name} ({model.input_size} px): bare forward {bare:8.1f} images/s")
        for workers in (int(w) for w in args.workers.split(",")):
            rate, mem = predict_rate(model, tmp / "images", args.files, args.batch_size, workers)
            ceiling = prepare_rate(model, paths, args.batch_size, workers)
            print(f"  dfx predict, {workers} decode worker(s): {rate:8.1f} images/s = {100 * rate / bare:5.1f}% of "
                  f"bare (target >= 80%); decoding and preparing alone {ceiling:.1f} images/s, so "
                  f"{100 * rate / min(bare, ceiling):5.1f}% of the slower; RSS {', '.join(mem)}")
    if args.run_dir and args.peak:
        few = [str(p) for p in paths[: max(1, args.files // 10)]]
        print(f"peak RSS of dfx predict --detector {args.detector}: {len(few)} files "
              f"{peak_mb(args.run_dir, args.detector, few):.0f} MB, {args.files} files "
              f"{peak_mb(args.run_dir, args.detector, [str(tmp / 'images')]):.0f} MB")


if __name__ == "__main__":
    main()
