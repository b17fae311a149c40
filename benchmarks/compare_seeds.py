"""Did a change move what the tables mean? Two runs over seeds (`dfx run --seeds`), one before a change and one after,
compared claim by claim against the noise of training itself.

A change that moves trained weights by float rounding (another memory layout, another thread count, another
library version) sends each training run down another path, so a claim's verdict can move with it. Whether that
changes the meaning of the tables is a question of size: does the change move verdicts more than drawing another
seed does? This prints, for the claims a training run decides (a claim with the same difference on every seed of
NOW, such as the audit's, is left out):

1. per seed, the verdicts of BEFORE's run against NOW's run of the same seed: how many moved, how many reversed
   (`holds` <-> `does not hold`), and how far the differences moved (median and 90th percentile, points); then
   the same for every two seeds of NOW, the reference: what another training run moves;
2. over seeds (`verdicts.over_seeds`, the interval of the mean difference over the seeds): BEFORE's verdicts
   against NOW's on the same seeds; NOW's first seeds against its other ones, as many (the reference); and
   BEFORE against every seed of NOW. Each line gives the verdicts moved, reversed, and how they moved.

    python benchmarks/compare_seeds.py NOW [BEFORE]

NOW and BEFORE are seed folders (holding seed-<s>/tables/verdicts_*.csv). Without BEFORE only the reference
lines are printed. A change whose lines fall within the reference lines, and reverses no verdict over seeds,
leaves the tables' meaning as it was; the verdicts it moves are the ones the seeds cannot settle.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

from dfxlib.evaluation.verdicts import CLAIM_KEY, claim_rows, over_seeds
from dfxlib.workflow.notebooks import run_verdicts

DECIDED = ("holds", "does not hold")


def seeds_of(folder: Path) -> list[int]:
    """The seeds of a seed folder that hold verdict tables, in order."""
    return sorted(int(p.name.removeprefix("seed-")) for p in folder.glob("seed-*")
                  if p.name.removeprefix("seed-").isdigit() and any((p / "tables").glob("verdicts_*.csv")))


def by_claim(folder: Path, seed: int) -> pd.DataFrame:
    """One seed's verdict rows indexed by claim, as `over_seeds` counts them (`verdicts.claim_rows`)."""
    return claim_rows(run_verdicts(folder / f"seed-{seed}")).set_index(list(CLAIM_KEY))


def moved(a: pd.Series, b: pd.Series) -> tuple[int, int, int]:
    """Claims in both, verdicts that differ, verdicts that reverse (one decided way, the other the opposite)."""
    idx = a.index.intersection(b.index)
    a, b = a.loc[idx], b.loc[idx]
    return len(idx), int((a != b).sum()), int((a.isin(DECIDED) & b.isin(DECIDED) & (a != b)).sum())


def per_seed_line(label: str, a: pd.DataFrame, b: pd.DataFrame) -> str:
    n, m, r = moved(a["verdict"], b["verdict"])
    idx = a.index.intersection(b.index)
    d = (a.loc[idx, "difference"].astype(float) - b.loc[idx, "difference"].astype(float)).abs()
    return f"  {label:32s} {n:6d} {m:6d} {r:8d} {d.median():10.2f} {d.quantile(0.9):8.2f}"


def over_line(label: str, a: pd.DataFrame, b: pd.DataFrame) -> str:
    n, m, r = moved(a["over_seeds"], b["over_seeds"])
    idx = a.index.intersection(b.index)
    ways = pd.Series([f"{x} -> {y}" for x, y in zip(a.loc[idx, "over_seeds"], b.loc[idx, "over_seeds"]) if x != y])
    counts = lambda s: ", ".join(f"{k} {v}" for k, v in s.value_counts().items())  # noqa: E731
    return (f"  {label}: {n} claims, {m} verdicts moved, {r} reversed\n"
            f"    verdicts: {counts(a['over_seeds'])} | {counts(b['over_seeds'])}\n"
            + (f"    moved: {counts(ways)}" if len(ways) else "    moved: none"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("now", type=Path, help="seed folder after the change (e.g. runs/mini-seeds)")
    ap.add_argument("before", type=Path, nargs="?", help="seed folder before the change")
    args = ap.parse_args()
    now = {s: by_claim(args.now, s) for s in seeds_of(args.now)}
    before = {s: by_claim(args.before, s) for s in seeds_of(args.before)} if args.before else {}
    if len(now) < 2:
        raise SystemExit(f"{args.now}: fewer than two seeds with verdict tables")
    diffs = pd.concat([v["difference"].astype(float).rename(s) for s, v in now.items()], axis=1)
    trained = diffs.index[diffs.nunique(axis=1) > 1]  # the claims a training run moves
    now = {s: v.loc[v.index.intersection(trained)] for s, v in now.items()}
    before = {s: v.loc[v.index.intersection(trained)] for s, v in before.items()}
    print(f"{len(trained)} claims a training run decides (of {len(diffs)}; the rest have one difference on every "
          f"seed of {args.now})\n")
    print("per seed: two training runs' verdicts      claims  moved  reversed  |diff| median      p90")
    for s in sorted(set(now) & set(before)):
        print(per_seed_line(f"seed {s}: before -> now", before[s], now[s]))
    for s, t in itertools.combinations(sorted(now), 2):
        print(per_seed_line(f"seed {s} -> seed {t} (now)", now[s], now[t]))

    def summary(runs: dict[int, pd.DataFrame], seeds: list[int]) -> pd.DataFrame:
        return over_seeds({s: runs[s].reset_index() for s in seeds}).set_index(list(CLAIM_KEY))

    print("\nover seeds (the interval of the mean difference over the seeds)")
    common = sorted(set(now) & set(before))
    if common:
        print(over_line(f"before -> now, seeds {common}", summary(before, common), summary(now, common)))
    k = len(common) or len(now) // 2
    order = sorted(now)
    if len(order) >= 2 * k >= 4:
        first, rest = order[:k], order[k:2 * k]
        print(over_line(f"now, seeds {first} -> seeds {rest} (the reference)", summary(now, first),
                        summary(now, rest)))
    if before and len(order) > len(common):
        print(over_line(f"before (seeds {sorted(before)}) -> now (seeds {order})", summary(before, sorted(before)),
                        summary(now, order)))


if __name__ == "__main__":
    main()
