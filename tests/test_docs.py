"""Every `dfx` command that README.md and docs/ show is one `dfx` accepts, and those that read a run or a folder
run on the smoke profile: the documentation cannot go stale."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from fixture import reference_layout
from PIL import Image

from dfxlib.workflow.cli import build_parser, main

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: the subcommands run for real here; `run` and `submit` train, so they run with `--dry-run` (settings, dataset
#: and disk plan checked, nothing trained; the notebook and cluster tests train)
RUN_HERE = {"audit", "status", "predict", "report", "plan", "run", "submit"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) of every `dfx ...` line of a fenced block that is a concrete command: synopsis lines (with
    [optional] parts or a|b choices) are left out, a trailing comment dropped, continuation lines joined."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith("dfx ") and "[" not in line and "|" not in line:
                    found.append((page.name, shlex.split(line)))
    return found


def test_the_docs_link_every_page_and_show_commands():
    readme = (REPO / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"docs/{p.name}" not in readme] == []  # README guides to every page
    assert len(readme.splitlines()) < 200 and "make test" in readme  # the test command CI runs
    commands = documented_commands()
    assert len(commands) >= 12 and {argv[1] for _, argv in commands} >= {"run", "submit", "predict", "audit"}


@pytest.mark.parametrize("page, argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_documented_command_parses(page, argv):
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{page}: `{shlex.join(argv)}` is not a command dfx accepts")


def _on_smoke(argv: list[str], smoke_run: Path, data: Path, here: Path) -> list[str] | None:
    """The documented command on the smoke run and a small dataset, or None when it needs what is not here (a
    throughput file measured on a GPU)."""
    if "--throughput" in argv:
        return None
    photos = here / "photos"
    if not photos.is_dir():
        photos.mkdir()
        for i, png in enumerate(sorted(data.rglob("*.png"))[:4]):
            shutil.copy2(png, photos / f"{i}.png")
        Image.open(photos / "0.png").convert("RGB").save(here / "suspicious.jpg", quality=90)
        (here / "downloads").mkdir()
        shutil.copy2(photos / "1.png", here / "downloads" / "a.png")
    if not (here / "generalization").is_dir():
        reference_layout(data, here / "generalization")
        (here / "imagenet").mkdir()  # a weights folder, as `--dry-run` checks it (files found, not read)
        for name in ("densenet121", "resnet50"):
            (here / "imagenet" / f"{name}.safetensors").touch()
    text = {"/data/deepfeaturex": str(data), "/data/generalization": str(here / "generalization"),
            "/models/imagenet": str(here / "imagenet"),
            "runs/paper": str(smoke_run), "runs/mini": str(smoke_run)}
    out = []
    for a in argv[1:]:
        for old, new in text.items():
            a = a.replace(old, new)
        out.append(a)
    out = ["smoke" if a == "paper" and i and out[i - 1] == "--profile" else a for i, a in enumerate(out)]
    if out[0] == "predict":
        out = [a for a in out if a not in ("--backbone", "densenet121")]  # the smoke run's one backbone
        out += [] if "--model" in out else ["--model", str(smoke_run)]
    if out[0] == "report":
        out += ["--run-dir", str(smoke_run)] if "--run-dir" not in out else []
    if out[0] in ("run", "submit"):
        out += ["-p", f"run_dir={here / 'dry-run'}", "--dry-run"]  # user data: the plan creates no folder
    return out


def test_the_documented_commands_that_read_a_run_or_a_folder_work(smoke_run, fixture_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DFX_RUNS", str(tmp_path / "runs"))  # `dfx audit`'s default output folder: not the checkout's
    ran = []
    for page, argv in documented_commands():
        if argv[1] not in RUN_HERE or (args := _on_smoke(argv, smoke_run, fixture_root, tmp_path)) is None:
            continue
        assert main(args) == 0, f"{page}: `{shlex.join(argv)}` (as `dfx {shlex.join(args)}`) failed"
        ran.append(argv[1])
    assert {"audit", "status", "predict", "run", "submit"} <= set(ran) and len(ran) >= 10
    assert len((tmp_path / "results.csv").read_text().splitlines()) > 1  # predict wrote its rows


def test_the_profile_table_says_what_the_profiles_set():
    """docs/commands.md's profile table against the profiles themselves: a changed epoch count or size fails here."""
    from dfxlib.config import resolve

    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)`[^|]*\| ([^|]+) \|", (REPO / "docs" / "commands.md")
                                                         .read_text(), re.M)}
    s, m, p = resolve("smoke"), resolve("mini"), resolve("paper", {"data_root": str(REPO)})
    expected = {
        "smoke": [f"{s.builtin_per_generator} images per generator at {s.builtin_size} px", f"{s.base_epochs} epoch;",
                  f"{s.wild_per_group} images per generator and source"],
        "mini": [f"{m.builtin_per_generator} images per generator at {m.builtin_size} px",
                 f"has not improved for {m.patience} epochs",
                 f"caps: {m.base_epochs} epochs, Siamese base models {m.siamese_epochs}, heads {m.head_epochs};",
                 f"({m.detector_epochs} epochs, GANFingerprint {m.fingerprint_epochs})",
                 f"{len(m.manipulations)} manipulations".replace("4 ", "four ")],
        "paper": [f"{len(p.backbones)} ImageNet-pretrained backbones, {p.input_size} px",
                  f"every one of {p.base_epochs} epochs", f"Adam {p.lr:.0e}".replace("e-0", "e-")],
    }
    assert set(rows) == set(expected)
    missing = {k: [e for e in v if e not in rows[k]] for k, v in expected.items()}
    assert missing == {k: [] for k in expected}
