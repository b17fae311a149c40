"""Benchmark: MiniDFX build time per profile (budget: smoke <= 30 s, mini <= 5 min on a 2-core CPU), and the
time of a second build with the same recipe (a cache hit).

    python benchmarks/bench_minidfx.py [--profiles smoke,mini]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from dfxlib.config import resolve
from dfxlib.data import minidfx

BUDGET_S = {"smoke": 30.0, "mini": 300.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profiles", default="smoke,mini")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dfx-bench-minidfx-"))
    try:
        for profile in args.profiles.split(","):
            cfg = resolve(profile)
            recipe = minidfx.Recipe(per_generator=cfg.builtin_per_generator, size=cfg.builtin_size, seed=cfg.builtin_seed,
                                    train_steps=cfg.builtin_train_steps)
            t0 = time.perf_counter()
            world = minidfx.build(work / profile, recipe, progress=False)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            minidfx.build(work / profile, recipe, progress=False)
            warm = time.perf_counter() - t0
            n = len(minidfx.metadata(world))
            print(f"{profile:>6}: {n} images of {recipe.size} px, {recipe.train_steps} training steps per generator: "
                  f"build {cold:6.1f} s ({cold / BUDGET_S[profile]:.0%} of the {BUDGET_S[profile]:.0f} s budget), "
                  f"cached {warm * 1000:.1f} ms ({cold / max(warm, 1e-9):.0f}x faster)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
