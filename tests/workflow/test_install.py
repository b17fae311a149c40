"""dfx outside its checkout: the notebooks ship inside the package, and runs go to the project or $DFX_RUNS."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from dfxlib.config import checkout, runs_root
from dfxlib.run import claim_run_dir
from dfxlib.workflow import notebooks

ROOT = Path(__file__).resolve().parents[2]


def test_from_another_folder_an_editable_install_uses_its_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DFX_RUNS", raising=False)
    assert checkout() == ROOT
    assert notebooks.notebooks_dir() == ROOT / "notebooks" and len(notebooks.select([], None)) >= 8
    assert runs_root() == ROOT / "runs"
    monkeypatch.setenv("DFX_RUNS", str(tmp_path / "elsewhere"))
    assert runs_root() == tmp_path / "elsewhere"


def test_the_wheel_ships_the_notebooks_and_runs_from_any_folder(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "dfxlib", src / "dfxlib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "notebooks", src / "notebooks")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, cwd=src)
    wheel = next((tmp_path / "dist").glob("dfxlib-*.whl"))
    shipped = sorted(n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("dfxlib/notebooks/"))
    expected = sorted(f"dfxlib/notebooks/{p.name}" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert shipped == expected
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "anywhere"
    work.mkdir()
    probe = ("from dfxlib.workflow import notebooks; from dfxlib.config import checkout, runs_root; "
             "from dfxlib.run import claim_run_dir; from pathlib import Path; "
             "print(checkout()); print(notebooks.notebooks_dir()); print(len(notebooks.select([], None))); "
             "print(runs_root()); print(claim_run_dir(Path('mine')))")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=work,
                         env=env).stdout.split("\n")
    assert out[:5] == ["None", str(site / "dfxlib" / "notebooks"), str(len(expected)), str(work / "runs"),
                       str(work / "mine")]


def test_the_package_folder_is_not_a_run_folder():
    import pytest

    import dfxlib
    from dfxlib.config import ConfigError

    with pytest.raises(ConfigError, match="source tree"):
        claim_run_dir(Path(dfxlib.__file__).parent / "notebooks")
