"""What a run will do before it does it (`dfx plan`): every unit of work with its image passes, the GPU time
they cost at a throughput measured on the machine at hand or stated in a file, the disk the run will use and
what already exists. `dfx run` refuses to start on user data when the disk cannot hold what is left.

Passes follow the code: a base model's epochs over its unbalanced (or Siamese pair) training and validation
sets; features of every image each frozen model sees under every condition (RAW, the JPEG qualities and the
manipulations for the test sets, Table 4's JPEG for the generalization sets); the heads' epochs over the fusion
split; plain baselines' and detectors' epochs over the seen images; DIF's passes over each fingerprint's
images. Disk: the uint8 store, the feature caches (`feature_dtype`), every model's best weights, and the
training state (last weights and Adam's two moments) of the largest model while it trains.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch

from dfxlib.config import Config, run_dir_of
from dfxlib.data.decode import IMAGE_EXTENSIONS
from dfxlib.data.index import CLASSES, build_index
from dfxlib.data.perturb import JPEG_QUALITIES
from dfxlib.data.split import Split, test_sets, train_val
from dfxlib.detectors import spec_of, training_rows
from dfxlib.detectors.dif import budget_tag
from dfxlib.detectors.dif import pools as dif_pools
from dfxlib.detectors.dif import seen_generators
from dfxlib.detectors.difnet import DIFNet
from dfxlib.detectors.registry import recipe_of
from dfxlib.evaluation.generalization import MISSING_SETS, external_sets, make_tsets, tset_pools
from dfxlib.models.backbones import create_backbone, feature_dim
from dfxlib.models.basemodels import siamese_anchors, unbalanced_set
from dfxlib.models.networks import FusionHead
from dfxlib.run import Run, prepare_run_dir
from dfxlib.workflow.throughput import calibrate
from dfxlib.workflow.units import Unit, is_done

GB = 1e9
#: a training state holds the last weights and Adam's two moments: three times the weights
STATE_FACTOR = 3


@dataclass
class Cost:
    """What one unit of work (`dfxlib.workflow.units`, by its name; the linear probe's frozen backbone is `probe/<bb>`)
    costs: images through training steps (`train`, priced at the `rate` column of its backbone's throughput) and
    through evaluation forward passes (`forward`, at its `features` rate), and the disk it leaves."""

    stage: str
    name: str
    backbone: str  # whose throughput prices it ("" for DIF's U-Net: not priced)
    rate: str  # "base", "siamese", "head" (training) for the throughput lookup
    train: int
    forward: int
    disk: int  # bytes it leaves
    params: int  # weights it trains (its training state is STATE_FACTOR x this while it runs)
    done: bool = False

    def seconds(self, rates: Mapping[str, Mapping[str, float]]) -> float | None:
        """GPU seconds at `rates` (backbone -> stage -> images/s), None when its backbone has no figures."""
        r = rates.get(self.backbone)
        if not r or self.rate not in r or "features" not in r:
            return None
        return self.train / r[self.rate] + self.forward / r["features"]


@dataclass
class Plan:
    """The units of a run, its disk (bytes, by part), what exists, and the free space where it will write."""

    config: Config
    run_dir: Path
    units: list[Cost]
    disk: dict[str, int]
    existing: int
    free: int
    savings: list[tuple[str, int]]
    #: what the run will lack, said before it starts (e.g. Table 4 without held-out test sets)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def needed(self) -> int:
        """Bytes still to be written: the estimate less what exists, plus the largest training state."""
        transient = max((u.params * 4 * STATE_FACTOR for u in self.units if not u.done and u.train), default=0)
        return max(sum(self.disk.values()) - self.existing, 0) + transient

    @property
    def fits(self) -> bool:
        return self.needed <= self.free


@functools.cache
def _meta_net(backbone: str) -> tuple[int, int]:
    """(feature width, parameters) of a backbone, built on the meta device (no memory, no weights read)."""
    with torch.device("meta"):
        net = create_backbone(backbone, "none")
    return feature_dim(net), sum(p.numel() for p in net.parameters())


def _small_params(make) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


def _image_sets(run: Run, split: Split, index) -> dict[str, set[str]]:
    """The images each stage reads, by path (external generalization images prefixed, as another store)."""
    cfg = run.config
    multi, binary = test_sets(split, cfg.seed)
    ext = run.generalization_root()
    if ext is None:
        fakes, reals = tset_pools(run, index, split)
        tsets = make_tsets(fakes, reals, cfg.tset_fakes, cfg.seed)
    else:
        tsets = external_sets(run, build_index(ext, check="header", max_pixels=cfg.max_pixels, progress=False))
    tset_paths = set().union(*(set(df["path"]) for df in tsets.values()))
    rows = {name: set(split.rows(name)["path"]) for name in ("base", "fusion", "test", "holdout")}
    return {**rows, "eval": set(multi["path"]) | set(binary["path"]),
            "tsets": tset_paths if ext is None else {f"external:{p}" for p in tset_paths}}


@functools.cache
def _wild_images(root: Path, per_group: int = 0) -> int:
    """Image files of the wild folder `root` (0 when there is none); with `per_group`, at most that many per
    generator or source folder (family/generator/)."""
    if not root.is_dir():
        return 0
    groups = Counter(p.relative_to(root).parts[:2] for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return sum(min(n, per_group) if per_group else n for n in groups.values())


#: the call by which a notebook reads each kind of perturbed set: JPEG of the test set, the manipulations, Table 4's
#: JPEG of the generalization sets (`readers` counts the notebooks that make it)
READ_BY = {"jpeg": "perturb.JPEG_QUALITIES", "manipulation": "config.manipulations", "tset": "gz.evaluate_tsets("}


@functools.cache
def readers() -> dict[str, int]:
    """How many notebooks read the features of each kind of perturbed set (each computes them again when they are
    not cached), from the notebooks' own code, so the plan follows the notebooks."""
    from dfxlib.workflow.notebooks import select

    code = ["".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code")
            for p in select()]
    return {kind: sum(call in text for text in code) for kind, call in READ_BY.items()}


def feature_rows(run: Run, sets: dict[str, set[str]], kind: str) -> tuple[int, int]:
    """(feature rows cached, forward passes) of one model of `kind` (unbalanced, siamese, plain, linear probe)
    over a run: RAW for what its notebooks read, every JPEG quality and manipulation of the test sets (and Table
    4's JPEG of the generalization sets), the wild folder as found and re-encoded. Without
    `cache_perturbed_features` only RAW and the wild folder as found are cached, and each notebook that reads a
    perturbed set computes it again (`readers`)."""
    cfg = run.config
    later = sets["fusion"] | sets["test"] | sets["holdout"] | sets["tsets"]
    raw = {"unbalanced": later, "siamese": later | sets["base"], "linear probe": later | sets["base"],
           "plain": sets["eval"] | sets["tsets"]}[kind]
    wild = _wild_images(run.wild_root(), cfg.wild_per_group)
    tset_variant = f"jpeg{cfg.tset_jpeg}" if cfg.tset_jpeg else ""
    perturbed = {f"jpeg{q}": ("jpeg", len(sets["eval"])) for q in JPEG_QUALITIES}
    perturbed.update({m: ("manipulation", len(sets["eval"])) for m in cfg.manipulations})
    if tset_variant:  # Table 4's JPEG adds the generalization sets to that quality's rows
        perturbed[tset_variant + "/tsets"] = ("tset", len(sets["tsets"] - (sets["eval"] if tset_variant in perturbed
                                                                          else set())))
    reencoded = wild if cfg.wild_reencode else 0
    if cfg.cache_perturbed_features:
        rows = len(raw) + sum(n for _, n in perturbed.values()) + wild + reencoded
        return rows, rows
    return len(raw) + wild, len(raw) + wild + reencoded + sum(readers()[r] * n for r, n in perturbed.values())


def _sizes(run: Run, split: Split, sets: dict[str, set[str]]) -> dict[str, int]:
    """Image counts the stages read (the base split's unbalanced and Siamese sets are counted per unit)."""
    cfg = run.config
    seen = training_rows(split)
    tr, _ = train_val(seen, cfg.val_fraction, cfg.seed)
    return {"fusion": len(sets["fusion"]), "seen": len(seen), "seen_train": len(tr), "test": len(sets["eval"]),
            "tsets": len(sets["tsets"]), "holdout": len(sets["holdout"])}


def _base_passes(run: Run, split: Split) -> list[tuple[str, str, str, int, int]]:
    """(kind, main class, rate, training images, validation images) of every base model of one backbone, from
    the sets training draws (the same for every backbone)."""
    cfg = run.config
    base = split.rows("base")
    out = []
    for kind in cfg.base_kinds:
        for main in CLASSES:
            if kind == "unbalanced":
                tr, va = train_val(unbalanced_set(base, main, cfg.unbalanced_ratio, cfg.seed), cfg.val_fraction,
                                   cfg.seed)
                out.append((kind, main, "base", cfg.base_epochs * len(tr), cfg.base_epochs * len(va)))
            else:
                tr, va = train_val(siamese_anchors(base, main, cfg.seed), cfg.val_fraction, cfg.seed)
                pairs = cfg.siamese_pairs or len(tr)
                out.append((kind, main, "siamese", cfg.siamese_epochs * 2 * pairs, cfg.siamese_epochs * 2 * len(va)))
    return out


def _backbone_units(run: Run, sets: dict[str, set[str]], n: dict[str, int], passes: list, backbone: str) -> list[Cost]:
    """Base models, feature extraction, heads, the plain baseline and the linear probe of one backbone."""
    cfg = run.config
    dim, params = _meta_net(backbone)
    fbytes = torch.finfo(getattr(torch, cfg.feature_dtype)).bits // 8
    models = {k: 3 for k in cfg.base_kinds} | {"plain": 1, "linear probe": 1}  # three base models per kind
    counts = {k: feature_rows(run, sets, k) for k in models}
    rows, forwards = (sum(models[k] * c[i] for k, c in counts.items()) for i in (0, 1))
    head_params = _small_params(lambda: FusionHead(in_channels=3))
    units = [_cost(run, ("base", backbone, kind, main), backbone, rate, train, forward, params)
             for kind, main, rate, train, forward in passes]
    size = rows * dim * fbytes
    cached = sum(p.stat().st_size for p in (run.dir / "cache" / "features").glob(f"{backbone}-*.safetensors"))
    units.append(Cost("features", f"features/{backbone}", backbone, "base", 0, forwards, size, 0, done=cached >= size))
    units += [_cost(run, ("head", backbone, kind), backbone, "head", cfg.head_epochs * n["fusion"], 0, head_params)
              for kind in cfg.base_kinds]
    units.append(Cost("probe", f"probe/{backbone}", backbone, "base", 0, 0, params * 4, 0,
                      (run.checkpoints.probe(backbone) / "best.safetensors").is_file()))
    units.append(_cost(run, ("plain", backbone), backbone, "base", cfg.base_epochs * n["seen_train"],
                       cfg.base_epochs * (n["seen"] - n["seen_train"]), params))
    return units


def _cost(run: Run, unit: tuple[str, ...], backbone: str, rate: str, train: int, forward: int, params: int) -> Cost:
    """The cost of the unit (stage, *names) that trains `params` weights, done when `units.is_done` says so."""
    u = Unit(unit[0], unit[1:])
    return Cost(u.stage, u.name, backbone, rate, train, forward, params * 4, params, is_done(run, u))


def _detector_units(run: Run, split: Split, n: dict[str, int]) -> list[Cost]:
    """The compared detectors (priced at their backbone's rates) and DIF's fingerprints (not priced)."""
    cfg = run.config
    evals = n["test"] * (1 + len(JPEG_QUALITIES)) + n["holdout"] + n["tsets"] * (1 + bool(cfg.tset_jpeg))
    untrained = Run(config=dataclasses.replace(cfg, detector_pretrained="none"), dir=run.dir)  # sizes only
    units = []
    for name in cfg.detectors:
        if name == "dif":
            continue
        backbone = cfg.fingerprint_backbone if name == "ganfingerprint" else cfg.detector_backbone
        epochs = recipe_of(cfg, name).epochs  # at most: a published recipe may stop earlier
        params = _small_params(lambda: spec_of(name).build(untrained))
        units.append(_cost(run, ("detector", name), backbone, "base", epochs * n["seen_train"],
                           epochs * (n["seen"] - n["seen_train"]) + evals, params))
    if "dif" in cfg.detectors:
        params = _small_params(lambda: DIFNet(cfg.dif_crop, cfg.seed))
        tr, _ = dif_pools(split, cfg.val_fraction, cfg.seed)
        reals = int((tr["target"] == 0).sum())
        for tag, budget in [(budget_tag(None), cfg.dif_train_size)] + [(budget_tag(b), b) for b in cfg.dif_budgets]:
            for g in seen_generators(split):
                fakes = min(budget, int((tr["generator"] == g).sum()))  # as dif._balanced draws them
                units.append(_cost(run, ("dif", tag, g), "", "dif", cfg.dif_epochs * (fakes + min(fakes, reals)), 0,
                                   params))
    return units


def _existing(run_dir: Path) -> int:
    """Bytes already under the run folder."""
    return sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) if run_dir.is_dir() else 0


def _free(run_dir: Path) -> int:
    """Free bytes on the file system the run folder is (or will be) on."""
    p = run_dir
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def make_plan(run: Run) -> Plan:
    """The plan of `run` (its settings and dataset; nothing is written for user data)."""
    cfg = run.config
    cached = run.dir / "cache" / "index_cache-plan.csv"
    index = build_index(run.data_root(), check="header", max_pixels=cfg.max_pixels, progress=run.progress,
                        cache=cached if run.dir.is_dir() else None)
    split = run.split(index, write=False)
    sets = _image_sets(run, split, index)
    warnings = [] if sets["tsets"] else [
        "Table 4 will have no held-out test sets: every generator of this dataset is trained on. "
        + MISSING_SETS]
    n = _sizes(run, split, sets)
    passes = _base_passes(run, split)

    def units_of(r: Run) -> list[Cost]:
        return [u for b in r.config.backbones for u in _backbone_units(r, sets, n, passes, b)] + _detector_units(
            r, split, n)

    def disk_of(r: Run) -> dict[str, int]:
        units = units_of(r)
        return {"uint8 store": len(index.usable) * 3 * r.config.input_size ** 2,
                "features": sum(u.disk for u in units if u.stage == "features"),
                "checkpoints": sum(u.disk for u in units if u.stage != "features")}
    return Plan(config=cfg, run_dir=run.dir, units=units_of(run), disk=disk_of(run), existing=_existing(run.dir),
                free=_free(run.dir), savings=_savings(run, units_of, disk_of), warnings=warnings)


#: settings that shrink a run, in the order the plan proposes them (the first loses nothing but time)
SHRINK: tuple[tuple[str, dict], ...] = (
    ("cache_perturbed_features=false (perturbed test images' features computed when needed, not kept)",
     {"cache_perturbed_features": False}),
    ("feature_dtype=float16 (features kept at half precision)", {"feature_dtype": "float16"}),
    ("manipulations= (no extended robustness table)", {"manipulations": ()}),
)


def _savings(run: Run, units_of, disk_of) -> list[tuple[str, int]]:
    """SHRINK's settings applied in turn (those not already set), with the bytes each then saves; then, with
    all of them, what leaving each of the three largest backbones out of `backbones` saves."""
    cfg, out = run.config, []
    before = sum(disk_of(run).values())
    for text, change in SHRINK:
        if all(getattr(cfg, k) == v for k, v in change.items()):
            continue
        cfg = dataclasses.replace(cfg, **change)
        after = sum(disk_of(Run(config=cfg, dir=run.dir)).values())
        if after < before:
            out.append((text, before - after))
        before = after
    per_backbone: dict[str, int] = {}
    for u in units_of(Run(config=cfg, dir=run.dir)):
        if u.stage in ("base", "features", "head", "probe", "plain"):
            per_backbone[u.backbone] = per_backbone.get(u.backbone, 0) + u.disk
    for b, size in sorted(per_backbone.items(), key=lambda kv: -kv[1])[:3]:
        out.append((f"leave {b} out of backbones", size))
    return out


def rates_from_file(path: str | Path) -> dict[str, dict[str, float]]:
    """Throughput (backbone -> stage -> images/s) from the JSON that benchmarks/bench_paper_path.py writes."""
    rows = json.loads(Path(path).read_text())
    return {r["backbone"]: dict(r["images_per_s"]) for r in rows}


def rates_by_calibration(cfg: Config, batch_size: int, steps: int = 2) -> dict[str, dict[str, float]]:
    """Throughput measured here: `calibration.calibrate` for every backbone the run uses, on its device."""
    names = list(dict.fromkeys([*cfg.backbones, cfg.detector_backbone, cfg.fingerprint_backbone]))
    return {b: calibrate(b, cfg, batch_size, cfg.device, steps=steps, warmup=1).images_per_s() for b in names}


def table(plan: Plan, rates: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """One row per unit: stage, name, image passes (training, forward), hours at `rates` (GPU hours when they
    were measured on a GPU), disk (GB), done."""
    rows = []
    for u in plan.units:
        s = u.seconds(rates) if rates else None
        rows.append({"stage": u.stage, "unit": u.name, "train images": u.train, "forward images": u.forward,
                     "hours": round(s / 3600, 2) if s is not None else None, "disk GB": round(u.disk / GB, 3),
                     "done": u.done})
    return pd.DataFrame(rows)


def summary(plan: Plan, rates: Mapping[str, Mapping[str, float]] | None = None, source: str = "") -> str:
    """The plan in words: units by stage, GPU hours (or how to get them), disk by part against the free space,
    and what reduces it when it does not fit."""
    t = table(plan, rates)
    lines = [f"plan for {plan.run_dir} ({plan.config.profile} profile, {len(plan.config.backbones)} backbones)"]
    by = t.groupby("stage", sort=False).agg(units=("unit", "size"), done=("done", "sum"),
                                            train=("train images", "sum"), forward=("forward images", "sum"),
                                            hours=("hours", lambda h: h.sum(min_count=1)))
    for r in by.itertuples():
        h = f"{r.hours:.1f} h" if pd.notna(r.hours) else "not priced"
        lines.append(f"  {r.Index:16s} {int(r.units):4d} units ({int(r.done)} done)  {int(r.train):>13,} training "
                     f"+ {int(r.forward):>12,} forward images  {h}")
    todo = t[~t["done"]]
    if rates:
        lines.append(f"time left: {todo['hours'].sum():.1f} h at {source} ({todo['hours'].isna().sum()} units not "
                     "priced: DIF's U-Net, or a backbone without figures)")
    else:
        lines.append("GPU time: not estimated (dfx plan --calibrate measures this machine; --throughput FILE reads "
                     "benchmarks/bench_paper_path.py --json from the target GPU)")
    parts = ", ".join(f"{k} {v / GB:.1f} GB" for k, v in plan.disk.items())
    lines.append(f"disk: {sum(plan.disk.values()) / GB:.1f} GB in all ({parts}); {plan.existing / GB:.1f} GB already "
                 f"there; needs {plan.needed / GB:.1f} GB more (with the largest training state), "
                 f"{plan.free / GB:.1f} GB free: {'fits' if plan.fits else 'DOES NOT FIT'}")
    lines += [f"warning: {w}" for w in plan.warnings]
    if not plan.fits:
        lines.append("to make it fit, set in turn until it fits (-p setting=value; each saving counts the ones above):")
        left = plan.needed
        for what, b in plan.savings:
            left -= b
            lines.append(f"  {what}: saves {b / GB:.1f} GB, then {max(left, 0) / GB:.1f} GB needed"
                         + (" (fits)" if left <= plan.free else ""))
    return "\n".join(lines)


def plan_for(cfg: Config) -> tuple[Run, Plan]:
    """The Run of `cfg` (its folder not created for user data; the built-in world is built in it) and its plan."""
    run = Run(config=cfg, dir=prepare_run_dir(cfg) if not cfg.data_root else run_dir_of(cfg))
    return run, make_plan(run)

