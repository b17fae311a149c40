"""Images decoded once per dataset and input size into an on-disk uint8 store that every backbone and every
epoch reads (memory-mapped: memory stays bounded whatever the dataset's size).

A `PixelStore` holds each image resized to size x size exactly as a backbone's preprocessing resizes it (the
same antialiased resize of the same uint8 pixels), channels first, one row per image, appended as images are
first asked for (only what is new is written). `batch(rels, tf)` gives what `ImageStore.batch` gives, the
same numbers, from the store; `uint8(rels)` gives the raw rows, for a GPU to convert and normalise itself.
`loader` assembles uint8 batches in a background thread, in pinned memory when CUDA is there.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from dfxlib.data.batches import ImageStore
from dfxlib.data.resize import resize_uint8
from dfxlib.evaluation.tables import atomic_write


class PixelStore:
    """The uint8 store of one dataset (`images`) at one input size, in `folder`."""

    def __init__(self, folder: str | Path, images: ImageStore, size: int, workers: int = 2, progress: bool = False):
        self.folder, self.images, self.size, self.workers = Path(folder), images, size, workers
        self.progress = progress
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = f"{images.key}-{size}"
        self.data, self.index_path = self.folder / f"{stem}.u8", self.folder / f"{stem}.json"
        self.row_bytes = 3 * size * size
        self.have: dict[str, int] = self._load_index()
        self._map: np.memmap | None = None

    def _load_index(self) -> dict[str, int]:
        """Paths -> rows; rows past a damaged or cut data file are dropped (they are decoded again)."""
        try:
            paths = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            paths = []
        whole = self.data.stat().st_size // self.row_bytes if self.data.is_file() else 0
        paths = paths[:whole]
        if self.data.is_file() and self.data.stat().st_size != len(paths) * self.row_bytes:
            with open(self.data, "r+b") as fh:  # a write cut short: keep the whole rows the index knows
                fh.truncate(len(paths) * self.row_bytes)
        return {p: i for i, p in enumerate(paths)}

    def ensure(self, rels: Sequence[str]) -> int:
        """Decode, resize and append every image of `rels` not yet stored (decoding in `workers` threads);
        returns how many were added."""
        missing = [r for r in dict.fromkeys(rels) if r not in self.have]
        if not missing:
            return 0
        bar = tqdm(total=len(missing), desc=f"decoding into the {self.size} px store", disable=not self.progress,
                   leave=False)
        with open(self.data, "ab") as fh, ThreadPoolExecutor(max(1, self.workers)) as pool:
            for start in range(0, len(missing), 2048):  # the index is rewritten once per chunk
                part = missing[start:start + 2048]
                for x in pool.map(lambda r: resize_uint8(self.images.image(r), self.size), part):
                    fh.write(x.numpy().tobytes())
                    bar.update(1)
                fh.flush()
                os.fsync(fh.fileno())
                for r in part:
                    self.have[r] = len(self.have)
                self._write_index()
        bar.close()
        self._map = None
        return len(missing)

    def _write_index(self) -> None:
        order = sorted(self.have, key=self.have.__getitem__)
        atomic_write(self.index_path, lambda tmp: Path(tmp).write_text(json.dumps(order)))

    def _rows(self) -> np.memmap:
        if self._map is None or len(self._map) != len(self.have):
            self._map = np.memmap(self.data, dtype=np.uint8, mode="r",
                                  shape=(len(self.have), 3, self.size, self.size))
        return self._map

    def uint8(self, rels: Sequence[str]) -> torch.Tensor:
        """(B, 3, size, size) uint8 rows of `rels` (stored first if need be)."""
        self.ensure(rels)
        idx = np.fromiter((self.have[r] for r in rels), dtype=np.int64, count=len(rels))
        return torch.from_numpy(np.ascontiguousarray(self._rows()[idx]))

    def batch(self, rels: Sequence[str], transform: Callable[[torch.Tensor], torch.Tensor],
              device: torch.device | None = None) -> torch.Tensor:
        """The preprocessed (B, 3, H, W) batch of `rels`: `transform` (a backbone's preprocessing) applied to
        the stored rows, on `device` when given (a GPU converts and normalises its own batches); on the CPU the
        same numbers `ImageStore.batch` gives."""
        x = self.uint8(rels)
        return transform(x.to(device) if device is not None else x)

    def batches(self, parts: Sequence[Sequence[str]], transform: Callable[[torch.Tensor], torch.Tensor],
                device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """`batch` of each list of paths in `parts`, in order, assembled ahead in the background (`loader`)."""
        return (transform(x) for x in loader(self, parts, device))


def loader(store: PixelStore, batches: Sequence[Sequence[str]], device: torch.device | None = None,
           prefetch: int = 2) -> Iterator[torch.Tensor]:
    """The uint8 batches of `batches` (lists of paths), assembled `prefetch` ahead in a background thread, in
    pinned memory and moved without blocking when `device` is a GPU: convert and normalise them there. Images
    not yet in the store are decoded by that thread as their batch comes up (it is the store's one writer
    meanwhile), so a first epoch starts after one batch, not after the whole decode pass; an image that cannot
    be read raises its ImageError here, in the caller."""
    pin = device is not None and device.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    done = object()

    def fill() -> None:
        try:
            for b in batches:
                x = store.uint8(b)
                q.put(x.pin_memory() if pin else x)
        except BaseException as exc:  # handed to the caller, which would otherwise wait for ever
            q.put(exc)
            return
        q.put(done)
    t = threading.Thread(target=fill, daemon=True)
    t.start()
    while (x := q.get()) is not done:
        if isinstance(x, BaseException):
            t.join()
            raise x
        yield x.to(device, non_blocking=True) if device is not None else x
    t.join()
