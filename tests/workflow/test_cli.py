import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fixture import write_notebook

from dfxlib.workflow.cli import main
from dfxlib.workflow.notebooks import NotebookFailure, run_notebooks, select


def test_audit_command(fixture_root, tmp_path, capsys):
    assert main(["audit", str(fixture_root), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "| dm | dm_a | 10 | 32x32 |" in out
    assert (tmp_path / "a" / "dataset.csv").is_file() and (tmp_path / "a" / "index.csv").is_file()


def test_a_dry_run_checks_settings_data_weights_and_disk_and_writes_nothing(fixture_root, tmp_path, capsys):
    common = ["--profile", "smoke", "-p", f"data_root={fixture_root}", "-p", f"run_dir={tmp_path / 'r'}",
              "-p", "seed=3", "--dry-run"]
    assert main(["run", *common, "--only", "02,03"]) == 0
    out = capsys.readouterr().out
    assert "would run notebooks 02_base_models, 03_complete_model" in out and "\n  seed = 3\n" in out
    assert "base                6 units" in out and ": fits" in out  # the plan, on the indexed dataset
    assert main(["submit", "--executor", "slurm", "--partition", "gpu", *common]) == 0
    assert "every unit of work as slurm jobs (slurm_partition=gpu" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()  # nothing trained, submitted or written
    assert main(["run", *common, "-p", f"pretrained={tmp_path / 'weights'}"]) == 2
    assert "not 'none', 'imagenet', a weights file or a folder of them" in capsys.readouterr().err
    (tmp_path / "weights").mkdir()
    assert main(["run", *common, "-p", f"pretrained={tmp_path / 'weights'}"]) == 2
    assert "no weights for backbone 'efficientnet_lite0'" in capsys.readouterr().err
    assert main(["run", *common, "-p", "holdout_generators=nope"]) == 2  # the dataset is read, as the run would
    assert "'holdout_generators': nope not among the generators" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_audit_missing_root(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "nope")]) == 2
    assert "nope: data root does not exist" in capsys.readouterr().err


def test_audit_of_a_folder_without_usable_images_fails(tmp_path, capsys):
    (tmp_path / "empty" / "real" / "src").mkdir(parents=True)
    (tmp_path / "empty" / "real" / "src" / "notes.png").write_text("not an image")
    assert main(["audit", str(tmp_path / "empty"), "--out", str(tmp_path / "a")]) == 1
    assert "holds no usable image" in capsys.readouterr().err


def test_run_into_an_unsafe_folder_is_one_line(tmp_path, capsys):
    assert main(["run", "--profile", "smoke", "-p", "run_dir=/"]) == 2
    err = capsys.readouterr().err
    assert "refusing to write into the filesystem root" in err and "Traceback" not in err
    assert not (tmp_path / "config.json").exists()


def test_run_rejects_unknown_setting_before_running(tmp_path, capsys):
    assert main(["run", "--profile", "smoke", "-p", f"run_dir={tmp_path}", "-p", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "notebooks").exists() or not any((tmp_path / "notebooks").iterdir())


def test_run_rejects_unknown_notebook_number(tmp_path, capsys):
    assert main(["run", "--profile", "smoke", "-p", f"run_dir={tmp_path / 'r'}", "--only", "42"]) == 2
    assert "42" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_select_only_and_from(tmp_path):
    for name in ("01_a.ipynb", "02_b.ipynb", "03_c.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in select(folder=tmp_path)] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert [p.name for p in select(["3", "01"], folder=tmp_path)] == ["01_a.ipynb", "03_c.ipynb"]
    assert [p.name for p in select(start="02", folder=tmp_path)] == ["02_b.ipynb", "03_c.ipynb"]



@pytest.mark.notebook
def test_failure_names_notebook_cell_and_error_and_stops(tmp_path):
    books = tmp_path / "nbs"
    books.mkdir()
    write_notebook(books / "01_ok.ipynb", "import dfxlib\nrun = dfxlib.start(profile, run_dir, data_root, overrides)\n"
              "run.save_table(__import__('pandas').DataFrame({'a': [1]}), 'dataset')")
    write_notebook(books / "02_bad.ipynb", "x = 1", "raise ValueError('broken input file x.png')")
    write_notebook(books / "03_never.ipynb", "open('ran-03', 'w')")
    run_dir = tmp_path / "run"
    with pytest.raises(NotebookFailure) as exc:
        run_notebooks("smoke", {"run_dir": str(run_dir)}, folder=books, log=lambda *_: None)
    msg = str(exc.value)
    assert "02_bad.ipynb" in msg and "ValueError: broken input file x.png" in msg and "In [4] (raise ValueError" in msg
    assert not (books / "ran-03").exists()
    assert "## dataset" in (run_dir / "REPORT.md").read_text()  # report written even after a failure


def test_report_command(tmp_path, capsys):
    from dfxlib.run import MARKER

    (tmp_path / MARKER).touch()  # a run folder (dfx writes REPORT.md into nothing else)
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "wild.md").write_text("| a |\n|---|\n| 1 |\n")
    (tmp_path / "tables" / "dataset.md").write_text("| b |\n|---|\n| 2 |\n")
    assert main(["report", "--run-dir", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert text.index("## dataset") < text.index("## wild")
    assert main(["report", "--run-dir", str(tmp_path / "none")]) == 1


@pytest.mark.notebook
def test_run_over_seeds_writes_one_run_per_seed_and_a_claim_summary(tmp_path, capsys):
    base = tmp_path / "seeds"
    assert main(["run", "--profile", "smoke", "--seeds", "0,1", "--only", "00,01", "-p", f"run_dir={base}",
                 "-p", "progress=false"]) == 0
    for s in (0, 1):
        assert json.loads((base / f"seed-{s}" / "config.json").read_text())["seed"] == s
        assert (base / f"seed-{s}" / "tables" / "verdicts_audit.csv").is_file()
    summary = pd.read_csv(base / "tables" / "claims_over_seeds.csv", keep_default_na=False)
    audit = pd.read_csv(base / "seed-0" / "tables" / "verdicts_audit.csv")
    assert len(summary) == len(audit) and (summary["seeds"] == 2).all()
    assert (summary[["holds", "does not hold", "too close to call", "not testable"]].sum(axis=1) == 2).all()
    assert "claims over seeds 0, 1" in (base / "REPORT.md").read_text()
    indexes = [pd.read_csv(base / f"seed-{s}" / "index.csv")["sha256"] for s in (0, 1)]
    assert indexes[0].equals(indexes[1])  # one world for both seeds (the shared one)
    capsys.readouterr()
    assert main(["run", "--profile", "smoke", "--seeds", "2", "--only", "01", "-p", f"run_dir={base}",
                 "-p", "progress=false"]) == 0  # one more seed, run into the same folder: summarized with the others
    assert "the summary counts seeds 0, 1, 2: 0, 1 already in" in capsys.readouterr().out
    summary = pd.read_csv(base / "tables" / "claims_over_seeds.csv", keep_default_na=False)
    assert (summary["seeds"] == 3).all() and "claims over seeds 0, 1, 2" in (base / "REPORT.md").read_text()
    assert main(["run", "--profile", "smoke", "--seeds", "0,x", "-p", f"run_dir={tmp_path / 'x'}"]) == 2
    assert "--seeds: 'x' is not a seed" in capsys.readouterr().err
    assert main(["run", "--profile", "smoke", "--seeds", "1,1", "-p", f"run_dir={tmp_path / 'y'}"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before anything is written


def test_a_seeds_summary_counts_the_seeds_run_with_the_same_settings(tmp_path):
    """`seeds_alike`: the seeds of a folder whose saved settings are this run's but for where and how they ran
    (seed, run folder, device, layout) count in its summary; one with another setting, unreadable settings or no
    verdict tables does not, and the line that says so names the setting."""
    from dfxlib.config import resolve
    from dfxlib.workflow.notebooks import seeds_alike

    def seed(s: int, **settings) -> None:
        folder = tmp_path / f"seed-{s}"
        (folder / "tables").mkdir(parents=True)
        (folder / "tables" / "verdicts_audit.csv").write_text("claim\n")
        saved = json.loads(resolve("smoke", {"seed": str(s), "run_dir": str(folder), **settings}).to_json())
        (folder / "config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "memory_format"}))

    seed(0)
    seed(1, device="cuda", memory_format="contiguous")  # another machine: the same experiment
    seed(2, base_epochs="3")
    seed(3)
    (tmp_path / "seed-3" / "config.json").write_text("{")
    (tmp_path / "seed-4" / "tables").mkdir(parents=True)  # not run yet: no verdicts
    alike, unlike = seeds_alike(tmp_path, "smoke", {"run_dir": str(tmp_path)})
    assert alike == [0, 1]
    assert len(unlike) == 2 and "seed-2: left out of the summary, other settings (base_epochs=3, not 1)" in unlike[0]
    assert "seed-3: left out of the summary, its settings are unreadable" in unlike[1]
    assert seeds_alike(tmp_path, "smoke", {"base_epochs": "3"})[0] == [2]


@pytest.mark.parametrize("argv", [
    ["run", "--stall-timeout", "-5"], ["run", "--stall-timeout", "nan"], ["run", "--stall-timeout", "inf"],
    ["predict", "x.png", "--batch-size", "0"], ["predict", "x.png", "--batch-size", "-3"],
    ["predict", "x.png", "--workers", "-1"], ["submit", "--parallelism", "0"], ["submit", "--timeout-min", "0"],
    ["submit", "--units-per-job", "-2"], ["submit", "--cpus", "0"], ["submit", "--gpus", "-1"],
    ["submit", "--wait-timeout", "-1"], ["plan", "--batch-size", "-8"], ["lab", "--port", "0"],
    ["predict", "x.png", "--batch-size", "2.5"]])
def test_numeric_options_are_checked_where_they_are_parsed(argv, capsys):
    """A number an option cannot take (#32: `--batch-size 0` put every image in one batch, `--stall-timeout -5`
    stopped notebook 01 at once) is refused before anything runs, in one line naming the option."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("dfx ") and f"argument {argv[-2]}" in err[-1], err


def test_audit_and_report_write_only_into_folders_dfx_owns(fixture_root, tmp_path, capsys):
    """#32 item 2: `dfx audit D/dataset.csv --out D` replaced the user's manifest, and `--out /`, `--out <project>`
    and `dfx report --run-dir /` wrote into / and the source tree. One guard (run.claim_run_dir) now refuses
    them all, nothing written; a new folder, and the same one again, are written as before."""
    from dfxlib.config import project_root

    data = tmp_path / "data"
    shutil.copytree(fixture_root, data)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    for out in (data, Path("/"), project_root()):
        assert main(["audit", str(data), "--out", str(out), "--check", "header"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dfx audit: --out=") and ("refusing" in err or "dfx did not write it" in err), err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before and not Path("/dataset.csv").exists()
    mine = tmp_path / "audit"
    for _ in range(2):  # a new folder, then the folder dfx wrote
        assert main(["audit", str(data), "--out", str(mine), "--check", "header"]) == 0
    assert (mine / "dataset.csv").is_file()
    capsys.readouterr()
    for folder in (Path("/"), data):
        assert main(["report", "--run-dir", str(folder)]) == 2
        assert "is not a dfx run folder" in capsys.readouterr().err
    assert not (data / "REPORT.md").exists()
