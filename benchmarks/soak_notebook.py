"""Soak: execute one notebook many times in a row beside busy processes, and count the runs that stall.

    python benchmarks/soak_notebook.py --notebook notebooks/07_inspect.ipynb --profile smoke --runs 30
    python benchmarks/soak_notebook.py ... --engine papermill   # papermill's own client, for comparison

The notebook reads `runs/<profile>` (run `dfx run --profile <profile>` first). With `--engine papermill` a run
that has not finished after `--limit` seconds counts as a stall (papermill itself would wait forever).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import papermill as pm

from dfxlib.config import resolve, run_dir_of
from dfxlib.workflow import execute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebook", default="notebooks/07_inspect.ipynb")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes beside the runs")
    ap.add_argument("--engine", default=execute.ENGINE, choices=[execute.ENGINE, "papermill"])
    ap.add_argument("--limit", type=float, default=120.0, help="seconds after which a run counts as stalled")
    args = ap.parse_args()

    nb = Path(args.notebook).resolve()
    run_dir = run_dir_of(resolve(args.profile, {}))
    params = {"profile": args.profile, "run_dir": str(run_dir), "data_root": "", "overrides": {}}
    engine = {"engine_name": execute.ENGINE, "stall_after": args.limit, "reply_grace": 10.0} \
        if args.engine == execute.ENGINE else {"execution_timeout": int(args.limit)}
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    done, stalled, times = 0, 0, []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                t0 = time.perf_counter()
                try:
                    pm.execute_notebook(str(nb), f"{tmp}/out.ipynb", parameters=params, cwd=str(nb.parent),
                                        kernel_name="python3", progress_bar=False, **engine)
                    done += 1
                    outcome = "completed"
                except Exception as exc:  # a stall (dfx) or a timeout (papermill)
                    stalled += 1
                    outcome = f"STALLED ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
                times.append(time.perf_counter() - t0)
                print(f"run {i + 1:2d}/{args.runs}: {outcome} in {times[-1]:.1f} s", flush=True)
    finally:
        for p in load:
            p.kill()
    print(f"{nb.name}, engine {args.engine}, {args.load} busy processes: {done} completed, {stalled} stalled "
          f"of {args.runs}; median {sorted(times)[len(times) // 2]:.1f} s per run")


if __name__ == "__main__":
    main()
