"""Tables as CSV (for machines) and Markdown (for people), and REPORT.md gathering them."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from dfxlib.evaluation.differences import report_section

#: the order of tables in REPORT.md; others follow alphabetically
TABLE_ORDER: tuple[str, ...] = ("dataset", "table1_base_models", "table2_multiclass", "table3_binary",
                                "table4_generalization", "manipulations", "detectors", "wild")


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.2f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


#: columns kept in the CSV only: per-image outcomes (for paired tests), not for reading
CSV_ONLY: tuple[str, ...] = ("outcomes",)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `df` (floats with two decimals, index dropped, CSV_ONLY columns
    left out)."""
    df = df.drop(columns=[c for c in CSV_ONLY if c in df.columns])
    cols = [_cell(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _file_mode() -> int:
    """The mode a plain `open()` would give a new file under this process's umask (read once, at import: the
    only way to read the umask is to set it, which is not safe once threads run)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place: readers never see a
    half-written file, and an interrupted write leaves the old one. The file gets the umask's usual mode
    (not mkstemp's private 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)  # after writing: a writer that recreates the file (safetensors) made it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_table(df: pd.DataFrame, name: str, folder: str | Path, title: str = "", notes: str = "") -> Path:
    """Write `folder/name.csv` and `folder/name.md` (with an optional title and notes); returns the CSV path."""
    folder = Path(folder)
    csv_path = folder / f"{name}.csv"
    atomic_write_text(csv_path, df.to_csv(index=False))
    md = (f"### {title}\n\n" if title else "") + to_markdown(df) + (f"\n{notes.strip()}\n" if notes else "")
    atomic_write_text(folder / f"{name}.md", md)
    return csv_path


def _profile(config_json: Path) -> str:
    """The profile a run's config.json names ("" when it cannot be read)."""
    try:
        saved = json.loads(config_json.read_text())
    except (OSError, ValueError):
        return ""
    return str(saved.get("profile", "")) if isinstance(saved, dict) else ""


def build_report(run_dir: str | Path) -> Path:
    """(Re)write `run_dir/REPORT.md` from every table under `run_dir/tables`; returns its path."""
    run_dir = Path(run_dir)
    tables = run_dir / "tables"
    names = sorted(p.stem for p in tables.glob("*.md")) if tables.is_dir() else []
    ordered = [n for n in TABLE_ORDER if n in names] + [n for n in names if n not in TABLE_ORDER]
    parts = [f"# dfx report: {run_dir.name}\n"]
    cfg = run_dir / "config.json"
    if cfg.is_file():
        parts.append(f"Settings: `{cfg.name}` in this folder.\n")
    nbs = sorted((run_dir / "notebooks").glob("*.ipynb")) if (run_dir / "notebooks").is_dir() else []
    if nbs:
        parts.append("Executed notebooks: " + ", ".join(f"`notebooks/{p.name}`" for p in nbs) + "\n")
    if not ordered:
        parts.append("No tables yet: run `dfx run` first.\n")
    for n in ordered:
        body = (tables / f"{n}.md").read_text()
        parts.append(f"## {n}\n\n{body}")
    profile = _profile(cfg)
    if profile:
        parts.append(report_section(profile))
    out = run_dir / "REPORT.md"
    atomic_write_text(out, "\n".join(parts))
    return out


def refresh_sections(doc: str | Path, *folders: str | Path) -> int:
    """Rewrite every `## title` section of the Markdown page `doc` (docs/latest-tables.md) with the table of that
    title from the `tables/*.md` of `folders` (a run, a seeds folder; the first that has it), keeping the page's
    text before its first section. ValueError names the sections no folder has (nothing is written then).
    Returns the number of sections."""
    doc = Path(doc)
    head, _, rest = doc.read_text().partition("\n## ")
    titles = [s.split("\n", 1)[0].strip() for s in ("\n## " + rest).split("\n## ")[1:]]
    found: dict[str, str] = {}
    for folder in folders:
        for p in sorted((Path(folder) / "tables").glob("*.md")):
            first, _, table = p.read_text().partition("\n")
            found.setdefault(first.removeprefix("### ").strip(), table.strip("\n"))
    missing = [t for t in titles if t not in found]
    if missing:
        raise ValueError(f"{doc}: no table titled {', '.join(map(repr, missing))} in {', '.join(map(str, folders))}")
    atomic_write_text(doc, "\n\n".join([head.rstrip("\n"), *(f"## {t}\n\n{found[t]}" for t in titles)]) + "\n")
    return len(titles)
