"""The dataset index: one table of every image with its family, generator, size, format, hash and problems.

Layouts read (detected automatically, or named):
- ``paper``: ``{dm_generated,gan_generated,real}/<architecture or source>/...``
- ``binary``: ``0_real/`` and ``1_fake/``, at the top or under one folder per generator
- ``manifest``: a CSV file with columns ``path,family,generator`` (paths relative to the CSV's folder)

Class order is fixed: 0 = dm, 1 = gan, 2 = real (the reference code's sorted folder order). Fakes of unknown
family (binary layout, generator not known) get family ``fake`` and label -1.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd
from tqdm.auto import tqdm

from dfxlib.config import DEFAULT_MAX_PIXELS
from dfxlib.data.decode import IMAGE_EXTENSIONS, ImageInfo, inspect_file
from dfxlib.evaluation.tables import atomic_write

CLASSES: tuple[str, ...] = ("dm", "gan", "real")
CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}
FAMILY_FOLDERS: dict[str, str] = {"dm_generated": "dm", "gan_generated": "gan", "real": "real"}
FAMILY_NAMES: dict[str, str] = {**FAMILY_FOLDERS, "dm": "dm", "gan": "gan", "fake": "fake"}

#: generator names (lower case, without separators) whose family is known, for the binary layout
KNOWN_FAMILIES: dict[str, str] = {
    **{g: "gan" for g in ("attgan", "biggan", "cyclegan", "gaugan", "gdwct", "progan", "stargan", "stargan2",
                         "stylegan", "stylegan2", "stylegan3", "crn", "imle", "san", "deepfake", "whichfaceisreal")},
    **{g: "dm" for g in ("dalle2", "dalle", "dallemini", "glide", "latentdiffusion", "ldm", "stablediffusion",
                        "stablediffusionv1", "stablediffusionv2", "sdv14", "sdv15", "sdxl", "midjourney", "adm",
                        "ddpm", "dalle2pytorchdecoder", "wukong", "vqdm")},
}

COLUMNS = ["path", "family", "label", "generator", "width", "height", "format", "mode", "frames", "bytes",
           "sha256", "readable", "error", "note"]
_CACHE_KEYS = ["path", "bytes_on_disk", "mtime_ns", "check"]
OUTSIDE = "is outside the manifest's folder"


class DataError(Exception):
    """The dataset cannot be indexed at all (missing root, unknown layout, bad manifest)."""


@dataclass
class DatasetIndex:
    """The index of one dataset: `table` (one row per file) and dataset-level `problems`."""

    root: Path
    layout: str
    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> pd.DataFrame:
        """Rows that can be used: readable images with a known place in the layout."""
        return self.table[self.table["error"] == ""].reset_index(drop=True)

    @property
    def bad(self) -> pd.DataFrame:
        """Rows that cannot be used, with the reason."""
        return self.table[self.table["error"] != ""].reset_index(drop=True)

    def abspath(self, rel: str) -> Path:
        """Absolute path of a table row's relative path."""
        return self.root / rel


def family_of_generator(name: str, families: Mapping[str, str] | None = None) -> str:
    """Family of a generator in the binary layout: from `families`, else from KNOWN_FAMILIES, else 'fake'."""
    if families and name in families:
        return families[name]
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return KNOWN_FAMILIES.get(key, "fake")


def _walk(root: Path) -> list[str]:
    """Relative POSIX paths of every non-hidden file under root, sorted."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        out.extend((rel / f).as_posix() for f in sorted(filenames) if not f.startswith("."))
    return out


def detect_layout(root: Path) -> str:
    """Name the layout of `root` ('paper', 'binary' or 'manifest'), or raise DataError."""
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "manifest"
        raise DataError(f"{root}: a data root must be a folder or a CSV manifest")
    if any((root / d).is_dir() for d in FAMILY_FOLDERS):
        return "paper"
    subdirs = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    names = {d.name for d in subdirs}
    if names & {"0_real", "1_fake"} or any((d / "0_real").is_dir() or (d / "1_fake").is_dir() for d in subdirs):
        return "binary"
    raise DataError(
        f"{root}: no known layout (expected dm_generated/, gan_generated/, real/ folders; 0_real/ and 1_fake/ "
        "folders; or a CSV manifest with columns path,family,generator)")


def _place_paper(rel: str) -> tuple[str, str, str]:
    """(family, generator, error) of a file in the paper layout."""
    parts = rel.split("/")
    if parts[0] not in FAMILY_FOLDERS:
        return "", "", f"unexpected location: not under {', '.join(FAMILY_FOLDERS)}"
    if len(parts) < 3:
        return FAMILY_FOLDERS[parts[0]], "", f"unexpected location: expected {parts[0]}/<architecture>/<image>"
    return FAMILY_FOLDERS[parts[0]], parts[1], ""


def _place_binary(rel: str, families: Mapping[str, str] | None) -> tuple[str, str, str]:
    parts = rel.split("/")
    if parts[0] in ("0_real", "1_fake") and len(parts) >= 2:
        gen, cls = "", parts[0]
    elif len(parts) >= 3 and parts[1] in ("0_real", "1_fake"):
        gen, cls = parts[0], parts[1]
    else:
        return "", "", "unexpected location: expected [<generator>/]0_real/ or [<generator>/]1_fake/"
    if cls == "0_real":
        return "real", gen, ""
    return family_of_generator(gen, families), gen, ""


def _read_manifest(csv_path: Path) -> list[tuple[str, str, str, str]]:
    """(path, family, generator, error) per manifest row. A row is refused (kept, with its reason) when its
    family is not dm, gan or real, its path leaves the manifest's folder, or it repeats a path (with the same
    family: listed twice; with another: conflicting labels, and then every row of that path is refused)."""
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv_path}: the manifest is empty (it needs a header line: path,family,generator)") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv_path}: cannot read manifest ({exc})") from exc
    missing = {"path", "family", "generator"} - set(df.columns)
    if missing:
        raise DataError(f"{csv_path}: manifest lacks column(s) {', '.join(sorted(missing))}")
    folder = csv_path.parent.resolve()
    rows = []
    seen: dict[str, tuple[int, str]] = {}
    conflicts: dict[str, str] = {}
    for line, (p, fam, gen) in enumerate(zip(df["path"], df["family"], df["generator"]), start=2):
        fam_n = fam.strip().lower()
        rel = os.path.normpath(p.strip()).replace(os.sep, "/") if p.strip() else ""
        err = ""
        if fam_n not in CLASS_INDEX:
            err, fam_n = f"manifest line {line}: unknown family {fam!r} (use dm, gan or real)", ""
        if not rel or os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
            err = f"manifest line {line}: path {p!r} {OUTSIDE}"
        elif not (folder / rel).resolve().is_relative_to(folder):  # a link inside that points outside
            err = f"manifest line {line}: path {p!r} {OUTSIDE} (through a link)"
        elif rel in seen:
            first, first_fam = seen[rel]
            if fam_n and first_fam and fam_n != first_fam:
                conflicts[rel] = f"conflicting labels: {first_fam} (line {first}) and {fam_n} (line {line})"
            err = err or f"manifest line {line}: listed twice (first on line {first})"
        else:
            seen[rel] = (line, fam_n)
        rows.append((rel or p, fam_n, gen.strip(), err))
    return [(r, f, g, f"manifest: {conflicts[r]}" if r in conflicts else e) for r, f, g, e in rows]


def _load_cache(path: Path | None) -> dict[tuple, dict]:
    if path is None or not path.is_file():
        return {}
    try:
        df = pd.read_csv(path, dtype={"sha256": str, "error": str, "note": str, "format": str, "mode": str},
                         keep_default_na=False)
    except (OSError, pd.errors.ParserError, ValueError):
        return {}  # a damaged cache is only a cache: rebuild it
    if not set(_CACHE_KEYS) <= set(df.columns):
        return {}
    return {tuple(r[k] for k in _CACHE_KEYS): r for r in df.to_dict("records")}


def _save_cache(path: Path, rows: list[dict]) -> None:
    atomic_write(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))


def build_index(root: str | Path, layout: str = "auto", families: Mapping[str, str] | None = None,
                check: str = "full", max_pixels: int = DEFAULT_MAX_PIXELS, cache: str | Path | None = None,
                progress: bool = True, workers: int = 2) -> DatasetIndex:
    """Index every file under `root`. Bad files become rows with an `error`; only a missing root, an unknown
    layout or an unreadable manifest raise DataError. `cache` (a CSV path) keeps per-file results keyed by
    path, size and modification time, so a second run only stats the files."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data root does not exist")
    layout = detect_layout(root) if layout == "auto" else layout
    base, placed = _place_all(root, layout, families)

    cache_path = Path(cache) if cache else None
    cached = _load_cache(cache_path)
    new_cache: list[dict] = []

    def work(item: tuple[str, str, str, str]) -> dict:
        rel, fam, gen, err = item
        if OUTSIDE in err:  # never read what a manifest points at outside its folder (and never call it readable)
            return _row(rel, fam, gen, err, ImageInfo(error="not read"))
        path = base / rel
        try:
            st = path.stat()
        except OSError as exc:  # a missing file, a dangling link, a symlink loop: said as the OS says it
            missing = isinstance(exc, FileNotFoundError) and layout == "manifest"
            info = ImageInfo(error="missing file" if missing else f"cannot stat file ({exc.strerror or exc})")
            return _row(rel, fam, gen, err or info.error, info)
        key = (rel, st.st_size, st.st_mtime_ns, check)
        hit = cached.get(key)
        if hit is not None:
            info = ImageInfo(**{f.name: hit[f.name] for f in dataclasses.fields(ImageInfo)})
        else:
            info = inspect_file(path, check=check, max_pixels=max_pixels)
        new_cache.append({"path": rel, "bytes_on_disk": st.st_size, "mtime_ns": st.st_mtime_ns, "check": check,
                          **dataclasses.asdict(info)})
        return _row(rel, fam, gen, err or info.error, info)

    bar = tqdm(total=len(placed), desc=f"indexing {root.name}", unit="file", disable=not progress, mininterval=1)
    rows = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for row in pool.map(work, placed, chunksize=64):
            rows.append(row)
            bar.update()
    bar.close()
    if cache_path is not None:
        _save_cache(cache_path, new_cache)

    table = pd.DataFrame(rows, columns=COLUMNS)
    return DatasetIndex(root=root if layout != "manifest" else base, layout=layout, table=table,
                        problems=_class_problems(table, root, layout))


def _place_all(root: Path, layout: str, families: Mapping[str, str] | None) -> tuple[Path, list[tuple]]:
    """The folder paths are relative to, and (path, family, generator, error) for every file of the layout."""
    if layout == "manifest":
        return root.parent, _read_manifest(root)
    if layout not in ("paper", "binary"):
        raise DataError(f"{root}: unknown layout {layout!r} (use auto, paper, binary or manifest)")
    placed = []
    for rel in _walk(root):
        if "/" not in rel and Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            continue  # top-level metadata (README, MANIFEST.csv, ...)
        fam, gen, err = _place_paper(rel) if layout == "paper" else _place_binary(rel, families)
        placed.append((rel, fam, gen, err))
    return root, placed


def _class_problems(table: pd.DataFrame, root: Path, layout: str) -> list[str]:
    """What keeps an index from being used: a class (or, binary, real / fake) without a usable image, no file."""
    problems = []
    if layout in ("paper", "manifest"):
        for fam in CLASSES:
            if not ((table["family"] == fam) & (table["error"] == "")).any():
                where = f"{root}/{fam}_generated" if fam != "real" else f"{root}/real"
                problems.append(f"class {fam} has no usable images ({where if layout == 'paper' else root})")
    else:
        for fam, folder in (("real", "0_real"), ("fake", "1_fake")):
            has = (table["family"] == "real") if fam == "real" else table["family"].isin(["dm", "gan", "fake"])
            if not (has & (table["error"] == "")).any():
                problems.append(f"{root}: no usable images in any {folder}/ folder")
    if table.empty:
        problems.append(f"{root}: no files found")
    return problems


def _row(rel: str, fam: str, gen: str, err: str, info: ImageInfo) -> dict:
    return {"path": rel, "family": fam, "label": CLASS_INDEX.get(fam, -1), "generator": gen,
            "width": info.width, "height": info.height, "format": info.format, "mode": info.mode,
            "frames": info.frames, "bytes": info.bytes, "sha256": info.sha256, "readable": info.error == "",
            "error": err, "note": info.note}

