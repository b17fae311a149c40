"""The independent pieces of work of a run, each a function of (run folder, unit name) that can run anywhere:
idempotent (a finished unit is skipped) and resumable (an interrupted one continues from its last epoch). The
notebooks call the same training functions, so they reuse what the units trained; `dfx submit` runs the
unfinished units through submitit (`dfxlib.submit`).

Units, in the order their inputs require:
- `base/<backbone>/<kind>/<class>`: one base model; `plain/<backbone>`: the plain baseline;
  `detector/<name>`: a compared detector; `dif/<budget>/<generator>`: a DIF fingerprint;
- `features/<backbone>`: the raw features of every base model of a backbone on the fusion split and the test
  sets (one writer per feature cache), after that backbone's base models;
- `head/<backbone>/<kind>`: a fusion head, after its backbone's features.

Before units run, `prepare` builds the dataset (the built-in world), the persisted split and the uint8 store,
so units only read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import basemodels, baselines, detectors, distributed, fusion
from .detectors import dif
from .config import load
from .data import ImageStore
from .features import features_many
from .index import CLASSES
from .run import Run
from .split import Split
from .train import is_finished

#: stages in the order their inputs require (a stage's units need only earlier stages)
STAGES: tuple[str, ...] = ("base", "plain", "detector", "dif", "features", "head")


@dataclass(frozen=True)
class Unit:
    """One unit of work: its stage and the names that pick it (e.g. base, densenet121, unbalanced, dm)."""

    stage: str
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return "/".join((self.stage, *self.args))

    @staticmethod
    def parse(name: str) -> "Unit":
        stage, *args = name.split("/")
        if stage not in STAGES:
            raise ValueError(f"unit {name!r}: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
        return Unit(stage, tuple(args))


def all_units(run: Run, split: Split) -> list[Unit]:
    """Every unit of `run`, stage by stage (STAGES order)."""
    cfg = run.config
    out = [Unit("base", (b, k, c)) for b in cfg.backbones for k in cfg.base_kinds for c in CLASSES]
    out += [Unit("plain", (b,)) for b in cfg.backbones]
    out += [Unit("detector", (d,)) for d in cfg.detectors if d != "dif"]
    if "dif" in cfg.detectors:
        budgets = [None, *cfg.dif_budgets]
        out += [Unit("dif", (dif.budget_tag(n), g)) for n in budgets for g in dif.seen_generators(split)]
    out += [Unit("features", (b,)) for b in cfg.backbones]
    out += [Unit("head", (b, k)) for b in cfg.backbones for k in cfg.base_kinds]
    return out


def _folder(run: Run, unit: Unit) -> Path:
    """Where a unit's result lives (its checkpoint folder; a marker file for features)."""
    where = {"base": basemodels.base_folder, "plain": baselines.plain_folder, "detector": detectors.detector_folder,
             "dif": dif.fingerprint_folder, "head": fusion.head_folder}
    if unit.stage == "features":
        return run.dir / "cache" / "features" / f"{unit.args[0]}.done"
    return where[unit.stage](run, *unit.args)


def is_done(run: Run, unit: Unit) -> bool:
    """True when the unit's result is complete (it would be skipped)."""
    where = _folder(run, unit)
    return where.is_file() if unit.stage == "features" else is_finished(where)


def prepare(run: Run) -> tuple[Split, ImageStore]:
    """What every unit reads, made once before any runs: the dataset (the built-in world is built), the
    persisted split, and the uint8 store of every usable image (units then only read it)."""
    index = run.index()
    split = run.split(index)
    store = run.images(index)
    run.pixels(store).ensure(list(index.usable["path"]))
    return split, store


def _features(run: Run, store: ImageStore, split: Split, backbone: str) -> None:
    """Raw features of the base models of `backbone` on the fusion split and the test sets, then its marker."""
    models = [basemodels.load_base_model(run, split, backbone, k, c) for k in run.config.base_kinds for c in CLASSES]
    multi, binary = fusion.test_sets(split, run.config.seed)
    rels = sorted(set(split.rows("fusion")["path"]) | set(multi["path"]) | set(binary["path"]))
    features_many(run, store, models, rels)
    marker = _folder(run, Unit("features", (backbone,)))
    marker.write_text(json.dumps({"models": [m.id for m in models], "images": len(rels)}))


def execute(run_dir: str | Path, name: str) -> str:
    """Run the unit `name` of the run in `run_dir` (its config.json), or skip it when it is done; returns a line
    saying which. This is what a submitted job calls. Started by `torchrun` (or as several Slurm tasks), the
    processes train the unit's model together (`dfxlib.distributed`); a features unit runs on rank 0 only."""
    run = Run(config=load(Path(run_dir) / "config.json"), dir=Path(run_dir))
    unit = Unit.parse(name)
    dist = distributed.setup()
    if is_done(run, unit) or (unit.stage == "features" and not dist.main):
        return f"{name}: already done" if is_done(run, unit) else f"{name}: left to rank 0"
    index = run.index()
    split, store = run.split(index), run.images(index)
    a = unit.args
    if unit.stage == "base":
        basemodels.train_base_model(run, store, split, *a)
    elif unit.stage == "plain":
        baselines.train_plain(run, store, split, a[0])
    elif unit.stage == "detector":
        detectors.train_detector(run, store, split, a[0])
    elif unit.stage == "dif":
        dif.train_fingerprint(run, store, split, a[1], None if a[0] == "all" else int(a[0][1:]))
    elif unit.stage == "features":
        _features(run, store, split, a[0])
    else:
        fusion.train_complete(run, store, split, a[0], a[1])
    return f"{name}: done"


def main(argv: list[str] | None = None) -> int:
    """`python -m dfxlib.units RUN_DIR UNIT`: one unit, e.g. under `torchrun --nproc_per_node=4`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dfxlib.units RUN_DIR UNIT (e.g. base/densenet121/unbalanced/dm)", file=sys.stderr)
        return 2
    print(execute(args[0], args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
