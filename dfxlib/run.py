"""A run: resolved settings plus the folder layout under `runs/<profile>/`. Every notebook starts with
`run = dfxlib.start(profile, run_dir, data_root, overrides)`."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import pandas as pd

from dfxlib.config import (DEFAULT_PROFILE, Config, ConfigError, checkout, describe, project_root, resolve, run_dir_of,
                           runs_root)
from dfxlib.data import minidfx
from dfxlib.data.index import CLASSES, DataError, DatasetIndex, build_index
from dfxlib.data.split import Split, fingerprint, generator_roles, load_or_make_split, roles_of
from dfxlib.evaluation.tables import FILE_MODE, atomic_write_text, write_table

if TYPE_CHECKING:
    from dfxlib.data.batches import ImageStore
    from dfxlib.data.pixels import PixelStore

SUBDIRS = ("notebooks", "tables", "figures", "checkpoints", "cache")
#: the file that makes a folder dfx's: only such a folder (or a new or empty one) is written as a run folder
MARKER = ".dfx-run"


@dataclass(frozen=True)
class Checkpoints:
    """Where each trained model of a run lives under its `checkpoints/` folder: the one place that spells the
    layout (training, loading, units, the plan and `dfx predict` all ask it). A folder is not created by asking."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> "Checkpoints":
        """The checkpoints of the run folder `run_dir` (which may not be loaded as a `Run`, e.g. by `dfx predict`)."""
        return cls(Path(run_dir) / "checkpoints")

    @classmethod
    def of_head(cls, head: Path) -> "Checkpoints":
        """The checkpoints a head folder (or its `best.safetensors`) belongs to."""
        folder = head.parent if head.suffix else head
        return cls(folder.parents[3])

    def base(self, backbone: str, kind: str, main: str) -> Path:
        """One base model: `kind` unbalanced or siamese, `main` its class."""
        return self.root / "base" / backbone / kind / main

    @property
    def heads(self) -> Path:
        """Every fusion head (`head` of each backbone and kind)."""
        return self.root / "heads"

    def head(self, backbone: str, kind: str) -> Path:
        """The fusion head of the complete model of (backbone, kind)."""
        return self.heads / backbone / kind / "complete"

    def plain(self, backbone: str) -> Path:
        """The plain classifier of `backbone`."""
        return self.root / "plain" / backbone

    def probe(self, backbone: str) -> Path:
        """The linear probe's frozen `backbone`."""
        return self.root / "probe" / backbone

    def probe_classifier(self, backbone: str) -> Path:
        """The linear probe's fitted classifier (a file beside its frozen backbone)."""
        return self.probe(backbone) / "classifier.safetensors"

    def detector(self, name: str) -> Path:
        """A compared one-logit detector."""
        return self.root / "detectors" / name

    def fingerprint(self, tag: str, generator: str) -> Path:
        """The DIF fingerprint of `generator` at budget `tag` (`detectors.dif.budget_tag`)."""
        return self.root / "dif" / tag / generator

    def dif_union(self, tag: str) -> Path:
        """The class centres of the DIF fingerprints at budget `tag` used together (`detectors.dif.union`)."""
        return self.root / "dif" / tag / "union.safetensors"


#: the run folder's lock file (`lock`)
LOCK = ".dfx-lock"


class RunBusy(ConfigError):
    """The run folder is in use by another writer; the message names it."""


@contextmanager
def lock(run_dir: Path, what: str, shared: bool = False) -> Iterator[None]:
    """Hold the lock of `run_dir` while the block runs: exclusive for `dfx run` (one writer: two runs on one folder
    mixed their models and tables), shared for `dfx submit` and the unit jobs, which cooperate (each unit is
    idempotent). A second writer is refused at once (RunBusy naming the holder, nothing written). The system
    releases the lock of a process that dies, so a lock is never stale (flock; also on NFS v4)."""
    import fcntl
    import socket

    path = Path(run_dir) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise RunBusy(f"{run_dir} is in use by {holder}; wait for it to end (or stop it) and start again: two "
                          "writers on one run folder would mix their results") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()} on {socket.gethostname()})\n".encode())
        yield
    finally:
        os.close(fd)


class MissingPrerequisite(FileNotFoundError):
    """An output of an earlier notebook is missing; the message names the notebook to run first."""


def progress_enabled(cfg: Config) -> bool:
    """Progress bars are shown when asked for and not in a batch run (`dfx run` sets DFX_BATCH=1)."""
    return cfg.progress and os.environ.get("DFX_BATCH", "") != "1"


@dataclass
class Run:
    """Settings and folders of one run."""

    config: Config
    dir: Path
    _pixels: dict = field(default_factory=dict, repr=False, compare=False)

    def sub(self, name: str) -> Path:
        """A subfolder of the run (created on demand)."""
        p = self.dir / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def tables(self) -> Path:
        return self.sub("tables")

    @property
    def figures(self) -> Path:
        return self.sub("figures")

    @property
    def checkpoints(self) -> Checkpoints:
        """Where the run's trained models live (`Checkpoints`; asking creates no folder)."""
        return Checkpoints.of(self.dir)

    @property
    def cache(self) -> Path:
        return self.sub("cache")

    @property
    def progress(self) -> bool:
        return progress_enabled(self.config)

    @property
    def builtin(self) -> bool:
        """True when the run uses the built-in MiniDFX world (no data_root given)."""
        return not self.config.data_root

    def recipe(self) -> minidfx.Recipe:
        """The MiniDFX recipe of this run's settings."""
        cfg = self.config
        return minidfx.Recipe(per_generator=cfg.builtin_per_generator, size=cfg.builtin_size, seed=cfg.builtin_seed,
                              train_steps=cfg.builtin_train_steps)

    def data_root(self) -> Path:
        """The dataset of this run: `data_root` if set, else the MiniDFX world of its recipe: the run folder's own
        (`cache/minidfx-<key>`) where it has one, else the one every run shares (`minidfx.shared_folder()`, built
        by the first run that needs it)."""
        if not self.builtin:
            return Path(self.config.data_root).expanduser().resolve()
        own = self.cache / f"minidfx-{self.recipe().key()}"
        if minidfx.is_complete(own):  # built into this run folder (before worlds were shared), or linked there
            return own
        try:
            return minidfx.build(minidfx.shared_folder(), self.recipe(), progress=self.progress)
        except minidfx.MiniDFXError as exc:  # no writable per-user cache: the run folder holds its own world
            print(f"{str(exc).split(';')[0]}: building this run's own MiniDFX world in its folder instead (set "
                  "DFX_CACHE to a writable folder to share one world between runs)", file=sys.stderr)
            return minidfx.build(self.cache, self.recipe(), progress=self.progress)

    def index(self, root: Path | None = None) -> DatasetIndex:
        """Index the run's dataset, or the folder `root` (per-file results cached in the run's cache folder)."""
        cfg = self.config
        root = self.data_root() if root is None else Path(root).resolve()
        key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        return build_index(root, check=cfg.index_check, max_pixels=cfg.max_pixels,
                           cache=self.cache / f"index_cache-{key}.csv", progress=self.progress)

    def pixels(self, images: "ImageStore") -> "PixelStore":
        """The uint8 store of `images` at the run's input size (`cache/pixels/`), shared by every backbone and
        epoch; one per dataset (kept for the run's life)."""
        from dfxlib.data.pixels import PixelStore

        if images.key not in self._pixels:
            self._pixels[images.key] = PixelStore(self.cache / "pixels", images, self.config.input_size,
                                                  progress=self.progress)
        return self._pixels[images.key]

    def images(self, index: DatasetIndex, keep: bool | None = None) -> "ImageStore":
        """Decoded images of the dataset of `index` (kept in memory when `keep`, default `keep_images`), keyed
        by its folder and its files' content."""
        from dfxlib.data.batches import ImageStore

        return ImageStore(index.root, keep=self.config.keep_images if keep is None else keep,
                          max_pixels=self.config.max_pixels, content=fingerprint(index.usable))

    def roles_of(self, index: DatasetIndex, rows: pd.DataFrame) -> pd.Series:
        """The role (`generator_roles`) of each row of `rows` (`split.roles_of`)."""
        return roles_of(self.generator_roles(index), rows)

    def generator_roles(self, index: DatasetIndex) -> pd.DataFrame:
        """family, generator, role of every generator of this run's dataset (`split.generator_roles`, with
        MiniDFX's own marks when the dataset is the built-in one)."""
        marks = minidfx.metadata(index.root).drop_duplicates("generator").set_index("generator")["role"] \
            if self.builtin else None
        return generator_roles(index, self.config, marks)

    def split(self, index: DatasetIndex, write: bool = True) -> Split:
        """The persisted split of this run's dataset (made on first use, then reused and checked; `write` false:
        what it would be, nothing saved). Generators not `seen` are held out; MiniDFX images are grouped by the
        photo region they come from."""
        cfg = self.config
        missing = [c for c in CLASSES if not (index.usable["family"] == c).any()]
        if missing:  # every model learns DM, GAN and REAL: said here, not as a sampling error in notebook 02
            binary = " (a real/fake layout names no fake DM or GAN: use it as `generalization_root`, a test set)"
            raise DataError(f"{index.root}: no usable {' or '.join(c.upper() for c in missing)} images; the base "
                            "models and the fusion head learn DM, GAN and REAL, so the dataset needs all three "
                            "classes" + (binary if index.layout == "binary" else " (`dfx audit` lists what it holds)"))
        roles = self.generator_roles(index)
        holdout = sorted(roles.loc[roles["role"] != "seen", "generator"])
        groups = None
        if self.builtin:
            meta = minidfx.metadata(index.root).set_index("path")["group"]
            groups = index.usable["path"].map(meta)
        return load_or_make_split(index.usable, self.dir, cfg.seed, (cfg.split_base, cfg.split_fusion, cfg.split_test),
                                  holdout, rebuild=cfg.rebuild_split, groups=groups, write=write)

    def settings(self, names: Sequence[str]) -> pd.DataFrame:
        """The settings a notebook reads (`names`): this run's value, the profile's, whether it was changed, and
        what each means."""
        return pd.DataFrame(describe(self.config, names))

    def save_table(self, df: Any, name: str, title: str = "", notes: str = "") -> Path:
        """Write a table as CSV and Markdown under `tables/`."""
        return write_table(df, name, self.tables, title=title, notes=notes)

    def save_figure(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as PNG under `figures/`."""
        path = self.figures / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        return path

    def wild_root(self) -> Path:
        """The in-the-wild evaluation folder (`wild_root`; a relative path is taken from the project root)."""
        return _from_project(self.config.wild_root)

    def generalization_root(self) -> Path | None:
        """The external generalization test sets (`generalization_root`, relative to the project root), or None
        when Table 4 is built from the run's own held-out generators."""
        return _from_project(self.config.generalization_root) if self.config.generalization_root else None

    def require(self, rel: str, notebook: str) -> Path:
        """The path of an earlier notebook's output, or MissingPrerequisite naming that notebook."""
        p = self.dir / rel
        if not p.exists():
            raise MissingPrerequisite(f"{p} is missing: run notebook {notebook} first (dfx run --only "
                                      f"{notebook[:2]} --profile {self.config.profile})")
        return p


def _from_project(path: str) -> Path:
    """`path` made absolute (a relative one is taken from the project root)."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else project_root() / p).resolve()


def _is_old_run(d: Path) -> bool:
    """A folder dfx wrote before the marker existed: a run (its config.json is a dfx configuration) or a
    `dfx audit` output (its index cache)."""
    if (d / "index_cache.csv").is_file() and (d / "index.csv").is_file():
        return True
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and {"profile", "seed", "run_dir"} <= set(cfg)


def is_dfx_folder(d: Path) -> bool:
    """True when `d` is a folder dfx wrote (its marker, or an output written before the marker existed)."""
    return d.is_dir() and ((d / MARKER).is_file() or _is_old_run(d))


def claim_run_dir(d: Path, setting: str = "run_dir") -> Path:
    """Check that dfx may write its outputs into `d` (a run folder, or `dfx audit --out`; `setting` names the
    option in messages) and mark it as dfx's. Refused (ConfigError, nothing written): the filesystem root, the
    home folder, the project itself or any folder of its source tree other than the runs folder, and an
    existing non-empty folder that dfx did not write (a dataset, a folder of your own files)."""
    d = d.resolve()
    home = Path.home().resolve()
    runs = runs_root().resolve()
    if d == Path(d.anchor) or d == home:
        raise ConfigError(f"{setting}={d}: refusing to write into {'the filesystem root' if d == Path(d.anchor) else 'the home folder'}; choose a new folder")
    for root in filter(None, (checkout(), Path(__file__).resolve().parent)):  # the source tree, the package
        if d == root or ((d == runs or runs not in d.parents) and root in (d, *d.parents)):
            raise ConfigError(f"{setting}={d}: refusing to write into the project's source tree ({root}); use "
                              f"a folder under {runs} or outside the project")
    if d.exists() and not d.is_dir():
        raise ConfigError(f"{setting}={d}: not a folder")
    if d.is_dir() and not is_dfx_folder(d) and any(d.iterdir()):
        raise ConfigError(f"{setting}={d}: the folder is not empty and dfx did not write it (no {MARKER} file): "
                          "choose a new or empty folder")
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).touch()
    return d


def prepare_run_dir(cfg: Config) -> Path:
    """The run folder of `cfg`, claimed (`claim_run_dir`), with its sub-folders and config.json written.
    A `data_root` that does not exist is refused first, so a typo creates nothing."""
    if cfg.data_root and not Path(cfg.data_root).expanduser().exists():
        raise ConfigError(f"data_root={cfg.data_root}: no such file or folder")
    d = claim_run_dir(run_dir_of(cfg))
    for s in SUBDIRS:
        (d / s).mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "config.json", cfg.to_json() + "\n")
    return d


def start(profile: str = DEFAULT_PROFILE, run_dir: str = "", data_root: str = "",
          overrides: Mapping[str, Any] | None = None) -> Run:
    """Resolve the settings of a notebook's parameters cell, create the run folder and write config.json."""
    extra = {k: v for k, v in (("run_dir", run_dir), ("data_root", data_root)) if v}
    cfg = resolve(profile, {**dict(overrides or {}), **extra})
    return Run(config=cfg, dir=prepare_run_dir(cfg))
