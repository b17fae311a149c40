"""The independent pieces of work of a run, each a function of (run folder, unit name) that can run anywhere:
idempotent (a finished unit is skipped) and resumable (an interrupted one continues from its last epoch). The
notebooks call the same training functions, so they reuse what the units trained; `dfx submit` runs the
unfinished units through submitit (`dfxlib.workflow.submit`).

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

from dfxlib import detectors
from dfxlib.config import load
from dfxlib.data.batches import ImageStore
from dfxlib.data.index import CLASSES
from dfxlib.data.split import Split, test_sets
from dfxlib.detectors import dif
from dfxlib.models import baselines, basemodels, distributed, fusion
from dfxlib.models.features import features_many
from dfxlib.models.train import is_finished
from dfxlib.run import Run, lock

#: every stage with the stages it needs finished first, in the order they run and are submitted (each after what
#: it needs; Slurm starts waiting jobs oldest first, so the chain to the complete models, the paper's main
#: tables, goes ahead of the plain baselines, detectors and DIF fingerprints)
STAGES: dict[str, tuple[str, ...]] = {"base": (), "features": ("base",), "head": ("features",), "plain": (),
                                      "detector": (), "dif": ()}


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
    budgets = [None, *cfg.dif_budgets]
    by_stage = {
        "base": [(b, k, c) for b in cfg.backbones for k in cfg.base_kinds for c in CLASSES],
        "features": [(b,) for b in cfg.backbones],
        "head": [(b, k) for b in cfg.backbones for k in cfg.base_kinds],
        "plain": [(b,) for b in cfg.backbones],
        "detector": [(d,) for d in cfg.detectors if d != "dif"],
        "dif": [(dif.budget_tag(n), g) for n in budgets for g in dif.seen_generators(split)] if "dif" in cfg.detectors
        else [],
    }
    return [Unit(stage, args) for stage in STAGES for args in by_stage[stage]]


def _folder(run: Run, unit: Unit) -> Path:
    """Where a unit's result lives (its checkpoint folder; a marker file for features)."""
    c = run.checkpoints
    where = {"base": c.base, "plain": c.plain, "detector": c.detector, "dif": c.fingerprint, "head": c.head}
    if unit.stage == "features":
        return run.dir / "cache" / "features" / f"{unit.args[0]}.done"
    return where[unit.stage](*unit.args)


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
    multi, binary = test_sets(split, run.config.seed)
    rels = sorted(set(split.rows("fusion")["path"]) | set(multi["path"]) | set(binary["path"]))
    features_many(run, store, models, rels)
    marker = _folder(run, Unit("features", (backbone,)))
    marker.write_text(json.dumps({"models": [m.id for m in models], "images": len(rels)}))


def execute(run_dir: str | Path, name: str) -> str:
    """Run the unit `name` of the run in `run_dir` (its config.json), or skip it when it is done; returns a line
    saying which. This is what a submitted job calls. Started by `torchrun` (or as several Slurm tasks), the
    processes train the unit's model together (`dfxlib.models.distributed`); a features unit runs on rank 0 only."""
    with lock(Path(run_dir), f"unit {name}", shared=True):  # units cooperate; a dfx run on the folder is refused
        return _execute(Path(run_dir), name)


def _execute(run_dir: Path, name: str) -> str:
    run = Run(config=load(run_dir / "config.json"), dir=run_dir)
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
    """`python -m dfxlib.workflow.units RUN_DIR UNIT`: one unit, e.g. under `torchrun --nproc_per_node=4`."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dfxlib.workflow.units RUN_DIR UNIT (e.g. base/densenet121/unbalanced/dm)", file=sys.stderr)
        return 2
    print(execute(args[0], args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
