"""The `dfx` command: plan and run the notebooks, rebuild the report, audit a folder, classify images."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dfxlib.config import (BASE_KINDS, DEFAULT_PROFILE, PREDICT_CHOICES, PROFILES, STALL_TIMEOUT_S, Config,
                           ConfigError, describe, load, resolve, runs_root)
from dfxlib.data.index import CLASSES, DataError
from dfxlib.data.split import SplitMismatchError
from dfxlib.models.train import CheckpointMismatch


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`-p KEY=VALUE` arguments as a dict of overrides (checked later by `config.resolve`)."""
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise ConfigError(f"-p {p!r}: expected key=value")
        out[key.strip()] = value
    return out


def _numbers(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _bad_seed(text: str) -> int:
    raise ConfigError(f"--seeds: {text!r} is not a seed (a whole number >= 0)")


def cmd_run(args: argparse.Namespace) -> int:
    from dfxlib.workflow.notebooks import NotebookFailure, run_notebooks, select

    cfg = resolve(args.profile, parse_params(args.param))
    books = select(_numbers(args.only), args.start)  # a notebook number that does not exist is said before planning
    seeds = [int(s) if s.isdigit() else _bad_seed(s) for s in _numbers(args.seeds)]
    if args.dry_run:
        per_seed = f", once per seed ({', '.join(map(str, seeds))})" if seeds else ""
        return _dry_run("run", cfg, f"notebooks {', '.join(p.stem for p in books)}{per_seed}")
    if cfg.data_root and not args.no_disk_check:  # the built-in worlds are small
        from dfxlib.workflow.plan import plan_for, summary

        _, plan = plan_for(cfg)
        if not plan.fits:
            print(f"dfx run: refused, the disk cannot hold this run (nothing was written)\n{summary(plan)}\n"
                  "(--no-disk-check runs it anyway)", file=sys.stderr)
            return 2
    try:
        if seeds:
            from dfxlib.workflow.notebooks import run_seeds

            run_dir = run_seeds(args.profile, parse_params(args.param), seeds, only=_numbers(args.only),
                                start=args.start, stall_timeout=args.stall_timeout)
        else:
            run_dir = run_notebooks(args.profile, parse_params(args.param), only=_numbers(args.only), start=args.start,
                                    stall_timeout=args.stall_timeout)
    except NotebookFailure as exc:
        print(f"dfx run: {exc}", file=sys.stderr)
        return 1
    print(f"done: {run_dir}")
    return 0


def _dry_run(command: str, cfg: Config, what: str) -> int:
    """`--dry-run`: the settings, the dataset and the disk checked by the plan, and what would run said; nothing
    is trained or submitted (the built-in world is built, as the plan needs its images)."""
    from dfxlib.models.backbones import BackboneError, weights_file
    from dfxlib.workflow.plan import plan_for, summary

    try:  # the weights a long run would otherwise only miss when it reaches them
        for name in cfg.backbones:
            weights_file(name, cfg.pretrained)
        for name in (cfg.detector_backbone, cfg.fingerprint_backbone):
            weights_file(name, cfg.detector_pretrained)
    except BackboneError as exc:
        print(f"dfx {command} --dry-run: {exc}", file=sys.stderr)
        return 2
    _, plan = plan_for(cfg)
    changed = [r for r in describe(cfg, [f.name for f in dataclasses.fields(Config) if f.name != "profile"])
               if r["changed"]]
    print(f"dfx {command} --dry-run: would run {what}, {cfg.profile} profile"
          + "".join(f"\n  {r['setting']} = {r['value']}" for r in changed) + f"\n{summary(plan)}")
    return 0 if plan.fits else 2


def cmd_plan(args: argparse.Namespace) -> int:
    from dfxlib.workflow import plan as pl

    cfg = resolve(args.profile, parse_params(args.param))
    _, plan = pl.plan_for(cfg)
    rates, source = None, ""
    if args.throughput:
        rates, source = pl.rates_from_file(args.throughput), f"the figures of {args.throughput}"
    elif args.calibrate:
        rates = pl.rates_by_calibration(cfg, args.batch_size or cfg.batch_size)
        source = f"the rates measured here ({cfg.device}, batch {args.batch_size or cfg.batch_size})"
    table = pl.table(plan, rates)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
    print(pl.summary(plan, rates, source))
    return 0 if plan.fits else 1


#: `dfx submit`'s executor and job-setting flags -> the keys of `submit.submit`'s params
SUBMIT_FLAGS = {"executor": "executor", "partition": "slurm_partition", "account": "slurm_account", "gpus": "gpus",
                "tasks": "tasks", "cpus": "cpus", "timeout_min": "timeout_min", "parallelism": "parallelism",
                "units_per_job": "units_per_job", "slurm_option": "slurm_additional_parameters"}


def _submit_params(args: argparse.Namespace, last: dict) -> dict:
    """The job settings of this submission: the flags given, else those of the run's last submission (`last`),
    else the defaults (`submit.JOB_DEFAULTS`, executor slurm)."""
    from dfxlib.workflow.submit import JOB_DEFAULTS

    defaults = {"executor": "slurm", **JOB_DEFAULTS}
    params = {"wait_timeout_s": args.wait_timeout}
    for flag, key in SUBMIT_FLAGS.items():
        given = getattr(args, flag)
        if flag == "slurm_option" and given:
            given = parse_params(given)  # key=value, checked like -p
        params[key] = given if given not in (None, []) else last.get(key, defaults[key])
    return params


def _kept_flags(args: argparse.Namespace, last: dict) -> list[str]:
    """The flags left out of this submission that take the last submission's value (not its empty ones)."""
    kept = []
    for flag, key in SUBMIT_FLAGS.items():
        value = last.get(key)
        if getattr(args, flag) not in (None, []) or value in (None, "", 0, {}):
            continue
        values = [f"{a}={b}" for a, b in value.items()] if isinstance(value, dict) else [value]
        kept += [f"--{flag.replace('_', '-')} {v}" for v in values]
    return kept


def cmd_submit(args: argparse.Namespace) -> int:
    from dfxlib.run import Run, claim_run_dir, lock, run_dir_of, start
    from dfxlib.workflow.submit import last_params, submit

    if args.run_dir:  # an existing run, with the settings it was started with
        run_dir = Path(args.run_dir)
        if args.param or not (run_dir / "config.json").is_file():
            why = "takes no -p (the run keeps its settings)" if args.param else "is not a run folder (no config.json)"
            print(f"dfx submit: --run-dir {run_dir} {why}", file=sys.stderr)
            return 2
        run = Run(config=load(run_dir / "config.json"), dir=run_dir)
    elif args.dry_run:
        run = Run(config=resolve(args.profile, parse_params(args.param)), dir=Path())
    else:
        overrides = parse_params(args.param)
        run_dir = claim_run_dir(run_dir_of(resolve(args.profile, overrides)))
        with lock(run_dir, "dfx submit", shared=True):  # a folder a dfx run writes is refused before its settings
            run = start(args.profile, overrides=overrides)
    try:
        last = last_params(run) if args.run_dir else {}
        params = _submit_params(args, last)
        kept = _kept_flags(args, last)
        if kept:
            print(f"dfx submit: as this run's last submission: {' '.join(kept)}", file=sys.stderr)
        if args.dry_run:
            executor = params.pop("executor")
            jobs = ", ".join(f"{k}={v}" for k, v in params.items() if v)
            units = f"the units of work (`--only {args.only}`)" if args.only else "every unit of work"
            return _dry_run("submit", run.config, f"{units} as {executor} jobs ({jobs})")
        submit(run, params.pop("executor"), wait=not args.no_wait, params=params,
               log=lambda s: print(f"dfx submit: {s}", file=sys.stderr), only=_numbers(args.only))
    except ValueError as exc:  # settings that cannot make a job
        print(f"dfx submit: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:
        print(f"dfx submit: {exc}", file=sys.stderr)
        return 1
    print(f"dfx submit: {'submitted' if args.no_wait else 'done'}: {run.dir} (dfx status --run-dir {run.dir})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dfxlib.run import Run
    from dfxlib.workflow.submit import status

    run_dir = Path(args.run_dir) if args.run_dir else runs_root() / args.profile
    if not (run_dir / "config.json").is_file():
        print(f"dfx status: {run_dir} is not a run folder (no config.json)", file=sys.stderr)
        return 1
    rows = status(Run(config=load(run_dir / "config.json"), dir=run_dir))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(f"{run_dir}: {len(rows)} units: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for r in rows:
        if r["state"] != "done" or args.all:
            print(f"  {r['unit']:40s} {r['state']:14s} {r['job']:>12s}  {r['log']}")
    return 1 if counts.get("failed") else 0


def cmd_report(args: argparse.Namespace) -> int:
    from dfxlib.evaluation.tables import build_report
    from dfxlib.run import is_dfx_folder

    run_dir = Path(args.run_dir) if args.run_dir else runs_root() / args.profile
    if not run_dir.is_dir():
        print(f"dfx report: {run_dir} does not exist: run `dfx run --profile {args.profile}` first", file=sys.stderr)
        return 1
    if not is_dfx_folder(run_dir):  # REPORT.md is written only into a run folder
        print(f"dfx report: {run_dir} is not a dfx run folder: nothing written", file=sys.stderr)
        return 2
    print(build_report(run_dir))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from dfxlib.data.audit import audit
    from dfxlib.data.index import build_index
    from dfxlib.evaluation.tables import to_markdown
    from dfxlib.run import claim_run_dir

    out = claim_run_dir(Path(args.out) if args.out else runs_root() / "audit" / Path(args.data_root).resolve().name,
                        setting="--out")  # never over the dataset, a folder of yours, / or the source tree
    index = build_index(args.data_root, layout=args.layout, check=args.check, cache=out / "index_cache.csv",
                        progress=sys.stderr.isatty())
    result = audit(index)
    result.save(out)
    index.table.to_csv(out / "index.csv", index=False)
    print(to_markdown(result.dataset))
    for w in result.warnings:
        print(w)
    print(f"tables: {out}")
    if index.usable.empty:
        print(f"dfx audit: {args.data_root} holds no usable image", file=sys.stderr)
        return 1
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dfxlib.predict import complete, files, inference, served

    if args.out not in ("", "-"):
        files.check_out(Path(args.out), args.paths)  # before the model loads: nothing of yours is replaced
    if args.detector != "deepfeaturex" and (args.explain or args.heatmaps):
        raise ConfigError("--explain and --heatmaps read the complete model's base models: use them with "
                          "--detector deepfeaturex (the default)")
    models = served.load_models(args.model, args.detector, args.backbone, args.kind, args.device)
    if not models:
        raise ConfigError(f"{args.model or 'runs/mini'}: no trained model to predict with; run `dfx run` first")
    for m in models:
        where = f" from {m.head_path.parent}" if isinstance(m, complete.Predictor) else ""
        print(f"dfx predict: {m.name}{where} ({m.input_size} px, {m.device})", file=sys.stderr)
    chosen = models if args.detector == "all" else models[0]  # all: a column group per model
    max_pixels = complete.run_setting(served.find_run(args.model), "max_pixels")
    rows = inference.predict_paths(chosen, args.paths, args.batch_size, args.explain, args.workers, max_pixels)
    if args.heatmaps:
        rows = complete.with_heatmaps(models[0], rows, Path(args.heatmaps), args.cam_class)
    cols = inference.columns(chosen, args.explain, bool(args.heatmaps))
    bad = 0

    def counted(rows):
        nonlocal bad
        from tqdm.auto import tqdm

        with tqdm(desc="dfx predict", unit="image", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
            for r in rows:
                bad += bool(r["error"])
                bar.update(1)
                yield r
    to_stdout = args.out in ("", "-")
    out = Path(args.out) if not to_stdout else None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
    fh = sys.stdout if out is None else open(out, "w", newline="")
    where = "standard output" if out is None else str(out)
    sink = None
    try:
        sink = files.CsvOut(fh, cols)
        n = sink.write(counted(rows))
    except (KeyboardInterrupt, OSError) as exc:
        if sink and isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            sink.cut()  # a full disk may have left half a row
        return _stop("predict", exc, f"{where} holds {sink.rows if sink else 0} complete rows")
    finally:
        if out is not None:
            try:
                fh.close()
            except OSError:
                pass
    print(f"dfx predict: {n} images, {bad} unreadable" + ("" if out is None else f" -> {out}"), file=sys.stderr)
    return 0 if n > bad else 1  # nothing readable (or nothing at all) is a failure


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: a reader that closed the pipe (`| head`) gets no error at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def cmd_lab(args: argparse.Namespace) -> int:
    from dfxlib.config import project_root
    from dfxlib.workflow import lab

    return lab.launch(project_root(), args.port, open_browser=not args.no_browser)


def _number(kind: type, low: float, what: str):
    """An argparse type: a finite `kind` (int or float) of at least `low`, else a one-line error naming `what`."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if value != value or value in (float("inf"), float("-inf")) or value < low:
            raise argparse.ArgumentTypeError(f"{text!r}: {what}")
        return value
    return parse


SECONDS = _number(float, 0, "seconds must be 0 or more")
AT_LEAST_1 = _number(int, 1, "must be 1 or more")
AT_LEAST_0 = _number(int, 0, "must be 0 or more")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `dfx`."""
    ap = argparse.ArgumentParser(prog="dfx", description="DeepFeatureX replication: notebooks, tables, audit.")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute the numbered notebooks with papermill and write REPORT.md")
    r.add_argument("--profile", default=DEFAULT_PROFILE, help=f"{', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    r.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,03")
    r.add_argument("--seeds", metavar="S1,S2,...",
                   help="run once per seed, each into <run folder>/seed-<s> (default folder runs/<profile>-seeds), "
                        "and summarise every claim over the seeds (tables/claims_over_seeds), counting those the "
                        "folder already holds with the same settings")
    r.add_argument("--from", dest="start", help="run from this notebook number on")
    r.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    r.add_argument("--stall-timeout", type=SECONDS, default=STALL_TIMEOUT_S, metavar="SECONDS",
                   help="stop a notebook whose kernel neither outputs nor computes for this long "
                        f"(default {STALL_TIMEOUT_S:.0f}; 0: no limit)")
    r.add_argument("--no-disk-check", action="store_true",
                   help="start even when the plan says the disk cannot hold the run (user data only)")
    r.add_argument("--dry-run", action="store_true",
                   help="check the settings, the dataset and the disk plan, say what would run, and stop")
    r.set_defaults(func=cmd_run)
    sb = sub.add_parser("submit", help="run the units of work (models, features) through submitit: local or Slurm")
    sb.add_argument("--profile", default=DEFAULT_PROFILE, help=f"{', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    sb.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    sb.add_argument("--run-dir", help="submit what is left of an existing run folder, with its settings")
    sb.add_argument("--executor", choices=["slurm", "local"],
                    help="default slurm; with --run-dir, each job setting left out is the run's last submission's")
    sb.add_argument("--no-wait", action="store_true", help="return once submitted (follow with dfx status)")
    sb.add_argument("--wait-timeout", type=SECONDS, default=0, metavar="SECONDS",
                    help="stop waiting after this long (the jobs go on); default: as long as it takes")
    sb.add_argument("--only", help="comma-separated unit name prefixes, e.g. base,head/densenet121")
    sb.add_argument("--dry-run", action="store_true",
                    help="check the settings, the dataset, the job settings and the disk plan, say what would be "
                         "submitted, and stop")
    sb.add_argument("--partition", help="Slurm partition")
    sb.add_argument("--account", help="Slurm account")
    sb.add_argument("--gpus", type=AT_LEAST_0, help="GPUs per job")
    sb.add_argument("--tasks", type=AT_LEAST_0, metavar="N",
                    help="processes per job, training one model together (DDP); default one per GPU")
    sb.add_argument("--cpus", type=AT_LEAST_1, help="CPUs per process (default 1)")
    sb.add_argument("--timeout-min", type=AT_LEAST_1,
                    help="time limit per job in minutes (requeued when reached; default 1440)")
    sb.add_argument("--parallelism", type=AT_LEAST_1, help="jobs of a stage running at once (default 2)")
    sb.add_argument("--units-per-job", type=AT_LEAST_1, metavar="N",
                    help="run up to N units of a stage one after another in one job (small units: less start-up)")
    sb.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. qos=high")
    sb.set_defaults(func=cmd_submit)
    st = sub.add_parser("status", help="where the units of a run stand (done, running, failed with its log)")
    st.add_argument("--profile", default=DEFAULT_PROFILE)
    st.add_argument("--run-dir", help="a run folder (default runs/<profile>)")
    st.add_argument("--all", action="store_true", help="list the finished units too")
    st.set_defaults(func=cmd_status)
    pl = sub.add_parser("plan", help="every unit of work a run implies: image passes, GPU hours, disk; what exists")
    pl.add_argument("--profile", default=DEFAULT_PROFILE, help=f"{', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    pl.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    pl.add_argument("--calibrate", action="store_true",
                    help="price the units at rates measured here (a few training steps of every backbone)")
    pl.add_argument("--batch-size", type=AT_LEAST_0, default=0, help="batch of the calibration (default: the run's)")
    pl.add_argument("--throughput", default="", metavar="JSON",
                    help="price the units at the figures of benchmarks/bench_paper_path.py --json (the target GPU)")
    pl.add_argument("--csv", default="", help="write the per-unit table to this CSV file")
    pl.set_defaults(func=cmd_plan)
    rep = sub.add_parser("report", help="rebuild REPORT.md from the tables on disk")
    rep.add_argument("--profile", default=DEFAULT_PROFILE)
    rep.add_argument("--run-dir", help="a run folder (default runs/<profile>)")
    rep.set_defaults(func=cmd_report)
    a = sub.add_parser("audit", help="audit a dataset folder (or CSV manifest) without a notebook")
    a.add_argument("data_root")
    a.add_argument("--out", help="folder for the tables (default runs/audit/<folder name>)")
    a.add_argument("--layout", default="auto", choices=["auto", "paper", "binary", "manifest"])
    a.add_argument("--check", default="full", choices=["full", "header"])
    a.set_defaults(func=cmd_audit)
    p = sub.add_parser("predict", help="classify images (files, folders, globs) with a trained complete model "
                       "or any detector of the run")
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--model", default="", help="run folder, head folder or head checkpoint (default runs/mini)")
    p.add_argument("--detector", default="deepfeaturex", choices=PREDICT_CHOICES,
                   help="deepfeaturex (the complete model, default), plain or probe (the baselines), a compared "
                        "detector, or all: one CSV with a p_fake and a predicted column per trained model")
    p.add_argument("--backbone", default="", help="which backbone's model in a run folder (default: the first)")
    p.add_argument("--kind", default="", choices=["", *BASE_KINDS],
                   help="which base-model kind in a run folder (default: unbalanced)")
    p.add_argument("--out", default="-", help="CSV file to write (default: standard output)")
    p.add_argument("--batch-size", type=AT_LEAST_1, default=64)
    p.add_argument("--workers", type=AT_LEAST_0, default=2, help="batches decoded ahead in background threads")
    p.add_argument("--explain", action="store_true",
                   help="add each base model's contribution to the decision (contrib_dm/gan/real, driver)")
    p.add_argument("--heatmaps", default="", metavar="DIR", help="write Grad-CAM overlays (one PNG per image)")
    p.add_argument("--cam-class", default="predicted", choices=["predicted", *CLASSES],
                   help="class whose logit Grad-CAM explains (default: each image's predicted class)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.set_defaults(func=cmd_predict)
    lb = sub.add_parser("lab", help="open JupyterLab on the project (loopback only) with the dfx kernel")
    lb.add_argument("--port", type=_number(int, 1, "a port is 1 to 65535"), default=8888)
    lb.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")
    lb.set_defaults(func=cmd_lab)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dfx`."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, DataError, SplitMismatchError, CheckpointMismatch) as exc:
        print(f"dfx {args.command}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, OSError) as exc:  # Ctrl-C, a closed pipe, read-only or full disks: one line
        return _stop(args.command, exc)


def _stop(command: str, exc: BaseException, done: str = "") -> int:
    """Say in one line why `dfx command` stopped (and `done`: what is complete) and return its exit code."""
    if isinstance(exc, KeyboardInterrupt):
        what, code = "interrupted", 130
    elif isinstance(exc, BrokenPipeError):
        _quiet_stdout()  # the reader went away (`| head`): no second error at exit
        what, code = "output closed early", 1
    else:  # an OSError: read-only folder, full disk, permission
        name = getattr(exc, "filename", None)
        what, code = (f"{name}: " if name else "") + str(getattr(exc, "strerror", None) or exc), 1
    print(f"dfx {command}: {what}" + (f"; {done}" if done else ""), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
