"""Stage 1, the base models: three per backbone and kind, one per class (DM, GAN, REAL), trained on the base
split, then frozen; and Table 1 (each base model's main class vs others on the test split).

- Unbalanced (DeepFeatureX Net): for class c, a binary classifier c vs others, others sampled per generator so
  that main : others is exactly `unbalanced_ratio` (90:10 by default).
- Siamese (DeepFeatureX-SN): one shared backbone embeds two images, contrastive loss on the Euclidean distance
  of their unit-norm embeddings (margin 1: dissimilar pairs pushed 60 degrees apart), half the pairs same class
  (main / others), pairs redrawn every epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dfxlib.data.batches import ImageStore, labelled_batches, order
from dfxlib.data.index import CLASSES
from dfxlib.data.split import Split, sample_groups, split_id, train_val
from dfxlib.evaluation import paper
from dfxlib.evaluation.metrics import binary_metrics, pct
from dfxlib.models.backbones import create_backbone, display_name, normalization_meta, preprocess
from dfxlib.models.features import features
from dfxlib.models.networks import BaseModel, contrastive_loss, embedding, network
from dfxlib.models.train import FitResult, StepFn, classifier_step, device_of, fit, load_weights
from dfxlib.run import Run


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


# --------------------------------------------------------------------------------------- training
def base_meta(run: Run, split: Split, backbone: str, kind: str, main: str) -> dict:
    """What identifies a base model (checked when resuming or loading)."""
    cfg = run.config
    return {"model": "base", "backbone": backbone, "kind": kind, "main": main, "classes": list(CLASSES),
            "input_size": cfg.input_size, "pretrained": cfg.pretrained, "normalization": normalization_meta(backbone),
            "name": f"{backbone}/{kind}/{main}", "split": split_id(split)}


def _new_net(run: Run, backbone: str, kind: str) -> nn.Module:
    torch.manual_seed(run.config.seed)  # the initial weights depend on the seed only, not on what ran before
    return network(kind, create_backbone(backbone, run.config.pretrained, run.config.memory_format))


def siamese_step(margin: float) -> StepFn:
    """The training step of a Siamese base model: contrastive loss on the distance of each pair's unit-norm
    embeddings; a pair counts as correct when its distance falls on its side of margin / 2."""
    def step(model: nn.Module, batch) -> tuple[torch.Tensor, float, int]:
        xa, xb, y = batch
        d = F.pairwise_distance(embedding(model(xa)), embedding(model(xb)))
        return contrastive_loss(d, y, margin), float(((d > margin / 2).long() == y).sum()), len(y)
    return step


def fit_on_images(run: Run, store: ImageStore, net: nn.Module, backbone: str, tr: pd.DataFrame, va: pd.DataFrame,
                  folder: Path, meta: dict, weight: torch.Tensor | None = None) -> FitResult:
    """Train a classifier on image rows (`path`, `target`) with the base models' settings (epochs, lr, batch,
    patience; seeded, shuffled batches), cross entropy weighted by `weight` when given: the unbalanced base
    models and the plain classifiers."""
    cfg = run.config
    dev = device_of(cfg.device)
    tf = preprocess(backbone, cfg.input_size)
    pixels = run.pixels(store)  # decoded once for every backbone and epoch

    def train_batches(epoch: int) -> Iterator:
        return labelled_batches(pixels, list(tr["path"]), list(tr["target"]), tf, cfg.batch_size, cfg.seed, epoch,
                                shuffle=True, device=dev)

    def val_batches() -> Iterator:
        return labelled_batches(pixels, list(va["path"]), list(va["target"]), tf, cfg.batch_size, device=dev)
    return fit(net, classifier_step(None if weight is None else weight.to(dev)), train_batches, val_batches, folder,
               meta, epochs=cfg.base_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
               patience=cfg.patience, min_delta=cfg.min_delta, device=dev, amp=cfg.amp, progress=run.progress,
               config_json=cfg.to_json())


def _fit_siamese(run: Run, store: ImageStore, net: nn.Module, backbone: str, anchors: pd.DataFrame, folder: Path,
                 meta: dict) -> FitResult:
    """Train a Siamese base model on pairs of `anchors` (main vs others), redrawn every epoch."""
    cfg = run.config
    dev = device_of(cfg.device)
    tf = preprocess(backbone, cfg.input_size)
    tr, va = train_val(anchors, cfg.val_fraction, cfg.seed)
    val_pairs = siamese_pairs(va, 0, cfg.seed, epoch=0)
    pixels = run.pixels(store)

    def pair_batches(pairs: pd.DataFrame) -> Iterator:
        for i in range(0, len(pairs), cfg.batch_size):
            p = pairs.iloc[i:i + cfg.batch_size]
            yield (pixels.batch(list(p["a"]), tf, dev), pixels.batch(list(p["b"]), tf, dev),
                   torch.tensor(p["dissimilar"].to_numpy(dtype=np.int64)).to(dev))

    def train_batches(epoch: int) -> Iterator:
        return pair_batches(siamese_pairs(tr, cfg.siamese_pairs, cfg.seed, epoch))

    def val_batches() -> Iterator:
        return pair_batches(val_pairs)
    return fit(net, siamese_step(cfg.siamese_margin), train_batches, val_batches, folder, meta,
               epochs=cfg.siamese_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed,
               patience=cfg.patience, min_delta=cfg.min_delta, device=dev, amp=cfg.amp, progress=run.progress,
               config_json=cfg.to_json())


def train_base_model(run: Run, store: ImageStore, split: Split, backbone: str, kind: str, main: str) -> BaseModel:
    """Train (or resume, or reuse) one base model; returns it with its best (minimum validation loss) weights."""
    cfg = run.config
    folder = run.checkpoints.base(backbone, kind, main)
    net = _new_net(run, backbone, kind)
    meta = base_meta(run, split, backbone, kind, main)
    base = split.rows("base")
    if kind == "unbalanced":
        tr, va = train_val(unbalanced_set(base, main, cfg.unbalanced_ratio, cfg.seed), cfg.val_fraction, cfg.seed)
        result = fit_on_images(run, store, net, backbone, tr, va, folder, meta)
    else:
        result = _fit_siamese(run, store, net, backbone, siamese_anchors(base, main, cfg.seed), folder, meta)
    load_weights(net, folder / "best.safetensors")
    net.eval()
    return BaseModel(net=net, backbone=backbone, kind=kind, main=main, folder=folder, fit=result)


def load_base_model(run: Run, split: Split, backbone: str, kind: str, main: str) -> BaseModel:
    """A trained base model from its checkpoint (CheckpointMismatch if it belongs to another model)."""
    folder = run.checkpoints.base(backbone, kind, main)
    if not (folder / "best.safetensors").is_file():
        run.require(str((folder / "best.safetensors").relative_to(run.dir)), "02_base_models")
    net = _new_net(run, backbone, kind)
    load_weights(net, folder / "best.safetensors", base_meta(run, split, backbone, kind, main))
    net.eval()
    return BaseModel(net=net, backbone=backbone, kind=kind, main=main, folder=folder)


# ------------------------------------------------------------------------------------- whole run
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
                         "best_val_loss": m.fit.best_val_loss, "epochs_run": len(h), "cut_short": m.fit.cut_short,
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


# ---------------------------------------------------------------------------------------------- table 1
def evaluate_base_model(run: Run, store: ImageStore, split: Split, model: BaseModel) -> dict[str, float]:
    """Main class vs others on the whole test split: the classifier's prediction for unbalanced base models;
    for Siamese ones, the nearest of the main / others centres of the (unit-norm) embeddings of the base split. With the
    metrics, `main_share`: the main class's share of the test split."""
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
        f_base = embedding(torch.as_tensor(features(run, store, model, list(base["path"])))).numpy()
        f_test = embedding(torch.as_tensor(f_test)).numpy()
        is_main = (base["family"] == model.main).to_numpy()
        centres = np.stack([f_base[~is_main].mean(0), f_base[is_main].mean(0)])
        pred = np.linalg.norm(f_test[:, None, :] - centres[None], axis=2).argmin(1)
    return {**binary_metrics(y, pred), "main_share": float(y.mean()) if len(y) else float("nan")}


def table1(rows: list[dict]) -> pd.DataFrame:
    """Table 1 from evaluate_base_model results (`rows`: backbone, kind, main + metrics), in percent, with
    the paper's values beside ours (the paper's Table 1 is for unbalanced base models)."""
    out = []
    for r in rows:
        ref = paper.table1(display_name(r["backbone"]), r["main"]) if r["kind"] == "unbalanced" else {}
        out.append({"backbone": display_name(r["backbone"]), "kind": r["kind"], "base_model": r["main"].upper(),
                    **{m: pct(r[m]) for m in ("accuracy", "recall", "precision", "f1")},
                    **{f"paper_{m}": ref.get(m, "") for m in ("accuracy", "recall", "precision", "f1")}})
    return pd.DataFrame(out)
