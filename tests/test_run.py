"""The run folder's lock (#32 item 1: two `dfx run` on one folder both exited 0 and changed each other's models
and tables): one writer at a time, submission and unit jobs sharing, a dead holder's lock free at once."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfxlib.run import LOCK, RunBusy, lock
from dfxlib.workflow.cli import main

HOLD = ("import sys, time; from pathlib import Path; from dfxlib.run import lock;\n"
        "with lock(Path(sys.argv[1]), sys.argv[2], shared=sys.argv[3] == 'shared'):\n"
        "    print('held', flush=True); time.sleep(120)")


def _holder(folder: Path, what: str, shared: bool = False) -> subprocess.Popen:
    """Another process holding the lock of `folder` until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), what, "shared" if shared else "exclusive"],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_one_writer_and_cooperating_units(tmp_path):
    other = _holder(tmp_path, "dfx run")
    try:
        for shared in (False, True):  # neither a second run nor a submission while a run writes
            with pytest.raises(RunBusy, match=r"in use by dfx run \(pid \d+ on "):
                with lock(tmp_path, "dfx submit", shared=shared):
                    pass
    finally:
        other.kill()
        other.wait()
    units = _holder(tmp_path, "unit base/x", shared=True)
    try:
        with lock(tmp_path, "unit base/y", shared=True):  # units of one submission run side by side
            pass
        with pytest.raises(RunBusy, match="in use by"):
            with lock(tmp_path, "dfx run"):
                pass
    finally:
        units.send_signal(signal.SIGKILL)  # killed: the system frees its lock, nothing is left stale
        units.wait()
    with lock(tmp_path, "dfx run"):
        assert "dfx run (pid" in (tmp_path / LOCK).read_text()


def test_a_second_dfx_run_is_refused_before_it_writes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".dfx-run").touch()
    (run_dir / "config.json").write_text(json.dumps({"profile": "smoke", "seed": 7, "run_dir": str(run_dir)}))
    other = _holder(run_dir, "dfx run")
    before = sorted(p.name for p in run_dir.iterdir())
    try:
        t0 = time.time()
        assert main(["run", "--profile", "smoke", "-p", f"run_dir={run_dir}", "--only", "00"]) == 2
        assert time.time() - t0 < 30  # refused at once, not after waiting
    finally:
        other.kill()
        other.wait()
    err = capsys.readouterr().err
    assert f"dfx run: {run_dir} is in use by dfx run (pid {other.pid}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before  # its settings and folders untouched
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 7


def test_a_submission_is_refused_before_it_writes_settings_into_a_running_folder(tmp_path, capsys):
    """`dfx submit --profile P -p ...` wrote the run's config.json before its lock refused it, changing the
    settings of the `dfx run` that held the folder."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".dfx-run").touch()
    (run_dir / "config.json").write_text(json.dumps({"profile": "smoke", "seed": 7, "run_dir": str(run_dir)}))
    other = _holder(run_dir, "dfx run")
    try:
        assert main(["submit", "--executor", "local", "--profile", "smoke", "-p", f"run_dir={run_dir}",
                     "-p", "seed=3", "--no-wait"]) == 2
    finally:
        other.kill()
        other.wait()
    assert f"is in use by dfx run (pid {other.pid}" in capsys.readouterr().err
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 7


def test_a_notebook_number_that_does_not_exist_is_said_before_the_disk_plan(fixture_root, tmp_path, capsys,
                                                                             monkeypatch):
    """With a data_root, `dfx run --only 99` indexed the whole dataset for its disk plan before saying that there
    is no notebook 99."""
    from dfxlib.workflow import plan

    monkeypatch.setattr(plan, "plan_for", lambda cfg: pytest.fail("planned before checking the notebook numbers"))
    assert main(["run", "--profile", "smoke", "-p", f"data_root={fixture_root}", "-p", f"run_dir={tmp_path / 'r'}",
                 "--only", "99"]) == 2
    assert "no notebook numbered '99'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_dataset_without_every_class_is_named_before_the_split(fixture_root, tmp_path):
    """#32 item 10: a data_root holding only `real/` passed notebook 01 and failed in 02 with numpy's "a cannot be
    empty unless no samples are taken", naming no class."""
    import shutil

    import dfxlib
    from dfxlib.data.index import DataError

    data = tmp_path / "data"
    shutil.copytree(fixture_root / "real", data / "real")
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "run"), data_root=str(data), overrides={"progress": False})
    with pytest.raises(DataError, match=r"data: no usable DM or GAN images; .* needs all three classes"):
        run.split(run.index())
    assert not (run.dir / "split.csv").exists()


def test_your_own_data_in_any_layout_gets_a_plan_or_one_line(fixture_root, tmp_path, capsys):
    """#32 item 3: a manifest, a real/fake folder per generator and a folder of one image stopped at the pre-run
    disk plan with KeyError, InvalidIndexError and 'cannot convert float NaN'. Now the manifest is planned, and
    data that cannot train the three classes is refused in one line that says why."""
    import csv
    import shutil

    man, binary, one = tmp_path / "man", tmp_path / "bin", tmp_path / "one"
    (man / "imgs").mkdir(parents=True)
    rows = []
    for p in sorted(fixture_root.rglob("*.png")):
        family, generator = p.relative_to(fixture_root).parts[:2]
        shutil.copy2(p, man / "imgs" / p.name)
        rows.append((f"imgs/{p.name}", family.replace("_generated", ""), generator))
        folder = binary / generator / ("0_real" if family == "real" else "1_fake")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, folder / p.name)
    with open(man / "dataset.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "family", "generator"), *rows])
    (one / "real" / "r").mkdir(parents=True)
    shutil.copy2(man / rows[0][0], one / "real" / "r" / "a.png")
    with open(man / "shared.csv", "w", newline="") as fh:  # one generator name for every family: InvalidIndexError
        csv.writer(fh).writerows([("path", "family", "generator"), *((p, f, "") for p, f, _ in rows)])
    for manifest in ("dataset.csv", "shared.csv"):
        assert main(["plan", "--profile", "paper", "-p", f"data_root={man / manifest}",
                     "-p", f"run_dir={tmp_path / manifest}"]) == 0
        assert "disk" in capsys.readouterr().out
    for data, why in ((binary, "a real/fake layout names no fake DM or GAN"), (one, "no usable DM or GAN images")):
        assert main(["run", "--profile", "paper", "-p", f"data_root={data}", "-p", f"run_dir={tmp_path / 'r2'}"]) == 2
        err = capsys.readouterr().err  # the indexing bar, then one line
        said = [line for line in err.splitlines() if line.startswith("dfx ")]
        assert len(said) == 1 and why in said[0] and "Traceback" not in err, err
