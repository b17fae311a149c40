"""What `dfx predict` reads and writes: the files its arguments name (folders walked, globs expanded) and the
CSV it streams, a whole row at a time, so an interruption leaves only complete rows."""

from __future__ import annotations

import csv
import glob
import io
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

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
            matches = sorted(glob.iglob(item, recursive=True))
            yield from (m for m in matches if not Path(m).is_dir())
            if not matches:
                yield item
        else:
            yield item


class CsvOut:
    """CSV rows streamed to a text file, each written and flushed whole (floats with 6 decimals). After an
    interruption `rows` says how many are complete, and `cut()` removes a row a full disk left half-written."""

    def __init__(self, out: io.TextIOBase, cols: Sequence[str]):
        self.out, self.rows = out, 0
        self._line = io.StringIO()
        self._writer = csv.DictWriter(self._line, fieldnames=list(cols), restval="", extrasaction="ignore")
        self._writer.writeheader()
        self._emit()
        self._good = self._tell()

    def _tell(self) -> int | None:
        try:
            return self.out.tell()
        except (OSError, ValueError):  # a pipe or a terminal
            return None

    def _emit(self) -> None:
        text = self._line.getvalue()
        self._line.seek(0)
        self._line.truncate()
        self.out.write(text)
        self.out.flush()

    def write(self, rows: Iterable[dict]) -> int:
        """Write every row of `rows`; returns the number of rows written so far."""
        for row in rows:
            self._writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
            self._emit()
            self.rows += 1
            self._good = self._tell()
        return self.rows

    def cut(self) -> None:
        """Drop whatever follows the last whole row (a file only; best effort)."""
        if self._good is not None:
            try:
                self.out.truncate(self._good)
            except (OSError, ValueError):
                pass


def write_csv(rows: Iterable[dict], out: io.TextIOBase, cols: Sequence[str]) -> int:
    """Stream rows to CSV (floats with 6 decimals); returns the number of rows."""
    return CsvOut(out, cols).write(rows)
