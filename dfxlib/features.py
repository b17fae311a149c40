"""Stage 2, frozen features: each base model's pooled features of every image it will see, computed once per
(image, model, dataset, perturbation) and cached under `cache/features/`; the fusion head and every evaluation
read them from there.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

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
    """One feature-cache file: rows of features and the relative paths they belong to."""

    def __init__(self, path: Path):
        self.path, self.rows, self.have = path, None, {}
        if path.is_file():
            try:
                rows = load_file(str(path))["features"]
                with open(path.with_suffix(".json")) as fh:
                    have = {p: i for i, p in enumerate(json.load(fh))}
                if len(have) != len(rows):
                    raise ValueError(f"{len(have)} paths for {len(rows)} rows")
                self.rows, self.have = rows, have
            except Exception as exc:  # safetensors raises its own error type for a damaged file
                print(f"{path}: damaged feature cache ({exc}); recomputing it")

    def add(self, rels: list[str], rows: torch.Tensor) -> None:
        self.rows = rows if self.rows is None else torch.cat([self.rows, rows])
        order_ = [p for p, _ in sorted(self.have.items(), key=lambda kv: kv[1])] + rels
        self.have = {p: i for i, p in enumerate(order_)}
        rows_ = self.rows.contiguous()
        atomic_write(self.path, lambda tmp: save_file({"features": rows_}, tmp))
        atomic_write(self.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(order_)))

    def get(self, rels: Sequence[str]) -> np.ndarray:
        assert self.rows is not None
        return self.rows[[self.have[r] for r in rels]].numpy()


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


def _features_one_backbone(run: Run, store: ImageStore, models: Sequence[BaseModel], rels: Sequence[str],
                           variant: str, perturb: Perturbation | None) -> list[np.ndarray]:
    folder = run.cache / "features"
    caches = [_Cache(folder / f"{m.id}-{store.key}-{variant}.safetensors") for m in models]
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
        batches = image_batches(store, missing, cfg.batch_size * 2, cfg.seed, perturb)
        with torch.no_grad():
            while True:
                t0 = time.perf_counter()
                part, imgs = next(batches, (None, None))
                if part is None:
                    break
                x = prepare_batch(imgs, tf).to(dev)
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
