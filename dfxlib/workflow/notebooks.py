"""Headless execution of the numbered notebooks with papermill (`dfx run`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd
import papermill as pm

from dfxlib.config import (DEFAULT_PROFILE, STALL_TIMEOUT_S, ConfigError, checkout, load, resolve, run_dir_of,
                           runs_root)
from dfxlib.evaluation.tables import build_report, write_table
from dfxlib.run import claim_run_dir, lock, prepare_run_dir
from dfxlib.workflow import execute

_NUMBERED = re.compile(r"^(\d\d)_.+\.ipynb$")


@dataclass
class NotebookFailure(Exception):
    """A notebook failed; `str()` says which notebook and cell, and the error."""

    notebook: str
    cell: str
    error: str
    executed: Path
    advice: str = ""

    def __str__(self) -> str:
        text = f"{self.notebook} failed in {self.cell}: {self.error}\n  executed copy: {self.executed}"
        return text + (f"\n  {self.advice}" if self.advice else "")


def notebooks_dir() -> Path:
    """The numbered notebooks: the checkout's `notebooks/`, else the copy shipped inside the package."""
    root = checkout()
    return root / "notebooks" if root else Path(__file__).resolve().parents[1] / "notebooks"


def select(only: Sequence[str] = (), start: str | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks to run, in order: all, `only` these numbers, or from number `start` on."""
    folder = folder or notebooks_dir()
    found = {m.group(1): p for p in sorted(folder.glob("*.ipynb")) if (m := _NUMBERED.match(p.name))}
    if not found:
        raise FileNotFoundError(f"{folder}: no numbered notebooks (NN_name.ipynb)")
    for n in [*only, *([start] if start else [])]:
        if n.zfill(2) not in found:
            raise ConfigError(f"no notebook numbered {n!r} in {folder}; have {', '.join(sorted(found))}")
    keys = sorted(found)
    if only:
        keys = [k for k in keys if k in {n.zfill(2) for n in only}]
    if start:
        keys = [k for k in keys if k >= start.zfill(2)]
    return [found[k] for k in keys]


def _trust(executed: Path, log: Callable[[str], None]) -> None:
    """Sign the executed copy (when there is one) as trusted: the user ran it, so it opens with its widgets."""
    if executed.is_file() and (why := execute.trust(executed)):
        log(f"warning: {why}")


def _failure(nb: Path, out: Path, exc: Exception, profile: str, params: Mapping[str, str]) -> NotebookFailure:
    if isinstance(exc, execute.NotebookStalled):
        again = ["dfx", "run", "--profile", profile, "--from", nb.name[:2]]
        for key, value in {**params, "run_dir": str(out.parents[1])}.items():  # the same run, the same settings
            again += ["-p", f"{key}={value}"]
        return NotebookFailure(
            notebook=nb.name, cell=f"cell {exc.cell_index} ({exc.first_line})", error=f"stalled: {exc.reason}",
            executed=out, advice=f"the kernel was stopped; what ran is saved. Resume with `{shlex.join(again)}`; "
                                 "raise `--stall-timeout` if the cell is merely slow and silent.")
    cell = "a cell"
    if getattr(exc, "exec_count", None) is not None:
        first = (getattr(exc, "source", "") or "").strip().splitlines()
        cell = f"cell In [{exc.exec_count}]" + (f" ({first[0][:80]})" if first else "")
    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    return NotebookFailure(notebook=nb.name, cell=cell, error=f"{ename}: {evalue}", executed=out)


def seeds_dir(profile: str, params: Mapping[str, str] | None = None) -> Path:
    """Where `run_seeds` writes: `run_dir` when given, else `runs/<profile>-seeds` (beside the one-seed run)."""
    cfg = resolve(profile, dict(params or {}))
    return Path(cfg.run_dir).expanduser().resolve() if cfg.run_dir else runs_root() / f"{profile}-seeds"


def run_seeds(profile: str, params: Mapping[str, str] | None, seeds: Sequence[int], log=print, **kw) -> Path:
    """Run the selected notebooks once per seed, each into `<folder>/seed-<s>/` (`seeds_dir`; a run stopped part
    way resumes like any run), then write `<folder>/tables/claims_over_seeds` (`verdicts.over_seeds` of every
    `verdicts_*` table) over these seeds and those the folder already holds with the same settings
    (`seeds_alike`: more seeds are added by running them into the same folder), and REPORT.md. Returns the
    folder."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: name each seed once, got {list(seeds)}")
    base = claim_run_dir(seeds_dir(profile, params))
    for s in seeds:  # every setting and seed checked before the first run starts
        resolve(profile, {**dict(params or {}), "seed": str(s)})
    for i, s in enumerate(seeds):
        log(f"seed {s} of {', '.join(map(str, seeds))}")
        if i:  # one MiniDFX world for every seed (`builtin_seed`): shared (`minidfx.shared_folder()`), or linked
            # from the first seed's folder where that one holds its own (no writable per-user cache)
            share_worlds(base / f"seed-{seeds[0]}", claim_run_dir(base / f"seed-{s}"))
        run_notebooks(profile, {**dict(params or {}), "seed": str(s), "run_dir": str(base / f"seed-{s}")}, log=log,
                      **kw)
    alike, unlike = seeds_alike(base, profile, params)
    for line in unlike:
        log(line)
    every = sorted(set(seeds) | set(alike))
    if len(every) > len(seeds):
        log(f"the summary counts seeds {', '.join(map(str, every))}: "
            f"{', '.join(str(s) for s in every if s not in seeds)} already in {base} with the same settings")
    summarize_seeds(base, every)
    log(f"report: {build_report(base)}")
    return base


#: settings that say where and how a seed ran, not what: seeds differing in them are summarized together (the device
#: and the convolutions' layout change float rounding only, which moves results as much as another seed does:
#: benchmarks/compare_seeds.py)
HOW_IT_RAN: tuple[str, ...] = ("seed", "run_dir", "progress", "device", "memory_format")


def seeds_alike(base: Path, profile: str, params: Mapping[str, str] | None) -> tuple[list[int], list[str]]:
    """The seeds of the seeds folder `base` (`seed-<s>/` with verdict tables) whose saved settings (config.json,
    `config.load`: a setting it lacks takes its profile's value) are the ones `profile` and `params` give, but for
    `HOW_IT_RAN`; and one line for each seed left out, naming the settings that differ."""
    alike, unlike = [], []
    for folder in sorted(base.glob("seed-*")):
        s = folder.name.removeprefix("seed-")
        if not s.isdigit() or not any((folder / "tables").glob("verdicts_*.csv")):
            continue
        try:
            saved = load(folder / "config.json")
        except ConfigError as exc:
            unlike.append(f"{folder}: left out of the summary, its settings are unreadable ({exc})")
            continue
        want = resolve(profile, {**dict(params or {}), "seed": s})
        differ = [f.name for f in dataclasses.fields(want)
                  if f.name not in HOW_IT_RAN and getattr(saved, f.name) != getattr(want, f.name)]
        if differ:
            unlike.append(f"{folder}: left out of the summary, other settings ("
                          + ", ".join(f"{k}={getattr(saved, k)!r}, not {getattr(want, k)!r}" for k in differ) + ")")
        else:
            alike.append(int(s))
    return alike, unlike


def share_worlds(source: Path, run_dir: Path) -> list[Path]:
    """Hard-link (copy, across filesystems) every finished MiniDFX world in the cache of the run folder `source`
    into the cache of `run_dir`, where it is not yet: the same recipe builds the same world, so a run over seeds
    whose first seed built its own world (no writable per-user cache) builds it once. Returns the worlds linked."""
    from dfxlib.data.minidfx import is_complete

    out = []
    for world in sorted((source / "cache").glob("minidfx-*")):
        target = run_dir / "cache" / world.name
        if not is_complete(world) or target.exists():
            continue
        tmp = target.with_name(f".linking-{world.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(world, tmp, copy_function=os.link)
        except OSError:  # another filesystem: a copy
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(world, tmp)
        os.replace(tmp, target)
        out.append(target)
    return out


def run_verdicts(run_dir: Path) -> pd.DataFrame:
    """Every `verdicts_*` table of the run folder `run_dir`, one row per claim tested (empty when it has none)."""
    return pd.concat([pd.read_csv(p, keep_default_na=False) for p in sorted((run_dir / "tables")
                                                                           .glob("verdicts_*.csv"))] or
                     [pd.DataFrame()], ignore_index=True)


def summarize_seeds(base: Path, seeds: Sequence[int]) -> Path:
    """Write `base/tables/claims_over_seeds` from the `verdicts_*` tables of `base/seed-<s>/` (`run_seeds`);
    returns the CSV's path."""
    from dfxlib.evaluation.verdicts import over_seeds

    tables = {s: run_verdicts(base / f"seed-{s}") for s in seeds}
    return write_table(over_seeds(tables), "claims_over_seeds", base / "tables",
                       title=f"The paper's claims over seeds {', '.join(map(str, seeds))}: verdict counts and the "
                             "spread of each difference (points)",
                       notes="A claim's seeds agree unless one seed says `holds` and another `does not hold`; a claim "
                             "that moves only through `too close to call` is one the data cannot settle at this size. "
                             "`over_seeds` decides it by the 95% interval of its mean difference over the seeds "
                             "(Student's t): the spread of training runs, which one seed's interval cannot show. "
                             "A claim with the same difference and verdict on every seed (the audit's) keeps that "
                             "verdict.")


def run_notebooks(profile: str = DEFAULT_PROFILE, params: Mapping[str, str] | None = None, only: Sequence[str] = (),
                  start: str | None = None, folder: Path | None = None, log=print,
                  stall_timeout: float = STALL_TIMEOUT_S, heartbeat: float = 120.0) -> Path:
    """Execute the selected notebooks in order into `runs/<profile>/notebooks/`; stop at the first failure
    (raising NotebookFailure) and write REPORT.md either way. A cell whose kernel neither speaks nor computes
    for `stall_timeout` seconds (0: no limit) is a stall (see `nbexec`). On a terminal papermill's bar shows
    the cells; otherwise (logs, batch jobs) a cell running longer than `heartbeat` seconds is announced
    every `heartbeat` seconds. Returns the run folder."""
    params = dict(params or {})
    cfg = resolve(profile, params)  # validate every override and notebook number before writing anything
    books = select(only, start, folder)
    if cfg.device != "auto":  # a GPU that is not there is said now, not after the first notebooks ran
        from dfxlib.models.train import device_of

        device_of(cfg.device)
    run_dir = claim_run_dir(run_dir_of(cfg))
    overrides = {k: v for k, v in params.items() if k not in ("run_dir", "data_root")}
    parameters = {"profile": profile, "run_dir": str(run_dir), "data_root": cfg.data_root, "overrides": overrides}
    with lock(run_dir, "dfx run"):  # one writer per run folder: a second dfx run is refused before it writes
        prepare_run_dir(cfg)
        batch_before = os.environ.get("DFX_BATCH")
        os.environ["DFX_BATCH"] = "1"  # inherited by the kernels: no progress bars inside executed notebooks
        try:
            with _quiet_interrupt():
                _execute_all(books, run_dir, parameters, profile, params, log, stall_timeout, heartbeat)
        finally:
            if batch_before is None:
                os.environ.pop("DFX_BATCH", None)
            else:
                os.environ["DFX_BATCH"] = batch_before
            log(f"report: {build_report(run_dir)}")
    return run_dir


@contextmanager
def _quiet_interrupt() -> Iterator[None]:
    """Ctrl-C stops the run with one line (`dfx run: interrupted`): what the dying kernel and its client would
    print after it (a ZMQError traceback, "Kernel died", an unretrieved task) is dropped, not shown."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: Any) -> None:
        execute.INTERRUPTED = True
        for name in ("asyncio", "papermill", "traitlets"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _execute_all(books: Sequence[Path], run_dir: Path, parameters: dict, profile: str, params: Mapping[str, str],
                 log: Callable[[str], None], stall_timeout: float, heartbeat: float) -> None:
    """Execute `books` in order into `run_dir/notebooks/`, stopping at the first failure (`run_notebooks`)."""
    interactive = sys.stderr.isatty()
    for i, nb in enumerate(books, 1):
        out = run_dir / "notebooks" / nb.name
        log(f"[{i}/{len(books)}] {nb.stem} ...")
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), parameters=parameters, cwd=str(nb.parent),
                                progress_bar=interactive, kernel_name="python3", engine_name=execute.ENGINE,
                                stall_after=stall_timeout, heartbeat=0 if interactive else heartbeat,
                                announce=lambda line, name=nb.stem: log(f"    {name}: {line}"))
        except Exception as exc:  # papermill raises its own and kernel errors
            _trust(out, log)
            raise _failure(nb, out, exc, profile, params) from exc
        _trust(out, log)
        log(f"[{i}/{len(books)}] {nb.stem} done in {time.perf_counter() - t0:.1f} s")
