"""Benchmark: `dfx plan` for the paper profile on a synthetic tree with the paper's image counts and sizes.

    python benchmarks/bench_plan.py [--scale 1.0] [--throughput h200.json | --calibrate] [--keep DIR]

Builds the paper's dataset as header-only PNGs (tests/fixture.py: its 18 generators and sources, 72,334
files at their listed sizes; a few hundred MB of file-system blocks), then prints the plan of a paper run on it:
units, image passes, GPU hours at the rates of `--throughput` (benchmarks/bench_paper_path.py --json on the
target GPU) or measured on this machine (`--calibrate`, batch 2: a CPU's hours, for scale only), disk by part and the settings that make it fit, and how long planning took.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture import make_paper_tree  # noqa: E402

from dfxlib.config import resolve  # noqa: E402
from dfxlib.workflow import plan as pl  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="of the paper's image counts")
    ap.add_argument("--throughput", default="", help="JSON of benchmarks/bench_paper_path.py --json")
    ap.add_argument("--calibrate", action="store_true", help="price at rates measured here (batch 2)")
    ap.add_argument("--keep", default="", help="build the tree here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="dfx-plan-"))
    try:
        data = work / "data"
        t0 = time.perf_counter()
        if not data.is_dir():
            make_paper_tree(data, args.scale)
        n = sum(1 for _ in data.rglob("*.png"))
        print(f"synthetic paper tree: {n:,} files in {time.perf_counter() - t0:.1f} s")
        for extra in ({}, {"cache_perturbed_features": False, "feature_dtype": "float16"}):
            cfg = resolve("paper", {"data_root": str(data), "run_dir": str(work / "run"), "progress": False, **extra})
            t0 = time.perf_counter()
            _, plan = pl.plan_for(cfg)
            if args.throughput:
                rates, source = pl.rates_from_file(args.throughput), args.throughput
            elif args.calibrate:
                rates, source = pl.rates_by_calibration(cfg, 2), "rates measured on this machine (batch 2)"
            else:
                rates, source = None, ""
            print(f"\n-- paper profile{', ' if extra else ''}{', '.join(f'{k}={v}' for k, v in extra.items())} "
                  f"(planned in {time.perf_counter() - t0:.1f} s)")
            print(pl.summary(plan, rates, source))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
