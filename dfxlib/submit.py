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

from .run import Run
from .tables import atomic_write_text
from .units import STAGES, Unit, all_units, execute, is_done, prepare

#: the stages each stage needs finished first
NEEDS: dict[str, tuple[str, ...]] = {"features": ("base",), "head": ("features",)}


class UnitJob(submitit.helpers.Checkpointable):
    """A unit as a submitit job: on a time limit or preemption submitit calls `checkpoint` (inherited), which
    submits the same unit again; it resumes from its last saved epoch."""

    def __call__(self, run_dir: str, name: str) -> str:
        if submitit.JobEnvironment().num_tasks > 1:  # several GPUs: one process each, trained together
            submitit.helpers.TorchDistributedEnvironment().export()
        return execute(run_dir, name)


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
        gpus = int(params.get("gpus", 0))
        ex.update_parameters(slurm_array_parallelism=int(params.get("parallelism", 8)), gpus_per_node=gpus,
                             tasks_per_node=max(1, gpus), cpus_per_task=int(params.get("cpus", 1)),
                             slurm_additional_parameters=extra,
                             **{k: params[k] for k in ("slurm_partition", "slurm_account") if params.get(k)})
    return ex


def submit(run: Run, executor: str = "slurm", wait: bool = True, params: dict | None = None,
           log: Callable[[str], None] = print, only: Sequence[str] = ()) -> list[Submitted]:
    """Prepare the run (`units.prepare`), then submit its unfinished units stage by stage (`only`: those whose
    name starts with one of these, e.g. "base/densenet121"); with `wait`, follow them until every one has ended
    (printing progress) and raise RuntimeError naming the failed ones and their logs. `params`: timeout_min,
    max_requeue, parallelism, gpus, cpus, slurm_partition, slurm_account, slurm_additional_parameters,
    wait_timeout_s (0: wait as long as it takes). Returns the jobs of this call."""
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor: 'local' or 'slurm', got {executor!r}")
    params = params or {}
    split, _ = prepare(run)
    todo = [u for u in all_units(run, split) if not is_done(run, u) and (not only or u.name.startswith(tuple(only)))]
    jobs: dict[str, list] = {}
    record = _load_record(run)
    for stage in STAGES:
        units = [u for u in todo if u.stage == stage]
        if not units:
            continue
        if executor == "local":  # no dependencies locally: wait for what this stage needs
            for need in NEEDS.get(stage, ()):
                _wait(run, jobs.get(need, []), log)
        ex = _executor(run, executor, stage, params)
        after = [j for need in NEEDS.get(stage, ()) for j in jobs.get(need, [])]
        if after and executor == "slurm":
            ids = sorted({j.job_id.split("_")[0] for j in after})
            ex.update_parameters(slurm_dependency="afterok:" + ":".join(ids))
        jobs[stage] = _submit_units(ex, executor, run, units, int(params.get("parallelism", 2)), log)
        for u, j in zip(units, jobs[stage]):
            record[u.name] = {"job_id": j.job_id, "folder": str(j.paths.folder), "executor": executor}
        _save_record(run, record)
        log(f"submitted {len(units)} {stage} unit(s) ({executor}): {', '.join(u.name for u in units[:3])}"
            + (" ..." if len(units) > 3 else ""))
    if wait:
        _wait(run, [j for js in jobs.values() for j in js], log, timeout_s=float(params.get("wait_timeout_s", 0)))
    return [Submitted(u.name, record[u.name]["job_id"], record[u.name]["folder"]) for u in todo]


def _submit_units(ex: submitit.Executor, executor: str, run: Run, units: Sequence[Unit], parallelism: int,
                  log: Callable[[str], None]) -> list:
    """Slurm: one job array. Local: `parallelism` processes at a time (this machine's cores are shared)."""
    args = ([str(run.dir)] * len(units), [u.name for u in units])
    if executor == "slurm":
        return ex.map_array(UnitJob(), *args)
    out: list = []
    for i in range(0, len(units), max(1, parallelism)):
        out += ex.map_array(UnitJob(), *(a[i:i + parallelism] for a in args))
        if i + parallelism < len(units):
            _wait(run, out[i:], log)
    return out


def _wait(run: Run, jobs: Sequence, log: Callable[[str], None], every: float = 1.0, timeout_s: float = 0) -> None:
    """Until every job has ended: a progress line when it changes; failures raised with their logs;
    TimeoutError after `timeout_s` seconds (0: no limit) with jobs still queued or running."""
    last, start = "", time.time()
    while True:
        done = [j.done() for j in jobs]
        failed = [j for j, d in zip(jobs, done) if d and j.exception() is not None]
        line = (f"units: {sum(done)} of {len(jobs)} ended ({len(failed)} failed" +
                "".join(f"; {j.job_id}: {j.paths.stderr}" for j in failed) + ")")
        if line != last:
            log(line)
            last = line
        if all(done):
            break
        waiting = [j for j, d in zip(jobs, done) if not d]
        queue = _squeue() if failed else {}
        if failed and all(queue.get(j.job_id, "").startswith("PENDING") for j in waiting):
            break  # what is left waits on what failed (Slurm keeps it pending): report the failures now
        if timeout_s and time.time() - start > timeout_s:
            raise TimeoutError(f"{len(done) - sum(done)} unit(s) still not ended after {timeout_s:.0f} s; they go on: "
                               f"dfx status --run-dir {run.dir}")
        time.sleep(every)
    if failed:
        raise RuntimeError("units failed: " + "; ".join(f"job {j.job_id}: {_error(j.paths.stderr)} (log {j.paths.stderr})"
                                                        for j in failed))


def _error(log: Path) -> str:
    """The error a failed job's log ends with (the last unindented `Name: message` line)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [s for s in lines if s and not s[0].isspace() and ": " in s and not s.startswith(("srun", "submitit"))]
    return errors[-1] if errors else "see the log"


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
    lost (a Slurm job that ended without a result: cancelled or killed; submit again to resume it); submitted
    (a local job without a result yet); not submitted."""
    split = run.split(run.index())
    record = _load_record(run)
    queue = _squeue()
    rows = []
    for u in all_units(run, split):
        r = record.get(u.name)
        state, log = ("done", "") if is_done(run, u) else _job_state(r, queue) if r else ("not submitted", "")
        rows.append({"unit": u.name, "state": state, "job": r["job_id"] if r else "", "log": log})
    return rows


def _job_state(r: dict, queue: dict[str, str]) -> tuple[str, str]:
    paths = submitit.core.utils.JobPaths(Path(r["folder"]), job_id=r["job_id"], task_id=0)
    if paths.result_pickle.is_file():
        with open(paths.result_pickle, "rb") as fh:
            outcome = pickle.load(fh)
        return ("failed" if outcome[0] == "error" else "ended"), str(paths.stderr)
    job = r["job_id"]
    if job in queue or job.split("_")[0] in queue:
        return queue.get(job, queue.get(job.split("_")[0], "")).lower() or "queued", str(paths.stderr)
    return ("lost" if r.get("executor") == "slurm" else "submitted"), str(paths.stderr)


def _squeue() -> dict[str, str]:
    """Job id -> state of this user's Slurm jobs ({} without Slurm)."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())
