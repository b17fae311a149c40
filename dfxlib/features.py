"""Stage 2, frozen features: each base model's pooled features of every image it will see, computed once per
(image, model, dataset, perturbation) and cached under `cache/features/`; the fusion head and every evaluation
read them from there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .backbones import preprocess
from .data import ImageStore, image_batches
from .models import BaseModel
from .perturb import Perturbation
from .run import Run
from .tables import atomic_write
from .train import device_of


@dataclass
class FeatureTimes:
    """Seconds spent by evaluation: preparing images for uncached features (decode, perturb, preprocess,
    collate), backbone forward passes, and fusion-head forward passes. `TIMES` accumulates over a process;
    `TIMES.reset()` starts again (benchmarks/bench_evaluation.py reads it)."""

    prepare: float = 0.0
    forward: float = 0.0
    head: float = 0.0
    images: int = 0

    def reset(self) -> None:
        self.prepare, self.forward, self.head, self.images = 0.0, 0.0, 0.0, 0


TIMES = FeatureTimes()


class _Cache:
    """One feature cache: rows of features in shards (`<name>.safetensors`, then `<name>.1.safetensors`, ...:
    each append writes only its new rows) and the relative paths of the rows (`<name>.json`), held as `dtype`
    (rows cached in another precision are converted when read); with `keep` false, in memory only."""

    def __init__(self, path: Path, dtype: torch.dtype = torch.float32, keep: bool = True):
        self.path, self.rows, self.have, self.shards, self.dtype, self.keep = path, None, {}, 0, dtype, keep
        if not keep or not path.with_suffix(".json").is_file():
            return
        try:
            with open(path.with_suffix(".json")) as fh:
                paths = json.load(fh)
            parts, n = [], 0
            while n < len(paths) and self._shard(len(parts)).is_file():
                parts.append(load_file(str(self._shard(len(parts))))["features"].to(dtype))
                n += len(parts[-1])
            if n != len(paths):
                raise ValueError(f"{len(paths)} paths for {n} rows")
            self._drop(len(parts))  # a shard written after its paths were not: computed again when needed
            self.rows = torch.cat(parts) if parts else None
            self.have, self.shards = {p: i for i, p in enumerate(paths)}, len(parts)
        except Exception as exc:  # safetensors raises its own error type for a damaged file
            print(f"{path}: damaged feature cache ({exc}); recomputing it")
            self._drop(0)

    def _shard(self, k: int) -> Path:
        return self.path if k == 0 else self.path.with_name(f"{self.path.stem}.{k}{self.path.suffix}")

    def _drop(self, first: int) -> None:
        """Delete the shards from `first` on."""
        k = first
        while self._shard(k).is_file():
            self._shard(k).unlink()
            k += 1

    def add(self, rels: list[str], rows: torch.Tensor) -> None:
        rows = rows.to(self.dtype).contiguous()
        if self.keep:
            atomic_write(self._shard(self.shards), lambda tmp: save_file({"features": rows}, tmp))
            self.shards += 1
        self.rows = rows if self.rows is None else torch.cat([self.rows, rows])
        order_ = sorted(self.have, key=self.have.__getitem__) + rels
        self.have = {p: i for i, p in enumerate(order_)}
        if self.keep:
            atomic_write(self.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(order_)))

    def get(self, rels: Sequence[str]) -> np.ndarray:
        assert self.rows is not None
        return self.rows[[self.have[r] for r in rels]].float().numpy()


def prepare_batch(imgs: Sequence[Image.Image], tf: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W) input of a backbone: `tf` (its preprocessing) applied once to the whole batch when the
    images share one size (the same numbers, several times faster), else image by image."""
    if len({img.size for img in imgs}) == 1:
        from torchvision.transforms.v2.functional import pil_to_tensor

        return tf(torch.stack([pil_to_tensor(img.convert("RGB")) for img in imgs]))
    return torch.stack([tf(img) for img in imgs])


def features_many(run: Run, store: ImageStore, models: Sequence[BaseModel], rels: Sequence[str],
                  variant: str = "raw", perturb: Perturbation | None = None) -> list[np.ndarray]:
    """Pooled features (N, D) of each of `models` for `rels` of `store`, computed once per (image, model,
    dataset, variant) and cached under `cache/features/`. Each missing image is decoded, perturbed and
    preprocessed once for all the models of one backbone; `perturb(image, seed)` is applied to the decoded
    image before preprocessing."""
    out: list[np.ndarray] = [np.zeros(0)] * len(models)
    by_backbone: dict[str, list[int]] = {}
    for i, m in enumerate(models):
        by_backbone.setdefault(m.backbone, []).append(i)
    for idx in by_backbone.values():
        for i, f in zip(idx, _features_one_backbone(run, store, [models[i] for i in idx], rels, variant, perturb)):
            out[i] = f
    return out


def inputs(run: Run, store: ImageStore, rels: Sequence[str], tf: Callable, device: torch.device,
           perturb: Perturbation | None = None) -> Iterator[tuple[list[str], torch.Tensor]]:
    """(paths, preprocessed batch on `device`) of `rels`: unperturbed images from the run's uint8 store
    (decoded once for every backbone), perturbed ones decoded and perturbed first (a perturbation acts on the
    full-size image), in batches of twice the training batch."""
    size = run.config.batch_size * 2
    if perturb is None:
        parts = [list(rels[i:i + size]) for i in range(0, len(rels), size)]
        yield from zip(parts, run.pixels(store).batches(parts, tf, device))
        return
    for part, imgs in image_batches(store, rels, size, run.config.seed, perturb):
        yield part, prepare_batch(imgs, tf).to(device)


def _features_one_backbone(run: Run, store: ImageStore, models: Sequence[BaseModel], rels: Sequence[str],
                           variant: str, perturb: Perturbation | None) -> list[np.ndarray]:
    folder = run.cache / "features"
    dtype = getattr(torch, run.config.feature_dtype)
    keep = variant == "raw" or run.config.cache_perturbed_features
    caches = [_Cache(folder / f"{m.id}-{store.key}-{variant}.safetensors", dtype, keep) for m in models]
    wanted = list(dict.fromkeys(rels))
    missing = [r for r in wanted if any(r not in c.have for c in caches)]
    if missing:
        cfg = run.config
        dev = device_of(cfg.device)
        tf = preprocess(models[0].backbone, cfg.input_size)
        todo = [[r for r in missing if r not in c.have] for c in caches]
        nets = [m.features_net.to(dev).eval() for m in models]
        out: list[list[torch.Tensor]] = [[] for _ in models]
        label = "/".join(sorted({f"{m.kind}" for m in models}))
        bar = tqdm(total=len(missing), desc=f"features {models[0].backbone}/{label} {variant}",
                   disable=not run.progress, leave=False)
        batches = inputs(run, store, missing, tf, dev, perturb)
        with torch.no_grad():
            while True:
                t0 = time.perf_counter()
                part, x = next(batches, (None, None))
                if part is None:
                    break
                t1 = time.perf_counter()
                for k, net in enumerate(nets):
                    need = set(todo[k])
                    sel = [j for j, r in enumerate(part) if r in need]
                    if sel:
                        xs = x if len(sel) == len(part) else x[sel]
                        out[k].append(net(xs).float().cpu())
                TIMES.prepare += t1 - t0
                TIMES.forward += time.perf_counter() - t1
                TIMES.images += len(part)
                bar.update(len(part))
        bar.close()
        for c, rels_k, rows in zip(caches, todo, out):
            if rels_k:
                c.add(rels_k, torch.cat(rows))
    return [c.get(rels) for c in caches]


def features(run: Run, store: ImageStore, model: BaseModel, rels: Sequence[str], variant: str = "raw",
             perturb: Perturbation | None = None) -> np.ndarray:
    """Pooled features (N, D) of one model (see `features_many`)."""
    return features_many(run, store, [model], rels, variant, perturb)[0]


def stacked_features(run: Run, store: ImageStore, bases: Sequence[BaseModel], rels: Sequence[str],
                     variant: str = "raw", perturb: Perturbation | None = None) -> np.ndarray:
    """(N, 3, D) features of the three base models in the order DM, GAN, REAL."""
    return np.stack(features_many(run, store, bases, rels, variant, perturb), axis=1)
