"""Run the unfinished units of a run through submitit: on this machine (`local`, a few processes at a time) or
on a Slurm cluster (`slurm`: one job array per stage, each stage after the ones it needs, at most
`slurm_parallelism` jobs of an array at once). A job that reaches its time limit or is preempted is requeued
and resumes from its last epoch (submitit's checkpointing); a failed unit is reported with its log.

Jobs and their logs are kept under `<run>/jobs/`; `submitted.json` maps each unit to its last job, which is
what `status` reads.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import submitit

from dfxlib.evaluation.tables import atomic_write_text
from dfxlib.run import Run, lock
from dfxlib.workflow.units import STAGES, Unit, all_units, execute, is_done, prepare

#: the job settings `submit` takes from `params`, and their defaults (`dfx submit` flags: --timeout-min, ...)
JOB_DEFAULTS: dict = {"timeout_min": 24 * 60, "parallelism": 2, "gpus": 0, "tasks": 0, "cpus": 1, "units_per_job": 1,
                      "slurm_partition": "", "slurm_account": "", "slurm_additional_parameters": {}}


class UnitJob(submitit.helpers.Checkpointable):
    """A unit as a submitit job: on a time limit or preemption submitit calls `checkpoint` (inherited), which
    submits the same unit again; it resumes from its last saved epoch."""

    def __call__(self, run_dir: str, names: Sequence[str]) -> str:
        if submitit.JobEnvironment().num_tasks > 1:  # several GPUs: one process each, trained together
            submitit.helpers.TorchDistributedEnvironment().export()
        return "\n".join(execute(run_dir, name) for name in names)  # a finished one is skipped on a requeue


@dataclass
class Submitted:
    """A unit's job: its id and the folder submitit keeps its files in."""

    unit: str
    job_id: str
    folder: str


def _executor(run: Run, executor: str, stage: str, params: dict) -> submitit.Executor:
    folder = run.dir / "jobs" / stage
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="local" if executor == "local" else "slurm",
                               slurm_max_num_timeout=int(params.get("max_requeue", 5)))
    ex.update_parameters(name=f"dfx-{stage}", timeout_min=int(params.get("timeout_min", 60 * 24)))
    if executor == "slurm":
        extra = dict(params.get("slurm_additional_parameters", {}))
        ex.update_parameters(slurm_array_parallelism=int(params.get("parallelism", 2)),
                             gpus_per_node=int(params.get("gpus", 0)), tasks_per_node=processes(params),
                             cpus_per_task=int(params.get("cpus", 1)),
                             slurm_additional_parameters=extra,
                             **{k: params[k] for k in ("slurm_partition", "slurm_account") if params.get(k)})
    return ex


def processes(params: dict) -> int:
    """Processes per job training one model together: `tasks`, by default one per GPU (at least one).
    ValueError, before anything is queued, when that is below one or above the job's GPUs (each process
    trains on a GPU of its own)."""
    gpus, tasks = int(params.get("gpus", 0)), int(params.get("tasks", 0))
    n = tasks or max(1, gpus)
    if tasks < 0 or gpus < 0:
        raise ValueError(f"--tasks and --gpus must be at least 0, got tasks={tasks}, gpus={gpus}")
    if gpus and n > gpus:
        raise ValueError(f"--tasks {n} with --gpus {gpus}: each process needs a GPU of its own; ask for as many "
                         "GPUs as processes, or leave --tasks out (one process per GPU)")
    return n


def submit(run: Run, executor: str = "slurm", wait: bool = True, params: dict | None = None,
           log: Callable[[str], None] = print, only: Sequence[str] = ()) -> list[Submitted]:
    """Prepare the run (`units.prepare`), then submit its unfinished units stage by stage (`only`: those whose
    name starts with one of these, e.g. "base/densenet121"); with `wait`, follow them until every one has ended
    (printing progress) and raise RuntimeError naming the failed ones and their logs. On Slurm, a unit whose job
    from an earlier call is still queued or running is not submitted again (later stages wait for that job),
    and a job left pending on a unit that failed is cancelled and submitted anew. `params`: timeout_min,
    max_requeue, parallelism, units_per_job (units run one after another in one job, for small units whose
    start-up would dominate), gpus, tasks (processes per job training one model together with DDP; default
    one per GPU), cpus (per process), slurm_partition, slurm_account, slurm_additional_parameters,
    wait_timeout_s (0: wait as long as it takes). Returns the jobs this call follows."""
    with lock(run.dir, "dfx submit", shared=True):  # refused while a dfx run writes this folder
        return _submit(run, executor, wait, params, log, only)


def _submit(run: Run, executor: str, wait: bool, params: dict | None, log: Callable[[str], None],
            only: Sequence[str]) -> list[Submitted]:
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor: 'local' or 'slurm', got {executor!r}")
    params = {**JOB_DEFAULTS, **(params or {})}
    processes(params)  # a job shape Slurm would run and fail is refused here, not after the queue
    split, _ = prepare(run)
    todo = [u for u in all_units(run, split) if not is_done(run, u) and (not only or u.name.startswith(tuple(only)))]
    record = _load_record(run)
    live = _live_jobs(run, record, todo, log) if executor == "slurm" else {}
    jobs: dict[str, list] = {}
    saved = False
    for stage in STAGES:  # each after what it needs
        units = [u for u in todo if u.stage == stage]
        if not units:
            continue
        if executor == "local":  # no dependencies locally: wait for what this stage needs
            for need in STAGES[stage]:
                _wait(run, jobs.get(need, []), log)
        new = [u for u in units if u.name not in live]
        jobs[stage] = list({live[u.name].job_id: live[u.name] for u in units if u.name in live}.values())
        if not new:
            continue
        ex = _executor(run, executor, stage, params)
        after = [j for need in STAGES[stage] for j in jobs.get(need, [])]
        if after and executor == "slurm":
            old = {j.job_id for j in live.values()}  # queued before this call: named task by task
            ids = sorted({j.job_id if j.job_id in old else j.job_id.split("_")[0] for j in after})
            ex.update_parameters(slurm_dependency="afterok:" + ":".join(ids))
        per_job = max(1, int(params.get("units_per_job", 1)))
        groups = [new[i:i + per_job] for i in range(0, len(new), per_job)]
        try:
            submitted = _submit_units(ex, executor, run, groups, int(params.get("parallelism", 2)), log)
        except submitit.core.utils.FailedJobError as exc:  # sbatch said no: a partition, account or GPU request
            queued = [s for s in jobs if jobs[s]]
            raise RuntimeError(f"Slurm refused the {stage} job(s): {str(exc).strip()}. Nothing of that stage was "
                               "queued" + (f"; the {', '.join(queued)} jobs queued before it go on" if queued else "")
                               + f" (dfx status --run-dir {run.dir})") from None
        if not saved:  # the job settings of a submission that queued jobs: `dfx submit --run-dir` reuses them
            _save_settings(run, executor, params)
            saved = True
        jobs[stage] += submitted
        for group, j in zip(groups, submitted):
            for u in group:
                record[u.name] = {"job_id": j.job_id, "folder": str(j.paths.folder), "executor": executor}
        _save_record(run, record)
        log(f"submitted {len(new)} {stage} unit(s) ({executor}): {', '.join(u.name for u in new[:3])}"
            + (" ..." if len(new) > 3 else ""))
    if wait:
        _wait(run, [j for js in jobs.values() for j in js], log, timeout_s=float(params.get("wait_timeout_s", 0)))
    return [Submitted(u.name, record[u.name]["job_id"], record[u.name]["folder"]) for u in todo]


def _live_jobs(run: Run, record: dict, todo: Sequence[Unit], log: Callable[[str], None]) -> dict[str, submitit.Job]:
    """The unfinished units whose Slurm job from an earlier call is still queued or running (unit -> job). A
    pending job that waits on a unit submitted anew now (or on one that failed) is cancelled and submitted
    again, after the units it needs."""
    queue = _squeue()
    if queue is None:
        raise RuntimeError("squeue did not answer, so the jobs still queued cannot be told apart from lost ones; "
                           "submit again in a moment")
    live, stale, renewed = {}, [], set()
    for u in todo:  # stage by stage
        r = record.get(u.name)
        job = r["job_id"] if r and r.get("executor") == "slurm" else ""
        state, reason = queue.get(job, ("", ""))
        waits_on_new = state == "PENDING" and any(s in renewed for s in STAGES[u.stage])
        if state and reason != "DependencyNeverSatisfied" and not waits_on_new:
            live[u.name] = submitit.SlurmJob(folder=r["folder"], job_id=job)
            continue
        if state and job not in stale:  # units that share a job name it once
            stale.append(job)
        renewed.add(u.stage)
    if stale:
        subprocess.run(["scancel", *stale], capture_output=True, timeout=60)
        log(f"cancelled {len(stale)} pending job(s) that waited on units submitted again; submitted again after them")
    if live:
        log(f"{len(live)} unit(s) already queued or running: not submitted again ({', '.join(list(live)[:3])}"
            + (" ...)" if len(live) > 3 else ")"))
    return live


def _submit_units(ex: submitit.Executor, executor: str, run: Run, groups: Sequence[Sequence[Unit]],
                  parallelism: int, log: Callable[[str], None]) -> list:
    """One job per group of units, run one after another in it. Slurm: one job array. Local: `parallelism`
    processes at a time (this machine's cores are shared)."""
    args = ([str(run.dir)] * len(groups), [[u.name for u in g] for g in groups])
    if executor == "slurm":
        return ex.map_array(UnitJob(), *args)
    out: list = []
    for i in range(0, len(groups), max(1, parallelism)):
        out += ex.map_array(UnitJob(), *(a[i:i + parallelism] for a in args))
        if i + parallelism < len(groups):
            _wait(run, out[i:], log)
    return out


def _ended(job: submitit.Job, queue: dict[str, tuple[str, str]]) -> bool:
    """A job has ended when it wrote its result, or (Slurm) when it left the queue without one. Slurm's queue
    is read directly: submitit would ask `sacct`, which clusters without accounting refuse."""
    if isinstance(job, submitit.SlurmJob):
        return job.paths.result_pickle.exists() or job.job_id not in queue
    return job.done()


def _outcome(paths: submitit.core.utils.JobPaths) -> str:
    """"success" or "error" from a job's result file; "" when it has none."""
    if not paths.result_pickle.is_file():
        return ""
    with open(paths.result_pickle, "rb") as fh:
        return pickle.load(fh)[0]


def _failure(job: submitit.Job) -> str | None:
    """Why an ended job failed (its error and log), or None when it succeeded."""
    outcome = _outcome(job.paths)
    if not outcome:
        return f"job {job.job_id}: ended without a result (cancelled, killed or out of memory) (log {job.paths.stderr})"
    return f"job {job.job_id}: {_error(job.paths.stderr)} (log {job.paths.stderr})" if outcome == "error" else None


def _wait(run: Run, jobs: Sequence, log: Callable[[str], None], every: float = 1.0, timeout_s: float = 0) -> None:
    """Until every job has ended: a progress line when it changes (the jobs' units done, running, pending and
    failed, and the jobs ended), each failure with its log as it appears;
    RuntimeError naming the failures at the end; TimeoutError after `timeout_s` seconds (0: no limit) with jobs
    still queued or running."""
    last, start, told = "", time.time(), set()
    while True:
        queue = _squeue() if any(isinstance(j, submitit.SlurmJob) for j in jobs) else {}
        if queue is None:  # Slurm did not answer this time: nothing can be said to have ended
            time.sleep(every)
            continue
        ended = [_ended(j, queue) for j in jobs]
        failed = [f for j, e in zip(jobs, ended) if e and (f := _failure(j))]
        line = _units_line(run, jobs, ended, queue) + f"jobs: {sum(ended)} of {len(jobs)} ended ({len(failed)} failed)"
        if line != last:
            log(line)
            last = line
        for f in failed:
            if f not in told:
                log(f"failed: {f}")
                told.add(f)
        if all(ended):
            break
        waiting = [j for j, e in zip(jobs, ended) if not e]
        if failed and all(queue.get(j.job_id, ("",))[0] == "PENDING" for j in waiting):
            break  # what is left waits on what failed (Slurm keeps it pending): report the failures now
        if timeout_s and time.time() - start > timeout_s:
            raise TimeoutError(f"{len(jobs) - sum(ended)} job(s) still not ended after {timeout_s:.0f} s; they go "
                               f"on: dfx status --run-dir {run.dir}")
        time.sleep(every)
    if failed:
        raise RuntimeError("units failed: " + "; ".join(failed))


def _units_line(run: Run, jobs: Sequence, ended: Sequence[bool], queue: dict[str, tuple[str, str]]) -> str:
    """The followed jobs' units by state, "units: 3 done, 2 running, 19 pending, 0 failed; " (a unit of a running
    job counts as running until it is done; one of an ended job that is not done, as failed); "" when the run's
    record names none of them."""
    by_job: dict[str, list[str]] = {}
    for name, r in _load_record(run).items():
        by_job.setdefault(r["job_id"], []).append(name)
    counts = dict.fromkeys(("done", "running", "pending", "failed"), 0)
    for job, over in zip(jobs, ended):
        for name in by_job.get(job.job_id, []):
            if is_done(run, Unit.parse(name)):
                counts["done"] += 1
            else:
                counts["failed" if over else "pending" if queue.get(job.job_id, ("",))[0] == "PENDING" else
                       "running"] += 1
    if not sum(counts.values()):
        return ""
    return "units: " + ", ".join(f"{n} {state}" for state, n in counts.items()) + "; "


def _error(log: Path) -> str:
    """The error a failed job's log ends with (the last unindented `Name: message` line)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [s for s in lines if s and not s[0].isspace() and ": " in s and not s.startswith(("srun", "submitit"))]
    return errors[-1] if errors else "see the log"


def _settings_path(run: Run) -> Path:
    return run.dir / "jobs" / "settings.json"


def _save_settings(run: Run, executor: str, params: dict) -> None:
    keep = {k: v for k, v in params.items() if k != "wait_timeout_s"}
    atomic_write_text(_settings_path(run), json.dumps({"executor": executor, **keep}, indent=1))


def last_params(run: Run) -> dict:
    """The executor and job settings (`submit`'s params) of the run's last submission that queued jobs; {}
    before any."""
    p = _settings_path(run)
    try:
        last = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: the last submission's job settings cannot be read ({exc}); delete the file and "
                         "give the job settings again") from None
    if not isinstance(last, dict):
        raise ValueError(f"{p}: the last submission's job settings are not a JSON object; delete the file and give "
                         "the job settings again")
    return last


def _record_path(run: Run) -> Path:
    return run.dir / "jobs" / "submitted.json"


def _load_record(run: Run) -> dict:
    p = _record_path(run)
    return json.loads(p.read_text()) if p.is_file() else {}


def _save_record(run: Run, record: dict) -> None:
    _record_path(run).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_record_path(run), json.dumps(record, indent=1))


def status(run: Run) -> list[dict]:
    """Where each unit of the run stands: done; failed (with its log); pending or running (Slurm's word);
    blocked (pending on a unit that failed; submit again after fixing it); lost (a Slurm job that ended
    without a result: cancelled or killed; submit again to resume it); submitted (a local job without a result
    yet); not submitted."""
    split = run.split(run.index())
    record = _load_record(run)
    queue = _squeue() or {}
    rows = []
    for u in all_units(run, split):
        r = record.get(u.name)
        state, log = ("done", "") if is_done(run, u) else _job_state(r, queue) if r else ("not submitted", "")
        rows.append({"unit": u.name, "state": state, "job": r["job_id"] if r else "", "log": log})
    return rows


def _job_state(r: dict, queue: dict[str, tuple[str, str]]) -> tuple[str, str]:
    paths = submitit.core.utils.JobPaths(Path(r["folder"]), job_id=r["job_id"], task_id=0)
    outcome = _outcome(paths)
    if outcome:
        return ("failed" if outcome == "error" else "ended"), str(paths.stderr)
    if r["job_id"] in queue:
        state, reason = queue[r["job_id"]]
        blocked = reason == "DependencyNeverSatisfied"
        return ("blocked (a unit it needs failed)" if blocked else state.lower()), str(paths.stderr)
    return ("lost" if r.get("executor") == "slurm" else "submitted"), str(paths.stderr)


def _squeue() -> dict[str, tuple[str, str]] | None:
    """Job id (an array's tasks one by one, `12_3`) -> (state, reason) of this user's Slurm jobs; {} without
    Slurm; None when squeue failed (a busy controller), so that no job is taken for ended."""
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return {}
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    out = done.stdout
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 2]
    return {job: (state, reason) for job, state, reason in rows}
