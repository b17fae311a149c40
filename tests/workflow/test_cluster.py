"""The run's units of work outside the notebooks: through submitit on this machine and on a one-node Slurm
cluster (started by the `slurm_cluster` fixture), with the same models as the notebooks train inline."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import submitit
import torch
from fixture import empty_slurm_queue
from safetensors.torch import load_file

import dfxlib
from dfxlib.data import minidfx
from dfxlib.run import Checkpoints
from dfxlib.workflow import submit as sb
from dfxlib.workflow import units
from dfxlib.workflow.cli import main
from dfxlib.workflow.notebooks import run_notebooks

def _weights(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in (run_dir / "checkpoints").rglob("best.safetensors")
            if "probe" not in p.parts}  # the frozen probe backbone is written by the notebooks, not a unit


def test_units_list_every_model_and_parse_back(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False})
    split, _ = units.prepare(run)
    names = [u.name for u in units.all_units(run, split)]
    assert names[:3] == ["base/efficientnet_lite0/unbalanced/dm", "base/efficientnet_lite0/unbalanced/gan",
                         "base/efficientnet_lite0/unbalanced/real"]
    assert [n for n in names if n.startswith("head/")] == ["head/efficientnet_lite0/unbalanced",
                                                          "head/efficientnet_lite0/siamese"]
    stages = [n.split("/")[0] for n in names]
    order = list(units.STAGES)
    assert stages == sorted(stages, key=order.index) and set(stages) == set(order)  # stage by stage, every stage
    assert all(order.index(n) < order.index(s) for s, needs in units.STAGES.items() for n in needs)  # inputs first
    assert units.STAGES["head"] == ("features",) and units.STAGES["features"] == ("base",)
    assert all(units.Unit.parse(n).name == n for n in names)
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        units.Unit.parse("train/x")


def test_local_executor_trains_what_inline_code_trains(tmp_path, fixture_root):
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": []}  # the detectors' units run through Slurm in the smoke-run test
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "sub"), data_root=str(fixture_root), overrides=over)
    logs: list[str] = []
    sb.submit(run, "local", params={"parallelism": 2, "units_per_job": 2}, log=logs.append,
              only=["base", "features", "head"])
    rows = {r["unit"]: r["state"] for r in sb.status(run)}
    assert rows.pop("plain/test_resnet") == "not submitted"  # left out by `only`
    assert set(rows.values()) == {"done"} and len(rows) == 3 + 1 + 1  # base x3, features, head
    assert logs[-1] == "units: 5 done, 0 running, 0 pending, 0 failed; jobs: 4 of 4 ended (0 failed)"  # base: 2/job
    inline = dfxlib.start("smoke", run_dir=str(tmp_path / "inline"), data_root=str(fixture_root), overrides=over)
    split, _ = units.prepare(inline)
    for u in units.all_units(inline, split):  # the same functions in this process, one after another
        if u.stage != "plain":
            units.execute(inline.dir, u.name)
    assert _weights(run.dir) == _weights(inline.dir) and len(_weights(run.dir)) == 4
    again: list[str] = []
    sb.submit(run, "local", log=again.append, only=["base", "features", "head"])
    assert not any("submitted" in line for line in again)  # finished units are not submitted again


def _queue_state(job_id: str) -> str:
    out = subprocess.run(["squeue", "-h", "-r", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
    return out.strip()


@pytest.mark.notebook
def test_the_smoke_run_through_slurm_has_the_inline_tables(slurm_cluster, smoke_run, tmp_path, capsys):
    """Every unit of the smoke profile as Slurm jobs (a job array per stage, stages chained by dependencies), one
    base model's job cancelled mid-run (`scancel`) and the run submitted again: the cancelled unit and what waited
    on it are submitted anew, what still runs is not submitted twice; every model is byte-identical to the
    inline run's; the notebooks then load them without training again and write the inline run's tables."""
    run_dir = tmp_path / "slurm"
    over = {"progress": False, "wild_root": str(tmp_path / "no-wild")}  # the wild part is not about units
    run = dfxlib.start("smoke", run_dir=str(run_dir), overrides=over)
    assert minidfx.is_complete(run.data_root())  # the inline run's MiniDFX, shared (its build is not tested here)
    jobs = {j.unit: j for j in sb.submit(run, "slurm", wait=False, params={"parallelism": 2, "timeout_min": 30,
                                                                         "units_per_job": 3})}
    victim = jobs["base/efficientnet_lite0/siamese/real"]  # the second job of base models: the first goes on
    firsts = ("base/efficientnet_lite0/unbalanced/dm", "features/efficientnet_lite0", "head/efficientnet_lite0/siamese",
              "plain/efficientnet_lite0", "detector/ssp", "dif/all/gan_tconv")
    order = [jobs[u].job_id.split("_")[0] for u in firsts]
    assert order == sorted(order, key=int)  # the chain to the complete models queued first: Slurm starts it first
    deadline = time.time() + 300
    while time.time() < deadline and _queue_state(victim.job_id) != "RUNNING":
        time.sleep(0.2)
    time.sleep(1)  # into its start-up
    assert _queue_state(victim.job_id) == "RUNNING", f"job {victim.job_id} was not running; see {victim.folder}"
    # killed at once: a plain scancel sends SIGTERM, which submitit ignores, and kills only after the cluster's
    # KillWait (5 s at least), time enough for a fast machine to finish the job's three small units
    subprocess.run(["scancel", "--signal=KILL", victim.job_id], check=True)
    while _queue_state(victim.job_id):
        time.sleep(0.2)
    assert {r["unit"]: r["state"] for r in sb.status(run)}[victim.unit] == "lost"

    code = main(["submit", "--executor", "slurm", "--run-dir", str(run_dir), "--parallelism", "2",
                 "--timeout-min", "30", "--units-per-job", "3", "--wait-timeout", "900"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "cancelled 2 pending job(s) that waited on units submitted again" in err  # features, heads
    assert "unit(s) already queued or running: not submitted again" in err  # detectors, DIF
    assert re.search(r"submitted [123] base unit\(s\)", err) and "submitted 1 features unit(s)" in err
    progress = [line for line in err.splitlines() if line.startswith("dfx submit: units: ")]
    assert re.fullmatch(r"dfx submit: units: \d+ done, 0 running, 0 pending, 0 failed; jobs: (\d+) of \1 ended "
                        r"\(0 failed\)", progress[-1]) and len(progress) > 2, progress
    assert main(["status", "--run-dir", str(run_dir)]) == 0
    every = units.all_units(run, run.split(run.index()))  # the plan's units: a new generator adds DIF units
    assert capsys.readouterr().out.strip().endswith(f": {len(every)} units: {len(every)} done")
    ours = _weights(run_dir)
    inline = _weights(smoke_run)
    weighted = [u for u in every if u.stage != "features"]  # every unit but the features writes weights
    assert sorted(ours) == sorted(inline) and len(ours) == len(weighted) > 20
    assert [k for k in ours if ours[k] != inline[k]] == []

    # the notebooks that would train each kind of unit if it were not done: 03 (base models, heads, plain
    # classifier) and 06 (detectors, DIF). They load what the jobs wrote, rewrite none of it, and write the inline
    # run's tables. (02, 04, 05 and 07 read the same models again; the inline smoke run executes them.)
    written = {p: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").rglob("*") if p.is_file()}
    run_notebooks("smoke", {"run_dir": str(run_dir), **{k: str(v) for k, v in over.items()}}, only=("03", "06"),
                  log=lambda *_: None)
    assert [p for p, t in written.items() if p.stat().st_mtime_ns != t] == []
    tables = {p.name: p.read_bytes() for p in (run_dir / "tables").glob("*.csv")}
    assert not [name for name in tables if "wild" in name]  # the wild part is off in this run
    assert {"complete_models.csv", "verdicts_complete.csv", "detectors.csv", "dif_lineage.csv"} <= set(tables)
    assert [name for name in tables if tables[name] != (smoke_run / "tables" / name).read_bytes()] == []


def test_a_unit_as_two_slurm_tasks_trains_as_torchrun_does(slurm_cluster, tmp_path, fixture_root):
    """`dfx submit --tasks 2`: one base model trained by two Slurm tasks together (submitit's torch environment,
    gloo on CPU) ends with the weights `torchrun --nproc_per_node=2 -m dfxlib.workflow.units` gives the same unit."""
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": [], "base_epochs": 2, "patience": 0}
    name = "base/test_resnet/unbalanced/dm"
    runs = {k: dfxlib.start("smoke", run_dir=str(tmp_path / k), data_root=str(fixture_root), overrides=over)
            for k in ("slurm", "torchrun")}
    (job,) = sb.submit(runs["slurm"], "slurm", params={"tasks": 2, "timeout_min": 30}, only=[name],
                       log=lambda *_: None)
    assert {r["unit"]: r["state"] for r in sb.status(runs["slurm"])}[name] == "done"
    assert len(list(Path(job.folder).glob(f"{job.job_id}_*_log.err"))) == 2, f"not two tasks; see {job.folder}"
    units.prepare(runs["torchrun"])
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "dfxlib.workflow.units", str(runs["torchrun"].dir), name], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    best = {k: load_file(str(Checkpoints.of(r.dir).base("test_resnet", "unbalanced", "dm") / "best.safetensors"))
            for k, r in runs.items()}
    assert set(best["slurm"]) == set(best["torchrun"]) and not any(k.startswith("module.") for k in best["slurm"])
    for k, v in best["torchrun"].items():  # the same run up to float rounding: with channels-last convolutions one
        torch.testing.assert_close(best["slurm"][k], v, rtol=1e-4, atol=2e-5)  # weight of 18,432 lay 4.8e-6 apart
    logs = [json.loads(line) for line in (runs["slurm"].checkpoints.base("test_resnet", "unbalanced", "dm")
                                          / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logs] == [1, 2]


def test_a_preempted_job_is_requeued_and_resumes(slurm_cluster, tmp_path, fixture_root):
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": [], "base_epochs": 12, "patience": 0}
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "sub"), data_root=str(fixture_root), overrides=over)
    name = "base/test_resnet/unbalanced/dm"
    (job,) = sb.submit(run, "slurm", wait=False, params={"timeout_min": 30}, only=[name])
    log = run.checkpoints.base("test_resnet", "unbalanced", "dm") / "log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    assert log.is_file(), f"the job never trained; see {job.folder}"
    for _ in range(30):  # what Slurm sends before a time limit; refused while the job is between states
        if subprocess.run(["scancel", "--signal=USR2", job.job_id], capture_output=True).returncode == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"scancel --signal=USR2 {job.job_id} kept failing")
    deadline = time.time() + 600
    state = lambda: {r["unit"]: r["state"] for r in sb.status(run)}[name]  # noqa: E731
    while time.time() < deadline and state() != "done":
        time.sleep(2)
    assert state() == "done"
    err = Path(job.folder, f"{job.job_id}_0_log.err").read_text()
    assert "Requeued" in err or "requeue" in err.lower(), err[-2000:]
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert epochs == list(range(1, 13))  # every epoch once: resumed, not restarted
    inline = dfxlib.start("smoke", run_dir=str(tmp_path / "inline"), data_root=str(fixture_root), overrides=over)
    units.prepare(inline)
    units.execute(inline.dir, name)
    key = f"checkpoints/{name}/best.safetensors"
    assert _weights(run.dir)[key] == _weights(inline.dir)[key]


def _job_fields(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id.split("_")[0]], capture_output=True, text=True,
                         check=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def test_job_settings_reach_slurm_and_a_resubmission_keeps_them(slurm_cluster, tmp_path, fixture_root, capsys):
    """Partition, account, time limit, array throttle and any sbatch option are what Slurm queues; `dfx submit
    --run-dir` without them submits with the run's last ones; a request Slurm refuses says so, by stage."""
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": []}
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root), overrides=over)
    again = ["submit", "--run-dir", str(run.dir), "--no-wait", "--only", "base"]
    first = again + ["--partition", "debug", "--account", "dfxlab", "--timeout-min", "7", "--parallelism", "1",
                     "--slurm-option", "comment=dfx-settings", "--slurm-option", "begin=now+1hour"]  # held: pending
    queued = []
    for args in (first, again):
        assert main(args) == 0, capsys.readouterr().err
        (job,) = {r["job"].split("_")[0] for r in sb.status(run) if r["unit"].startswith("base/")}  # one array
        fields = _job_fields(job)
        assert (fields["Partition"], fields["Account"], fields["TimeLimit"], fields["Comment"],
                fields["ArrayTaskThrottle"], fields["JobState"]) == ("debug", "dfxlab", "00:07:00", "dfx-settings",
                                                                      "1", "PENDING"), fields
        assert fields["EligibleTime"] > fields["SubmitTime"], fields  # begin=now+1hour
        queued.append(job)
        empty_slurm_queue()
        assert not _queue_state(job), f"job {job} is still queued"
    assert queued[0] != queued[1]
    err = capsys.readouterr().err
    assert ("as this run's last submission: --executor slurm --partition debug --account dfxlab --cpus 1 "
            "--timeout-min 7 --parallelism 1 --units-per-job 1 --slurm-option comment=dfx-settings "
            "--slurm-option begin=now+1hour" in err), err
    assert main(again + ["--gpus", "1"]) == 1  # this node has no GPU: sbatch refuses
    err = capsys.readouterr().err
    assert "dfx submit: Slurm refused the base job(s): sbatch: error: Invalid generic resource" in err, err
    assert sb.last_params(run)["gpus"] == 0  # a refused submission's settings are not the ones kept
    (run.dir / "jobs" / "settings.json").write_text('{"gpus": ')  # cut short
    assert main(again) == 2
    assert f"{run.dir / 'jobs' / 'settings.json'}: the last submission's job settings cannot be read" in \
        capsys.readouterr().err


def test_a_failed_unit_is_reported_with_its_log(tmp_path, fixture_root):
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "imagenet", "base_kinds": ["unbalanced"],
            "detectors": []}  # timm's test models have no ImageNet weights: the unit fails
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root), overrides=over)
    name = "base/test_resnet/unbalanced/dm"
    logs: list[str] = []
    with pytest.raises(RuntimeError, match=r"units failed: job \d+: .*BackboneError: backbone 'test_resnet' has no "
                                           r"ImageNet weights.*\(log .*_log.err\)"):
        sb.submit(run, "local", log=logs.append, only=[name])
    progress = [line for line in logs if line.startswith("units: ")]
    assert progress[-1] == "units: 0 done, 0 running, 0 pending, 1 failed; jobs: 1 of 1 ended (1 failed)", logs
    assert logs[-1].startswith("failed: job ")  # then the failure, with its log
    rows = {r["unit"]: r for r in sb.status(run)}
    assert rows[name]["state"] == "failed" and Path(rows[name]["log"]).is_file()
    assert rows["head/test_resnet/unbalanced"]["state"] == "not submitted"


def test_submit_again_names_a_run_folder_and_keeps_its_settings(tmp_path, capsys):
    assert main(["submit", "--run-dir", str(tmp_path)]) == 2
    assert f"--run-dir {tmp_path} is not a run folder (no config.json)" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    assert main(["submit", "--run-dir", str(tmp_path), "-p", "seed=3"]) == 2
    assert "takes no -p (the run keeps its settings)" in capsys.readouterr().err


def test_a_job_shape_without_a_gpu_per_process_is_refused_before_queueing(tmp_path, capsys):
    assert [sb.processes(p) for p in ({}, {"gpus": 4}, {"tasks": 2}, {"gpus": 2, "tasks": 2})] == [1, 4, 2, 2]
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), overrides={"progress": False})
    assert main(["submit", "--run-dir", str(run.dir), "--gpus", "2", "--tasks", "4"]) == 2
    assert "--tasks 4 with --gpus 2: each process needs a GPU of its own" in capsys.readouterr().err
    assert not (run.dir / "jobs").exists()  # nothing was submitted


def test_a_queue_that_does_not_answer_ends_no_job(tmp_path, monkeypatch):
    """squeue failing once (a busy controller) must not make running jobs look ended, and failed."""
    job = submitit.SlurmJob(folder=tmp_path, job_id="999_0")
    answers = iter([None, {"999_0": ("RUNNING", "None")}, {}])
    monkeypatch.setattr(sb, "_squeue", lambda: next(answers))
    logs: list[str] = []
    with pytest.raises(RuntimeError, match=r"job 999_0: ended without a result \(cancelled, killed"):
        sb._wait(SimpleNamespace(dir=tmp_path), [job], logs.append, every=0)
    assert logs[0] == "jobs: 0 of 1 ended (0 failed)"  # after the RUNNING answer, not ended by the silent one
    assert next(answers, "used up") == "used up"  # all three answers were read
