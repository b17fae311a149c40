"""Images into tensors: decode once (optionally kept in memory), preprocess per backbone, seeded batches."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from dfxlib.config import DEFAULT_MAX_PIXELS
from dfxlib.data.decode import load_rgb
from dfxlib.data.perturb import Perturbation


class ImageStore:
    """Decoded images of one dataset root. With `keep=True` each image is decoded once per run and kept as
    uint8 (the built-in world is small); with `keep=False` it is decoded on every use (large datasets)."""

    def __init__(self, root: str | Path, keep: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, content: str = ""):
        self.root = Path(root)
        #: short hash of the dataset folder and of `content` (a hash of its files, `split.fingerprint`): caches
        #: of different datasets, or of a dataset whose files changed, never mix
        self.key = hashlib.sha256(f"{self.root.resolve()}\n{content}".encode()).hexdigest()[:8]
        self.keep = keep
        self.max_pixels = max_pixels
        self._cache: dict[str, Image.Image] = {}
        self.decodes = 0

    def image(self, rel: str) -> Image.Image:
        """The RGB image at relative path `rel` (ImageError names the file if it cannot be read)."""
        img = self._cache.get(rel)
        if img is None:
            img = load_rgb(self.root / rel, self.max_pixels)
            self.decodes += 1
            if self.keep:
                self._cache[rel] = img
        return img

    def batch(self, rels: Sequence[str], transform: Callable[[Image.Image], torch.Tensor],
              device: torch.device | None = None) -> torch.Tensor:
        """A (B, 3, H, W) tensor of the preprocessed images (on `device` when given)."""
        x = torch.stack([transform(self.image(r)) for r in rels])
        return x.to(device) if device is not None else x

    def batches(self, parts: Sequence[Sequence[str]], transform: Callable[[Image.Image], torch.Tensor],
                device: torch.device | None = None) -> Iterator[torch.Tensor]:
        """`batch` of each list of paths in `parts`, in order."""
        return (self.batch(p, transform, device) for p in parts)


def order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Indices 0..n-1, shuffled from (seed, epoch) when asked: the same epoch always gives the same order."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def labelled_batches(store: ImageStore, rels: Sequence[str], labels: Sequence[int],
                     transform: Callable[[Image.Image], torch.Tensor], batch_size: int, seed: int = 0,
                     epoch: int = 0, shuffle: bool = False,
                     device: torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches over `rels`, in the (seed, epoch) order when shuffled, from `store` (an
    ImageStore, or a `pixels.PixelStore`, which assembles them in the background)."""
    idx = order(len(rels), seed, epoch, shuffle)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    parts = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    for part, x in zip(parts, store.batches([[rels[j] for j in p] for p in parts], transform, device)):
        y = y_all[part]
        yield x, (y.to(device) if device is not None else y)


def image_seed(seed: int, rel: str) -> int:
    """A per-image seed for random perturbations (the same image always gets the same noise)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rel}".encode()).digest()[:4], "little")


def image_batches(store: ImageStore, rels: Sequence[str], size: int, seed: int = 0,
                  perturb: Perturbation | None = None) -> Iterator[tuple[list[str], list[Image.Image]]]:
    """(paths, images) of `rels` in consecutive batches of `size`, decoded from `store`, each image perturbed
    first by `perturb(image, image_seed(seed, path))` when given: the one loop behind every evaluation."""
    for i in range(0, len(rels), size):
        part = list(rels[i:i + size])
        imgs = [store.image(r) for r in part]
        if perturb is not None:
            imgs = [perturb(img, image_seed(seed, r)) for img, r in zip(imgs, part)]
        yield part, imgs
