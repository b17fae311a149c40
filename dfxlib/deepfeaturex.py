"""DeepFeatureX Net and DeepFeatureX-SN: base models, frozen-feature cache, fusion head, complete model.

- Unbalanced base models (DeepFeatureX Net): for class c, a binary classifier c vs others on the base split,
  others sampled per generator so that main:others is exactly `unbalanced_ratio` (90:10 by default).
- Siamese base models (DeepFeatureX-SN): one shared backbone embeds two images, contrastive loss with margin
  2 on the Euclidean distance, half the pairs same class (main/others), pairs redrawn every epoch.
- Complete model: the three base backbones frozen (always in eval mode), features stacked (B, 3, D) in the
  order DM, GAN, REAL, fused by the paper's 1-D CNN head, weighted cross entropy w_c = 1 / n_c.

Frozen features are computed once per (image, model, variant) and cached; the head trains on the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from tqdm.auto import tqdm

from .backbones import create_backbone, feature_dim, normalization_meta, preprocess, spec
from .data import ImageStore, labelled_batches, order
from .index import CLASS_INDEX, CLASSES
from .metrics import binary_metrics, evaluate, sample_groups
from .run import Run
from .split import Split
from .tables import atomic_write
from .train import FitResult, device_of, fit, load_weights

KINDS: tuple[str, ...] = ("unbalanced", "siamese")


# ------------------------------------------------------------------------------------------------ models
class BaseClassifier(nn.Module):
    """A backbone and a linear layer: main class (1) vs others (0), or `n_classes` classes (plain classifier)."""

    def __init__(self, backbone: nn.Module, n_classes: int = 2):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(feature_dim(backbone), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


class SiameseNet(nn.Module):
    """One shared backbone; the embedding is its pooled feature (no projection, no normalisation)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def contrastive_loss(d: torch.Tensor, dissimilar: torch.Tensor, margin: float = 2.0) -> torch.Tensor:
    """mean(0.5 (1-y) d^2 + 0.5 y max(0, m - d)^2) with y = 1 for a dissimilar pair."""
    y = dissimilar.float()
    return (0.5 * (1 - y) * d.pow(2) + 0.5 * y * F.relu(margin - d).pow(2)).mean()


class FusionHead(nn.Module):
    """The paper's head: five 1-D convolutions (16, 64, 256, 512, 1024 channels; kernels 7, 5, 3, 3, 3;
    strides 2, 2, 1, 1, 1; padding 1), ReLU then batch norm after each but the last, global average pooling,
    a linear layer to 3 classes. Input (B, channels, D): one channel per base model."""

    def __init__(self, in_channels: int = 3, n_classes: int = 3):
        super().__init__()
        chans, kernels, strides = (16, 64, 256, 512, 1024), (7, 5, 3, 3, 3), (2, 2, 1, 1, 1)
        layers: list[nn.Module] = []
        cin = in_channels
        for i, (c, k, s) in enumerate(zip(chans, kernels, strides)):
            layers += [nn.Conv1d(cin, c, k, stride=s, padding=1), nn.ReLU()]
            if i < len(chans) - 1:
                layers.append(nn.BatchNorm1d(c))
            cin = c
        self.convs = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.classifier = nn.Linear(chans[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.convs(x)).flatten(1))


class CompleteModel(nn.Module):
    """Three frozen base backbones (DM, GAN, REAL) and a fusion head. `train()` never puts the backbones in
    training mode, so their batch-norm statistics and dropout stay fixed while the head trains."""

    def __init__(self, bases: Sequence[nn.Module], head: FusionHead):
        super().__init__()
        self.bases = nn.ModuleList(bases)
        for p in self.bases.parameters():
            p.requires_grad_(False)
        self.bases.eval()
        self.head = head

    def train(self, mode: bool = True) -> "CompleteModel":
        super().train(mode)
        self.bases.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, D) stacked pooled features of the base models."""
        with torch.no_grad():
            return torch.stack([b(x) for b in self.bases], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# -------------------------------------------------------------------------------------------- data sets
def unbalanced_set(base: pd.DataFrame, main: str, ratio: float, seed: int) -> pd.DataFrame:
    """All `main` images of the base split plus others sampled per generator (shares proportional to the
    generators' sizes, largest remainder) so that main : others = ratio : 1 - ratio. Column `target`: 1 for
    main, 0 for others."""
    mains = base[base["family"] == main]
    others = base[base["family"] != main]
    want = min(len(others), int(round(len(mains) * (1 - ratio) / ratio)))
    sizes = others.groupby("generator").size()
    exact = sizes / sizes.sum() * want
    quota = np.floor(exact).astype(int)
    for g in (exact - quota).sort_values(ascending=False).index[: want - int(quota.sum())]:
        quota[g] += 1
    picked = [others[others["generator"] == g].sample(n=int(min(q, sizes[g])), random_state=seed)
              for g, q in quota.items() if q > 0]
    out = pd.concat([mains.assign(target=1), *[p.assign(target=0) for p in picked]])
    return out.sort_values("path").reset_index(drop=True)


def train_val(df: pd.DataFrame, frac: float, seed: int, by: str = "target") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `df` into training and validation parts, stratified by `by`, seeded."""
    val = sample_groups(df, by, lambda k: max(1, int(round(k * frac))) if k > 1 else 0, seed)
    train = df.drop(index=val.index)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def siamese_anchors(base: pd.DataFrame, main: str, seed: int) -> pd.DataFrame:
    """Base-split images as main (target 1) vs others (0), the larger side undersampled to the smaller."""
    df = base.assign(target=(base["family"] == main).astype(int))
    n = int(df.groupby("target").size().min())
    return sample_groups(df, "target", n, seed).sort_values("path").reset_index(drop=True)


def siamese_pairs(anchors: pd.DataFrame, n_pairs: int, seed: int, epoch: int) -> pd.DataFrame:
    """Pairs drawn from (seed, epoch): for each anchor (in a seeded order, `n_pairs` of them, 0 = all), a
    partner of the same target (dissimilar=0) or the other target (dissimilar=1), half and half."""
    rng = np.random.default_rng([seed, epoch, 7])
    idx = order(len(anchors), seed, epoch)
    if n_pairs:
        idx = idx[:n_pairs]
    targets = anchors["target"].to_numpy()
    by_target = {t: np.flatnonzero(targets == t) for t in (0, 1)}
    dissimilar = np.zeros(len(idx), dtype=int)
    dissimilar[rng.permutation(len(idx))[: len(idx) // 2]] = 1
    partner = [int(rng.choice(by_target[targets[a] if d == 0 else 1 - targets[a]])) for a, d in zip(idx, dissimilar)]
    paths = anchors["path"].to_numpy()
    return pd.DataFrame({"a": paths[idx], "b": paths[partner], "dissimilar": dissimilar})


# --------------------------------------------------------------------------------------- base training
@dataclass
class BaseModel:
    """A trained base model: its network, backbone name, kind and main class, and where it lives."""

    net: nn.Module
    backbone: str
    kind: str
    main: str
    folder: Path
    fit: FitResult | None = None

    @property
    def features_net(self) -> nn.Module:
        """The backbone that gives this base model's pooled features."""
        return self.net.backbone

    @property
    def id(self) -> str:
        """An identifier that changes whenever the weights change (for feature caches)."""
        h = hashlib.sha256((self.folder / "best.safetensors").read_bytes()).hexdigest()[:12]
        return f"{self.backbone}-{self.kind}-{self.main}-{h}"


def base_folder(run: Run, backbone: str, kind: str, main: str) -> Path:
    """Checkpoint folder of one base model."""
    return run.checkpoints / "base" / backbone / kind / main


def split_id(split: Split) -> str:
    """A short hash of the split's settings and data: a model trained on another split is not reused."""
    return hashlib.sha256(json.dumps(split.meta, sort_keys=True).encode()).hexdigest()[:12]


def base_meta(run: Run, split: Split, backbone: str, kind: str, main: str) -> dict:
    """What identifies a base model (checked when resuming or loading)."""
    cfg = run.config
    return {"model": "base", "backbone": backbone, "kind": kind, "main": main, "classes": list(CLASSES),
            "input_size": cfg.input_size, "pretrained": cfg.pretrained, "normalization": normalization_meta(backbone),
            "name": f"{backbone}/{kind}/{main}", "split": split_id(split)}


def _new_net(run: Run, backbone: str, kind: str) -> nn.Module:
    torch.manual_seed(run.config.seed)  # the initial weights depend on the seed only, not on what ran before
    bb = create_backbone(backbone, run.config.pretrained)
    return BaseClassifier(bb) if kind == "unbalanced" else SiameseNet(bb)


def train_base_model(run: Run, store: ImageStore, split: Split, backbone: str, kind: str, main: str) -> BaseModel:
    """Train (or resume, or reuse) one base model; returns it with its best (minimum validation loss) weights."""
    cfg = run.config
    dev = device_of(cfg.device)
    tf = preprocess(backbone, cfg.input_size)
    folder = base_folder(run, backbone, kind, main)
    net = _new_net(run, backbone, kind)
    seed = cfg.seed
    base = split.rows("base")
    if kind == "unbalanced":
        data = unbalanced_set(base, main, cfg.unbalanced_ratio, seed)
        tr, va = train_val(data, cfg.val_fraction, seed)

        def step(model: nn.Module, batch) -> tuple[torch.Tensor, float, int]:
            x, y = batch
            logits = model(x)
            return F.cross_entropy(logits, y), float((logits.argmax(1) == y).sum()), len(y)

        def train_batches(epoch: int) -> Iterator:
            return labelled_batches(store, list(tr["path"]), list(tr["target"]), tf, cfg.batch_size, seed, epoch,
                                    shuffle=True, device=dev)

        def val_batches() -> Iterator:
            return labelled_batches(store, list(va["path"]), list(va["target"]), tf, cfg.batch_size, device=dev)
        epochs = cfg.base_epochs
    else:
        anchors = siamese_anchors(base, main, seed)
        tr, va = train_val(anchors, cfg.val_fraction, seed)
        val_pairs = siamese_pairs(va, 0, seed, epoch=0)

        def step(model: nn.Module, batch) -> tuple[torch.Tensor, float, int]:
            xa, xb, y = batch
            d = F.pairwise_distance(model(xa), model(xb))
            correct = float(((d > cfg.siamese_margin / 2).long() == y).sum())
            return contrastive_loss(d, y, cfg.siamese_margin), correct, len(y)

        def pair_batches(pairs: pd.DataFrame) -> Iterator:
            for i in range(0, len(pairs), cfg.batch_size):
                p = pairs.iloc[i:i + cfg.batch_size]
                yield (store.batch(list(p["a"]), tf).to(dev), store.batch(list(p["b"]), tf).to(dev),
                       torch.tensor(p["dissimilar"].to_numpy(dtype=np.int64)).to(dev))

        def train_batches(epoch: int) -> Iterator:
            return pair_batches(siamese_pairs(tr, cfg.siamese_pairs, seed, epoch))

        def val_batches() -> Iterator:
            return pair_batches(val_pairs)
        epochs = cfg.siamese_epochs
    result = fit(net, step, train_batches, val_batches, folder, base_meta(run, split, backbone, kind, main), epochs=epochs,
                 lr=cfg.lr, weight_decay=cfg.weight_decay, seed=seed, patience=cfg.patience, device=dev,
                 amp=cfg.amp, progress=run.progress, config_json=cfg.to_json())
    load_weights(net, folder / "best.safetensors")
    net.eval()
    return BaseModel(net=net, backbone=backbone, kind=kind, main=main, folder=folder, fit=result)


def load_base_model(run: Run, split: Split, backbone: str, kind: str, main: str) -> BaseModel:
    """A trained base model from its checkpoint (CheckpointMismatch if it belongs to another model)."""
    folder = base_folder(run, backbone, kind, main)
    if not (folder / "best.safetensors").is_file():
        run.require(str((folder / "best.safetensors").relative_to(run.dir)), "02_base_models")
    net = _new_net(run, backbone, kind)
    load_weights(net, folder / "best.safetensors", base_meta(run, split, backbone, kind, main))
    net.eval()
    return BaseModel(net=net, backbone=backbone, kind=kind, main=main, folder=folder)


# ---------------------------------------------------------------------------------------- feature cache
Variant = Callable[[Image.Image, int], Image.Image] | None


def image_seed(seed: int, rel: str) -> int:
    """A per-image seed for random perturbations (the same image always gets the same noise)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{rel}".encode()).digest()[:4], "little")


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
                  variant: str = "raw", perturb: Variant = None) -> list[np.ndarray]:
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
                           variant: str, perturb: Variant) -> list[np.ndarray]:
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
        step = cfg.batch_size * 2
        with torch.no_grad():
            for i in range(0, len(missing), step):
                part = missing[i:i + step]
                t0 = time.perf_counter()
                imgs = [store.image(r) for r in part]
                if perturb is not None:
                    imgs = [perturb(img, image_seed(cfg.seed, r)) for img, r in zip(imgs, part)]
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
             perturb: Variant = None) -> np.ndarray:
    """Pooled features (N, D) of one model (see `features_many`)."""
    return features_many(run, store, [model], rels, variant, perturb)[0]


def stacked_features(run: Run, store: ImageStore, bases: Sequence[BaseModel], rels: Sequence[str],
                     variant: str = "raw", perturb: Variant = None) -> np.ndarray:
    """(N, 3, D) features of the three base models in the order DM, GAN, REAL."""
    return np.stack(features_many(run, store, bases, rels, variant, perturb), axis=1)


# ----------------------------------------------------------------------------------------- fusion head
def class_weights(labels: np.ndarray) -> torch.Tensor:
    """The paper's weights w_c = 1 / (number of training images of class c)."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    return torch.as_tensor(np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0), dtype=torch.float32)


def balanced_val(df: pd.DataFrame, frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation with the same number of images per class (frac of the smallest class), the rest to train."""
    n = max(1, int(frac * df.groupby("label").size().min()))
    val = sample_groups(df, "label", n, seed)
    return df.drop(index=val.index).reset_index(drop=True), val.reset_index(drop=True)


def train_head(run: Run, name: str, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
               y_val: np.ndarray, meta: dict) -> tuple[FusionHead, FitResult]:
    """Train a fusion head on cached features with weighted cross entropy; keep minimum validation loss."""
    cfg = run.config
    dev = device_of(cfg.device)
    torch.manual_seed(cfg.seed)
    head = FusionHead(in_channels=x_train.shape[1])
    weight = class_weights(y_train).to(dev)
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train, dtype=torch.long)
    xv, yv = torch.as_tensor(x_val), torch.as_tensor(y_val, dtype=torch.long)

    def step(model: nn.Module, batch) -> tuple[torch.Tensor, float, int]:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits, y, weight=weight), float((logits.argmax(1) == y).sum()), len(y)

    def train_batches(epoch: int) -> Iterator:
        idx = order(len(xt), cfg.seed, epoch)
        for i in range(0, len(idx), cfg.batch_size):
            j = idx[i:i + cfg.batch_size]
            if len(j) > 1:  # batch norm needs two samples
                yield xt[j].to(dev), yt[j].to(dev)

    def val_batches() -> Iterator:
        for i in range(0, len(xv), cfg.batch_size * 4):
            yield xv[i:i + cfg.batch_size * 4].to(dev), yv[i:i + cfg.batch_size * 4].to(dev)

    folder = run.checkpoints / "heads" / name
    result = fit(head, step, train_batches, val_batches, folder, {**meta, "name": name, "in_channels": int(x_train.shape[1]),
                                                                  "feature_dim": int(x_train.shape[2])},
                 epochs=cfg.head_epochs, lr=cfg.head_lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
                 patience=cfg.patience, device=dev, amp=False, progress=run.progress, config_json=cfg.to_json())
    load_weights(head, folder / "best.safetensors")
    return head.eval(), result


def predict_head(head: FusionHead, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class probabilities (N, 3) of a head on cached features."""
    dev = next(head.parameters()).device
    t0 = time.perf_counter()
    with torch.no_grad():
        out = [F.softmax(head(torch.as_tensor(x[i:i + batch]).to(dev)), dim=1).cpu() for i in range(0, len(x), batch)]
    TIMES.head += time.perf_counter() - t0
    return torch.cat(out).numpy() if out else np.zeros((0, len(CLASSES)))


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int) -> Pipeline:
    """A standardised, class-balanced logistic regression on frozen features (N, D) with labels in CLASSES:
    a base model used alone (notebook 03) and the linear-probe baseline (`dfxlib.baselines`)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced",
                                                             random_state=seed))
    return clf.fit(x, y)


def probe_proba(clf: Pipeline, x: np.ndarray) -> np.ndarray:
    """(N, 3) probabilities over CLASSES of a fitted probe (a class absent from its training gets 0)."""
    probs = np.zeros((len(x), len(CLASSES)))
    if len(x):
        probs[:, clf.classes_] = clf.predict_proba(x)
    return probs


@dataclass
class Complete:
    """A complete model for one backbone and base-model kind, with its evaluation on the test split."""

    backbone: str
    kind: str
    bases: list[BaseModel]
    head: FusionHead
    fit: FitResult
    multiclass: dict
    binary: dict
    ablation: pd.DataFrame


def test_sets(split: Split, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The balanced 3-class test set (same count per class) and the balanced binary one (as many fakes,
    drawn from dm and gan, as reals), both from the test split, seeded."""
    test = split.rows("test").assign(label=lambda d: d["family"].map(CLASS_INDEX))
    multi = sample_groups(test, "label", int(test.groupby("label").size().min()), seed).reset_index(drop=True)
    real = test[test["family"] == "real"]
    fake = test[test["family"] != "real"]
    k = min(len(real), len(fake))
    binary = pd.concat([real.sample(n=k, random_state=seed), fake.sample(n=k, random_state=seed)])
    return multi, binary.sort_values("path").reset_index(drop=True)


def train_complete(run: Run, store: ImageStore, split: Split, backbone: str, kind: str,
                   ablation: bool = False) -> Complete:
    """Fuse the three trained base models of (backbone, kind): features of the fusion split, head training
    with a balanced validation part, evaluation on the balanced test sets, and (`ablation`) each base model
    used alone (a linear probe on its frozen features; notebook 03's comparison)."""
    cfg = run.config
    bases = [load_base_model(run, split, backbone, kind, c) for c in CLASSES]
    fusion = split.rows("fusion").assign(label=lambda d: d["family"].map(CLASS_INDEX))
    tr, va = balanced_val(fusion, cfg.val_fraction, cfg.seed)
    multi, binary = test_sets(split, cfg.seed)
    feats = {name: stacked_features(run, store, bases, list(df["path"]))
             for name, df in (("train", tr), ("val", va), ("multi", multi), ("binary", binary))}
    ys = {"train": tr["label"].to_numpy(), "val": va["label"].to_numpy(), "multi": multi["label"].to_numpy(),
          "binary": binary["label"].to_numpy()}
    meta = {"model": "head", "backbone": backbone, "kind": kind, "classes": list(CLASSES),
            "bases": [b.id for b in bases]}
    head, result = train_head(run, f"{backbone}/{kind}/complete", feats["train"], ys["train"], feats["val"],
                              ys["val"], meta)
    m = evaluate(ys["multi"], predict_head(head, feats["multi"]), binary=False, n_boot=cfg.bootstrap, seed=cfg.seed)
    b = evaluate(ys["binary"], predict_head(head, feats["binary"]), binary=True, n_boot=cfg.bootstrap, seed=cfg.seed)
    rows = [{"backbone": backbone, "kind": kind, "features": "DM + GAN + REAL (complete)",
             "accuracy": m["accuracy"], "f1": m["f1"]}]
    for k, c in enumerate(CLASSES if ablation else ()):
        probs = probe_proba(fit_probe(feats["train"][:, k], ys["train"], cfg.seed), feats["multi"][:, k])
        r = evaluate(ys["multi"], probs, binary=False, n_boot=1, seed=cfg.seed)
        rows.append({"backbone": backbone, "kind": kind, "features": f"{c.upper()} base model alone",
                     "accuracy": r["accuracy"], "f1": r["f1"]})
    return Complete(backbone=backbone, kind=kind, bases=bases, head=head, fit=result, multiclass=m, binary=b,
                    ablation=pd.DataFrame(rows))


# ------------------------------------------------------------------------------------- whole-run loops
def combos(run: Run) -> list[tuple[str, str]]:
    """(backbone, kind) pairs of this run's settings."""
    return [(b, k) for b in run.config.backbones for k in run.config.base_kinds]


def train_base_models(run: Run, store: ImageStore, split: Split) -> pd.DataFrame:
    """Train (or resume, or reuse) every base model of the run; one summary row per model."""
    rows = []
    for backbone, kind in combos(run):
        for main in CLASSES:
            m = train_base_model(run, store, split, backbone, kind, main)
            h = m.fit.history if m.fit is not None else pd.DataFrame()
            rows.append({"backbone": backbone, "kind": kind, "main": main, "best_epoch": m.fit.best_epoch,
                         "best_val_loss": m.fit.best_val_loss, "epochs_run": len(h),
                         "seconds": float(h["seconds"].sum()) if len(h) else 0.0,
                         "resumed_from": m.fit.resumed_from})
    return pd.DataFrame(rows)


def evaluate_base_models(run: Run, store: ImageStore, split: Split) -> list[dict]:
    """Main class vs others on the test split for every base model of the run (Table 1 rows)."""
    rows = []
    for backbone, kind in combos(run):
        for main in CLASSES:
            m = load_base_model(run, split, backbone, kind, main)
            rows.append({"backbone": backbone, "kind": kind, "main": main,
                         **evaluate_base_model(run, store, split, m)})
    return rows


def train_complete_models(run: Run, store: ImageStore, split: Split, ablation: bool = False) -> list[Complete]:
    """A complete model for every (backbone, kind) of the run (trained, or reused once trained), evaluated on
    the test split; with `ablation`, each base model alone too (see `train_complete`)."""
    return [train_complete(run, store, split, b, k, ablation) for b, k in combos(run)]


# ---------------------------------------------------------------------------------------------- table 1
def evaluate_base_model(run: Run, store: ImageStore, split: Split, model: BaseModel) -> dict[str, float]:
    """Main class vs others on the whole test split: the classifier's prediction for unbalanced base models;
    for Siamese ones, the nearest of the main / others centres of the embeddings of the base split."""
    test = split.rows("test")
    y = (test["family"] == model.main).astype(int).to_numpy()
    f_test = features(run, store, model, list(test["path"]))
    if model.kind == "unbalanced":
        fc = model.net.fc
        with torch.no_grad():
            logits = F.linear(torch.as_tensor(f_test), fc.weight.detach().cpu(), fc.bias.detach().cpu())
        pred = logits.argmax(1).numpy()
    else:
        base = split.rows("base")
        f_base = features(run, store, model, list(base["path"]))
        is_main = (base["family"] == model.main).to_numpy()
        centres = np.stack([f_base[~is_main].mean(0), f_base[is_main].mean(0)])
        pred = np.linalg.norm(f_test[:, None, :] - centres[None], axis=2).argmin(1)
    return binary_metrics(y, pred)


# ------------------------------------------------------------------------------------------------ tables
def display_name(backbone: str) -> str:
    """The paper's name of a backbone where it has one."""
    return spec(backbone).paper_name or backbone


def table1(rows: list[dict]) -> pd.DataFrame:
    """Table 1 from evaluate_base_model results (`rows`: backbone, kind, main + metrics), in percent, with
    the paper's values beside ours (the paper's Table 1 is for unbalanced base models)."""
    from . import paper
    from .metrics import pct

    out = []
    for r in rows:
        ref = paper.table1(display_name(r["backbone"]), r["main"]) if r["kind"] == "unbalanced" else {}
        out.append({"backbone": display_name(r["backbone"]), "kind": r["kind"], "base_model": r["main"].upper(),
                    **{m: pct(r[m]) for m in ("accuracy", "recall", "precision", "f1")},
                    **{f"paper_{m}": ref.get(m, "") for m in ("accuracy", "recall", "precision", "f1")}})
    return pd.DataFrame(out)


def per_class_table(completes: list[Complete]) -> pd.DataFrame:
    """Per-class precision, recall and F1 (%) of every complete model, 3-class and binary."""
    from .metrics import pct

    rows = []
    for c in completes:
        for task, m in (("3-class", c.multiclass), ("binary", c.binary)):
            for name in m["class_names"]:
                rows.append({"backbone": display_name(c.backbone), "kind": c.kind, "task": task, "class": name,
                             "precision": pct(m[f"precision_{name}"]), "recall": pct(m[f"recall_{name}"]),
                             "f1": pct(m[f"f1_{name}"])})
    return pd.DataFrame(rows)
