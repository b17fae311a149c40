"""Benchmark: where the walkthrough's time goes. Runs every notebook of a profile (default mini) into a fresh run
folder, as `dfx run` does, and prints the wall time of each notebook, then the training time of every fit the
run holds (base models, heads, plain classifiers, detectors, DIF fingerprints: the sum of their epochs'
seconds, from each fit's log.csv) grouped by stage, and what is left of each notebook for the rest (building
MiniDFX, features, evaluation, bootstrap, figures).

    python benchmarks/bench_walkthrough.py [--profile mini] [--keep DIR] [--tests] [--no-run] [--baseline REV]
                                           [-p KEY=VALUE ...]

With `--tests` it also times the test suite (`pytest -q`, what `make test` runs once installed); `--no-run`
times the suite alone. With `--baseline REV` it first measures the same at git commit REV (checked out into a
temporary worktree, its own code and notebooks), then this checkout, and prints the two side by side with their
ratios: the figures before and after a change, on one machine in one session, and which of the two runs'
tables are byte-identical, the same but for training seconds, or different. Every measure is cold: a fresh run
folder and a fresh `DFX_CACHE`, so nothing an earlier run built or converted is reused. `-p KEY=VALUE` overrides a
setting of this checkout's run only (REV may not know the key): `-p memory_format=contiguous` against a commit
before channels-last checks that everything else the change brought leaves every table byte-identical.

Its figures are the ones README and docs/benchmarks.md quote for `make run`; every change to the walkthrough's
speed is measured again with it, alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
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
    ap.add_argument("--baseline", default="", metavar="REV",
                    help="first measure the same at git commit REV (a temporary worktree), then print both side by "
                         "side")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of this checkout's run (not the baseline's)")
    ap.add_argument("--json", default="", help=argparse.SUPPRESS)  # where a baseline's measure is written
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dfx-bench-") as tmp:
        keep = args.keep or (str(Path(tmp) / "now") if args.baseline else "")  # kept to compare tables
        before = baseline(args, Path(tmp) / "before") if args.baseline else None
        with tempfile.TemporaryDirectory(prefix="dfx-cache-") as cache:
            os.environ["DFX_CACHE"] = cache  # cold: nothing built or converted by an earlier run is reused
            now = measure(args.profile, keep, not args.no_run, args.tests, params(args.param))
        if args.json:
            Path(args.json).write_text(json.dumps(now))
        if before:
            compare(before, now, args.baseline)
            if not args.no_run:
                compare_tables(Path(tmp) / "before", Path(keep))


def params(pairs: list[str]) -> dict[str, str]:
    """`-p KEY=VALUE` as overrides. Imported here, not at the top: the baseline's run imports this script against
    its own dfxlib, which may predate `parse_params` (the baseline is never given -p)."""
    if not pairs:
        return {}
    from dfxlib.workflow.cli import parse_params

    return parse_params(pairs)


def compare_tables(before: Path, now: Path) -> None:
    """Print which tables of two runs are byte-identical, the same but for training seconds, or differ (and in how
    many cells): what a change that should not move any number is checked by."""
    names = sorted({p.name for run in (before, now) for p in (run / "tables").glob("*.csv")})
    kinds: dict[str, list[str]] = {"byte-identical": [], "the same but for seconds": [], "different": [],
                                   "in one run only": []}
    for name in names:
        a, b = before / "tables" / name, now / "tables" / name
        if not (a.is_file() and b.is_file()):
            kinds["in one run only"].append(name)
            continue
        if a.read_bytes() == b.read_bytes():
            kinds["byte-identical"].append(name)
            continue
        da, db = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in (a, b))
        if da.shape != db.shape or list(da.columns) != list(db.columns):
            kinds["different"].append(f"{name} (shape {da.shape} -> {db.shape})")
            continue
        timing = [c for c in da.columns if "seconds" in c]
        cells = int((da.drop(columns=timing).to_numpy() != db.drop(columns=timing).to_numpy()).sum())
        if cells:
            kinds["different"].append(f"{name} ({cells} of {da.drop(columns=timing).size} cells)")
        else:
            kinds["the same but for seconds"].append(name)
    print(f"\ntables (CSV) of the baseline's run against this checkout's: {len(names)}")
    for kind, items in kinds.items():
        print(f"  {kind}: {len(items)}" + (f": {', '.join(items)}" if items and kind != "byte-identical" else ""))


def measure(profile: str, keep: str, notebooks: bool, tests: bool, params: dict[str, str] | None = None) -> dict:
    """Run the walkthrough (with the settings `params`) and/or the suite here and print where the time went; the
    figures as a dict."""
    out: dict = {"commit": _commit(project_root()) + "".join(f" {k}={v}" for k, v in (params or {}).items())}
    if notebooks:
        out.update(walkthrough(profile, keep, params or {}))
    if tests:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q"], cwd=project_root(), capture_output=True,
                              text=True)
        out["tests_min"] = (time.perf_counter() - t0) / 60
        out["tests_result"] = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"\ntest suite: {out['tests_min']:.1f} min ({out['tests_result']})")
    return out


def _commit(root: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def baseline(args: argparse.Namespace, run_dir: Path) -> dict:
    """This benchmark's measure at commit `args.baseline`: its dfxlib, notebooks and tests from a temporary git
    worktree (first on the import path), in a subprocess, on this machine in this session; its run in `run_dir`."""
    root = project_root()
    with tempfile.TemporaryDirectory(prefix="dfx-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.baseline], cwd=root, check=True)
        if (root.parent / "shared").is_dir():  # what ../shared gives a checkout (the wild folder) the tree gets too
            (Path(tmp) / "shared").symlink_to(root.parent / "shared")
        try:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--profile", args.profile, "--keep", str(run_dir),
                   "--json", str(Path(tmp) / "before.json")] + ["--tests"] * args.tests + ["--no-run"] * args.no_run
            env = {**os.environ, "PYTHONPATH": str(tree)}
            print(f"baseline {args.baseline} (worktree {tree}):", flush=True)
            subprocess.run(cmd, cwd=tree, env=env, check=True)
            print(f"\nthis checkout ({_commit(root)}):", flush=True)
            return json.loads((Path(tmp) / "before.json").read_text())
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, check=False)


def compare(before: dict, now: dict, rev: str) -> None:
    """Print the baseline's figures beside this checkout's, with their ratio (above 1: faster now)."""
    print(f"\nbaseline {before['commit']} ({rev}) against this checkout {now['commit']}, seconds")
    rows = [(nb, before.get("notebooks", {}).get(nb), now.get("notebooks", {}).get(nb))
            for nb in dict.fromkeys([*before.get("notebooks", {}), *now.get("notebooks", {})])]
    rows += [(f"stage: {st}", before.get("stages", {}).get(st), now.get("stages", {}).get(st))
             for st in dict.fromkeys([*before.get("stages", {}), *now.get("stages", {})])]
    rows += [("dfx run (wall)", before.get("wall_s"), now.get("wall_s")),
             ("pytest -q (wall)", 60 * before["tests_min"] if "tests_min" in before else None,
              60 * now["tests_min"] if "tests_min" in now else None)]
    for name, a, b in rows:
        if a is None and b is None:
            continue
        ratio = f"{a / b:5.2f}x" if a and b else ""
        print(f"  {name:34s} {_s(a):>9s} {_s(b):>9s} {ratio}")


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def walkthrough(profile: str, keep: str, params: dict[str, str]) -> dict:
    """Run every notebook of `profile` (settings `params` overridden) into a fresh folder, print where the time went
    and return the figures: wall seconds, seconds per notebook, training seconds per stage."""
    run_dir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="dfx-walkthrough-")) / "run"
    times: dict[str, float] = {}

    def log(line: str) -> None:
        if m := re.match(r"\[\d+/\d+\] (\S+) done in ([\d.]+) s", line):
            times[m.group(1)] = float(m.group(2))
    t0 = time.perf_counter()
    try:
        run_notebooks(profile, {**params, "run_dir": str(run_dir), "progress": "false"}, log=log)
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
    return {"wall_s": wall, "notebooks": times, "stages": by_stage["seconds"].to_dict()}


if __name__ == "__main__":
    main()
