"""What `dfx predict` reads and writes: the files its arguments name (folders walked, globs expanded) and the
CSV it streams, a whole row at a time, so an interruption leaves only complete rows."""

from __future__ import annotations

import csv
import fnmatch
import glob
import io
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from dfxlib.config import ConfigError

#: files a folder walk passes over: hidden ones and text metadata beside the images (every other file gets a
#: row, so an image format Pillow cannot read, e.g. .avif or .heic, is reported rather than skipped)
METADATA_SUFFIXES = frozenset({".csv", ".txt", ".md", ".json", ".yaml", ".yml"})


def iter_inputs(inputs: Sequence[str]) -> Iterator[str]:
    """Paths named by `inputs`: files as given, folders walked recursively (sorted; hidden files and text
    metadata passed over), glob patterns expanded. A name that matches nothing is yielded as is (its row says
    why)."""
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and Path(f).suffix.lower() not in METADATA_SUFFIXES:
                        yield str(Path(root) / f)
        elif p.exists():
            yield str(p)
        elif glob.has_magic(item):
            matches = _glob(item)
            yield from (m for m in matches if not Path(m).is_dir())
            if not matches:
                yield item
        else:
            yield item


def _glob(pattern: str) -> list[str]:
    """Files and folders matching `pattern`, sorted. `**` walks folders without following links to folders (a
    link to a parent made glob recurse until the path grew too long, and name one image dozens of times); it
    matches no folder too, as glob's does. Hidden names are passed over, as in a folder walk."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = Path(pattern).parts
    k = next(i for i, s in enumerate(parts) if glob.has_magic(s))
    root = str(Path(*parts[:k])) if k else "."
    wanted = {os.path.normpath(pattern), os.path.normpath(pattern.replace("**/", "").replace("/**", ""))}
    found = []
    for folder, dirs, names in os.walk(root):  # links to folders are listed, never entered
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = os.path.normpath(os.path.join(folder, name))
            if not name.startswith(".") and any(fnmatch.fnmatchcase(path, w) for w in wanted):
                found.append(path)
    return sorted(found)


def check_out(out: Path, inputs: Sequence[str]) -> None:
    """Refuse (ConfigError naming the file) an output that would replace one of the images named in `inputs` or
    any existing file that is not a CSV: `dfx predict x.png --out x.png` once replaced the image with a table."""
    if out.is_dir():
        raise ConfigError(f"--out {out}: a folder, not a file")
    if out.is_file() and out.resolve() in {Path(p).resolve() for p in inputs if Path(p).is_file()}:
        raise ConfigError(f"--out {out}: it is one of the images to classify; name a new .csv file")
    if out.is_file() and out.suffix.lower() != ".csv":  # a device (/dev/stdout) or a pipe is written to as asked
        raise ConfigError(f"--out {out}: an existing {out.suffix or 'extensionless'} file would be replaced by the "
                          "results; name a .csv file")


#: first characters a spreadsheet reads as the start of a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A text cell that a spreadsheet would run as a formula (a file named `=HYPERLINK(...).png`) prefixed with
    a single quote, the usual convention (OWASP's CSV injection advice); numbers and other cells unchanged."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


class CsvOut:
    """CSV rows streamed to a text file, each written whole (floats with 6 decimals). A file or pipe is written
    through its descriptor, unbuffered, so after an interruption `rows` is what the file holds, and `cut()`
    removes the part of a row a full disk took (a buffered write left it in the file, flushed later)."""

    def __init__(self, out: io.TextIOBase, cols: Sequence[str]):
        self.out, self.rows = out, 0
        self._line = io.StringIO()
        self._writer = csv.DictWriter(self._line, fieldnames=list(cols), restval="", extrasaction="ignore")
        try:
            out.flush()
            self._fd: int | None = out.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):  # an in-memory stream
            self._fd = None
        self._writer.writeheader()
        self._good = self._tell()
        self._emit()
        self._good = self._tell()

    def _tell(self) -> int | None:
        if self._fd is None:
            return None
        try:
            return os.lseek(self._fd, 0, os.SEEK_CUR)
        except OSError:  # a pipe or a terminal
            return None

    def _emit(self) -> None:
        text = self._line.getvalue()
        self._line.seek(0)
        self._line.truncate()
        if self._fd is None:
            self.out.write(text)
            self.out.flush()
            return
        data = text.encode(getattr(self.out, "encoding", None) or "utf-8")
        while data:
            data = data[os.write(self._fd, data):]

    def write(self, rows: Iterable[dict]) -> int:
        """Write every row of `rows`; returns the number of rows written so far."""
        for row in rows:
            self._writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else spreadsheet_safe(v)
                                   for k, v in row.items()})
            self._emit()
            self.rows += 1
            self._good = self._tell()
        return self.rows

    def cut(self) -> None:
        """Drop whatever follows the last whole row (a file only; best effort)."""
        if self._fd is not None and self._good is not None:
            try:
                os.ftruncate(self._fd, self._good)
            except OSError:
                pass


def write_csv(rows: Iterable[dict], out: io.TextIOBase, cols: Sequence[str]) -> int:
    """Stream rows to CSV (floats with 6 decimals); returns the number of rows."""
    return CsvOut(out, cols).write(rows)
