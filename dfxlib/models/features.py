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
from torch import nn
from tqdm.auto import tqdm

from dfxlib.data.batches import ImageStore, image_batches
from dfxlib.data.perturb import Perturbation
from dfxlib.data.resize import resize_uint8
from dfxlib.evaluation.tables import atomic_write
from dfxlib.models.backbones import preprocess
from dfxlib.models.distributed import current
from dfxlib.models.networks import BaseModel
from dfxlib.models.train import device_of
from dfxlib.run import Run


@dataclass
class FeatureTimes:
    """Seconds spent computing uncached features: preparing images (decode, perturb, preprocess, collate) and
    backbone forward passes. `TIMES` accumulates over a process and is written only here; `TIMES.reset()` starts
    again (benchmarks/bench_evaluation.py reads it)."""

    prepare: float = 0.0
    forward: float = 0.0
    images: int = 0

    def reset(self) -> None:
        self.prepare, self.forward, self.images = 0.0, 0.0, 0


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
        if self.keep and current().main:  # one writer per cache when processes train together
            atomic_write(self._shard(self.shards), lambda tmp: save_file({"features": rows}, tmp))
            self.shards += 1
        self.rows = rows if self.rows is None else torch.cat([self.rows, rows])
        order_ = sorted(self.have, key=self.have.__getitem__) + rels
        self.have = {p: i for i, p in enumerate(order_)}
        if self.keep and current().main:
            atomic_write(self.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(order_)))

    def get(self, rels: Sequence[str]) -> np.ndarray:
        assert self.rows is not None
        return self.rows[[self.have[r] for r in rels]].float().numpy()


def kept(run: Run, variant: str) -> bool:
    """Whether outputs for `variant` are kept on disk: RAW always, perturbed ones unless
    `cache_perturbed_features` is false (then held in memory for one call)."""
    return variant == "raw" or run.config.cache_perturbed_features


def cached_rows(path: Path, rels: Sequence[str], compute: Callable[[list[str]], np.ndarray],
                keep: bool = True) -> np.ndarray:
    """Rows (N, K) of float32 for `rels` from the cache at `path` (a feature cache's files), `compute(missing)`
    called only for the images it lacks and its rows added: a per-image output computed once across notebooks,
    such as a complete model's class probabilities (`fusion.complete_probs`)."""
    cache = _Cache(path, torch.float32, keep)
    missing = [r for r in dict.fromkeys(rels) if r not in cache.have]
    if missing:
        cache.add(missing, torch.as_tensor(np.asarray(compute(missing), dtype=np.float32)))
    return cache.get(rels) if len(rels) else np.zeros((0, 0), dtype=np.float32)


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
    dataset, variant) and cached under `cache/features/`. Unperturbed images come from the run's uint8 store; a
    perturbed image is decoded and perturbed once for every backbone (`perturb(image, seed)` acts on the
    decoded full-size image), then each backbone's preprocessing is applied."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(m.backbone, []).append(i)
    jobs = [_Job(run, store, [models[i] for i in idx], rels, variant) for idx in groups.values()]
    todo = [j for j in jobs if j.missing]
    if todo:
        _compute(run, todo, store, variant, perturb)
    out: list[np.ndarray] = [np.zeros(0)] * len(models)
    for idx, job in zip(groups.values(), jobs):
        for i, c in zip(idx, job.caches):
            out[i] = c.get(rels)
    return out


class _Job:
    """The models of one backbone, their caches, and the images each still needs."""

    def __init__(self, run: Run, store: ImageStore, models: Sequence[BaseModel], rels: Sequence[str], variant: str):
        dtype = getattr(torch, run.config.feature_dtype)
        keep = kept(run, variant)
        folder = run.cache / "features"
        self.models = list(models)
        self.caches = [_Cache(folder / f"{m.id}-{store.key}-{variant}.safetensors", dtype, keep) for m in models]
        wanted = list(dict.fromkeys(rels))
        self.missing = [r for r in wanted if any(r not in c.have for c in self.caches)]
        self.need = set(self.missing)
        self.todo = [{r for r in self.missing if r not in c.have} for c in self.caches]
        self.out: list[list[torch.Tensor]] = [[] for _ in models]
        self.tf = preprocess(models[0].backbone, run.config.input_size)

    def forward(self, nets: Sequence[nn.Module], part: list[str], x: torch.Tensor) -> None:
        """Features of batch `x` (paths `part`) from each net, for the images its cache lacks."""
        for k, net in enumerate(nets):
            sel = [j for j, r in enumerate(part) if r in self.todo[k]]
            if sel:
                self.out[k].append(net(x if len(sel) == len(part) else x[sel]).float().cpu())

    def save(self) -> None:
        for c, need, rows in zip(self.caches, self.todo, self.out):
            if need:
                c.add([r for r in self.missing if r in need], torch.cat(rows))


#: perturbed images held at the input size at once (a multiple of any batch): decoded and perturbed once, then
#: read by every backbone
_CHUNK = 1024


def _compute(run: Run, jobs: Sequence[_Job], store: ImageStore, variant: str, perturb: Perturbation | None) -> None:
    """Fill the caches of `jobs`: unperturbed images from the uint8 store, backbone by backbone; perturbed ones
    chunk by chunk, each image perturbed once and resized to the input size as the store does, then passed
    through every backbone."""
    cfg = run.config
    dev = device_of(cfg.device)
    size = cfg.batch_size * 2
    nets = [[m.features_net.to(dev).eval() for m in job.models] for job in jobs]
    kinds = "/".join(sorted({m.kind for job in jobs for m in job.models}))
    bar = tqdm(total=sum(len(j.missing) for j in jobs), disable=not run.progress, leave=False,
               desc=f"features {'+'.join(j.models[0].backbone for j in jobs)}/{kinds} {variant}")
    with torch.no_grad():
        if perturb is None:
            for job, job_nets in zip(jobs, nets):
                parts = [job.missing[i:i + size] for i in range(0, len(job.missing), size)]
                _run(job, job_nets, zip(parts, run.pixels(store).batches(parts, job.tf, dev)), bar)
        else:
            union = list(dict.fromkeys(r for job in jobs for r in job.missing))
            step = size * max(1, _CHUNK // size)  # whole batches per chunk: the batches of one backbone at a time
            for i in range(0, len(union), step):
                t0 = time.perf_counter()
                chunk = union[i:i + step]
                pixels = {r: resize_uint8(img, cfg.input_size)
                          for part, imgs in image_batches(store, chunk, size, cfg.seed, perturb)
                          for r, img in zip(part, imgs)}
                TIMES.prepare += time.perf_counter() - t0
                for job, job_nets in zip(jobs, nets):
                    need = [r for r in chunk if r in job.need]
                    parts = [need[k:k + size] for k in range(0, len(need), size)]
                    _run(job, job_nets, ((p, job.tf(torch.stack([pixels[r] for r in p]).to(dev))) for p in parts),
                         bar)
    bar.close()
    for job in jobs:
        job.save()


def _run(job: _Job, nets: Sequence[nn.Module], batches: Iterator[tuple[list[str], torch.Tensor]], bar) -> None:
    """Every batch of `batches` through `job`'s nets, timed (preparing vs forward)."""
    while True:
        t0 = time.perf_counter()
        part, x = next(batches, (None, None))
        if part is None:
            return
        t1 = time.perf_counter()
        job.forward(nets, part, x)
        TIMES.prepare += t1 - t0
        TIMES.forward += time.perf_counter() - t1
        TIMES.images += len(part)
        bar.update(len(part))


def features(run: Run, store: ImageStore, model: BaseModel, rels: Sequence[str], variant: str = "raw",
             perturb: Perturbation | None = None) -> np.ndarray:
    """Pooled features (N, D) of one model (see `features_many`)."""
    return features_many(run, store, [model], rels, variant, perturb)[0]


def stacked_features(run: Run, store: ImageStore, bases: Sequence[BaseModel], rels: Sequence[str],
                     variant: str = "raw", perturb: Perturbation | None = None) -> np.ndarray:
    """(N, 3, D) features of the three base models in the order DM, GAN, REAL."""
    return np.stack(features_many(run, store, bases, rels, variant, perturb), axis=1)
