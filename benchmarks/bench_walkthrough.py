"""Benchmark: where the walkthrough's time goes. Runs every notebook of a profile (default mini) into a fresh run
folder, as `dfx run` does, and prints the wall time of each notebook, then the training time of every fit the
run holds (base models, heads, plain classifiers, detectors, DIF fingerprints: the sum of their epochs'
seconds, from each fit's log.csv) grouped by stage, and what is left of each notebook for the rest (building
MiniDFX, features, evaluation, bootstrap, figures).

    python benchmarks/bench_walkthrough.py [--profile mini] [--keep DIR] [--tests] [--no-run]

With `--tests` it also times the test suite (`pytest -q`, what `make test` runs once installed); `--no-run`
times the suite alone.

Its figures are the ones README and docs/benchmarks.md quote for `make run`; every change to the walkthrough's
speed is measured again with it, alone on the machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from dfxlib.config import project_root
from dfxlib.run import Checkpoints
from dfxlib.workflow.notebooks import run_notebooks

#: the stage of a fit, from its folder under checkpoints/ (the notebook that trains it)
STAGES = {"base": "02 base models", "heads": "03 fusion heads", "plain": "03 plain classifiers",
          "detectors": "06 detectors", "dif": "06 DIF fingerprints"}


def fits(run_dir: Path) -> pd.DataFrame:
    """Every fit of the run: its folder, stage, epochs run and training seconds (the sum over its epochs)."""
    root = Checkpoints.of(run_dir).root
    rows = []
    for log in sorted(root.rglob("log.csv")):
        df = pd.read_csv(log)
        rel = log.parent.relative_to(root)
        rows.append({"fit": str(rel), "stage": STAGES.get(rel.parts[0], rel.parts[0]), "epochs": len(df),
                     "seconds": float(df["seconds"].sum())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--keep", default="", help="run folder to keep (default: a temporary one, removed after)")
    ap.add_argument("--tests", action="store_true", help="also time the test suite")
    ap.add_argument("--no-run", action="store_true", help="do not run the notebooks (with --tests: the suite alone)")
    args = ap.parse_args()
    if not args.no_run:
        walkthrough(args.profile, args.keep)
    if args.tests:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=project_root(), capture_output=True,
                              text=True)
        last = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"\ntest suite: {(time.perf_counter() - t0) / 60:.1f} min ({last})")


def walkthrough(profile: str, keep: str) -> None:
    """Run every notebook of `profile` into a fresh folder and print where the time went."""
    run_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="dfx-walkthrough-")) / "run"
    times: dict[str, float] = {}

    def log(line: str) -> None:
        if m := re.match(r"\[\d+/\d+\] (\S+) done in ([\d.]+) s", line):
            times[m.group(1)] = float(m.group(2))
    t0 = time.perf_counter()
    try:
        run_notebooks(profile, {"run_dir": str(run_dir), "progress": "false"}, log=log)
        wall = time.perf_counter() - t0
        trained = fits(run_dir)
    finally:
        if not keep:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
    print(f"dfx run --profile {profile}: {wall / 60:.1f} min in all")
    print(pd.Series(times, name="seconds").round(1).to_string())
    by_stage = trained.groupby("stage").agg(fits=("fit", "count"), epochs=("epochs", "sum"), seconds=("seconds", "sum"))
    print("\ntraining time by stage (sum of epoch seconds)")
    print(by_stage.round(1).to_string())
    spent = by_stage["seconds"].groupby(lambda stage: stage[:2]).sum()  # each stage is named by its notebook
    print("\nper notebook: wall, training, the rest (features, evaluation, bootstrap, figures, MiniDFX)")
    for nb, secs in times.items():
        train = float(spent.get(nb[:2], 0.0))
        print(f"  {nb:22s} {secs:7.1f} s  training {train:7.1f} s  rest {secs - train:7.1f} s")


if __name__ == "__main__":
    main()
