"""The run's units of work outside the notebooks: through submitit on this machine and on a one-node Slurm
cluster (started by the `slurm_cluster` fixture), with the same models as the notebooks train inline."""

import json
import subprocess
import time
from pathlib import Path

import pytest

import dfxlib
from dfxlib import submit as sb
from dfxlib import units
from dfxlib.cli import main


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
    assert names[-2:] == ["head/efficientnet_lite0/unbalanced", "head/efficientnet_lite0/siamese"]
    stages = [n.split("/")[0] for n in names]
    assert stages == sorted(stages, key=units.STAGES.index)  # inputs before what needs them
    assert all(units.Unit.parse(n).name == n for n in names)
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        units.Unit.parse("train/x")


def test_local_executor_trains_what_inline_code_trains(tmp_path, fixture_root):
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": ["simplecnn"]}
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "sub"), data_root=str(fixture_root), overrides=over)
    logs: list[str] = []
    sb.submit(run, "local", params={"parallelism": 2}, log=logs.append, only=["base", "detector", "features", "head"])
    rows = {r["unit"]: r["state"] for r in sb.status(run)}
    assert rows.pop("plain/test_resnet") == "not submitted"  # left out by `only`
    assert set(rows.values()) == {"done"} and len(rows) == 3 + 1 + 1 + 1  # base x3, detector, features, head
    assert logs[-1] == "units: 6 of 6 ended (0 failed)"
    inline = dfxlib.start("smoke", run_dir=str(tmp_path / "inline"), data_root=str(fixture_root), overrides=over)
    split, _ = units.prepare(inline)
    for u in units.all_units(inline, split):  # the same functions in this process, one after another
        if u.stage != "plain":
            units.execute(inline.dir, u.name)
    assert _weights(run.dir) == _weights(inline.dir) and len(_weights(run.dir)) == 5
    again: list[str] = []
    sb.submit(run, "local", log=again.append, only=["base", "detector", "features", "head"])
    assert not any("submitted" in line for line in again)  # finished units are not submitted again


@pytest.mark.notebook
def test_smoke_units_through_slurm_equal_the_notebooks(slurm_cluster, smoke_run, tmp_path, capsys):
    """DeepFeatureX's models of the smoke profile (base models, features, heads) trained as Slurm jobs (a job
    array per stage, stages chained by dependencies) are byte-identical to those the notebooks trained inline."""
    run_dir = tmp_path / "slurm"
    code = main(["submit", "--executor", "slurm", "--profile", "smoke", "-p", f"run_dir={run_dir}", "-p",
                 "progress=false", "--parallelism", "2", "--timeout-min", "30", "--only", "base,features,head", "--wait-timeout", "900"])
    assert code == 0, capsys.readouterr().err[-2000:]
    ours = _weights(run_dir)
    inline = {k: v for k, v in _weights(smoke_run).items() if k.startswith(("checkpoints/base", "checkpoints/heads"))}
    assert sorted(ours) == sorted(inline) and len(ours) == 6 + 2
    assert [k for k in ours if ours[k] != inline[k]] == []
    assert main(["status", "--run-dir", str(run_dir)]) == 0
    assert "units: " in capsys.readouterr().out


def test_a_preempted_job_is_requeued_and_resumes(slurm_cluster, tmp_path, fixture_root):
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "none", "base_kinds": ["unbalanced"],
            "detectors": [], "base_epochs": 12, "patience": 0}
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "sub"), data_root=str(fixture_root), overrides=over)
    name = "base/test_resnet/unbalanced/dm"
    (job,) = sb.submit(run, "slurm", wait=False, params={"timeout_min": 30}, only=[name])
    log = run.dir / "checkpoints" / "base" / "test_resnet" / "unbalanced" / "dm" / "log.jsonl"
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


def test_a_failed_unit_is_reported_with_its_log(tmp_path, fixture_root):
    over = {"progress": False, "backbones": ["test_resnet"], "pretrained": "imagenet", "base_kinds": ["unbalanced"],
            "detectors": []}  # timm's test models have no ImageNet weights: the unit fails
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root), overrides=over)
    name = "base/test_resnet/unbalanced/dm"
    with pytest.raises(RuntimeError, match=r"units failed: job \d+: .*BackboneError: backbone 'test_resnet' has no "
                                           r"ImageNet weights.*\(log .*_log.err\)"):
        sb.submit(run, "local", log=lambda _: None, only=[name])
    rows = {r["unit"]: r for r in sb.status(run)}
    assert rows[name]["state"] == "failed" and Path(rows[name]["log"]).is_file()
    assert rows["head/test_resnet/unbalanced"]["state"] == "not submitted"
