"""Stage 3, the fusion head and the complete model: the three frozen base models' features stacked (B, 3, D) in
the order DM, GAN, REAL, fused by the paper's 1-D CNN head with weighted cross entropy w_c = 1 / n_c, trained on
the fusion split from the feature cache and evaluated on balanced test sets (Tables 2-3's RAW columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dfxlib.data.batches import ImageStore, order
from dfxlib.data.index import CLASS_INDEX, CLASSES
from dfxlib.data.perturb import Perturbation
from dfxlib.data.split import Split, sample_groups, test_sets
from dfxlib.evaluation.metrics import correct, evaluate, outcomes, pct
from dfxlib.models.backbones import display_name, feature_dim
from dfxlib.models.basemodels import combos, load_base_model
from dfxlib.models.features import cached_rows, kept, stacked_features
from dfxlib.models.networks import HEAD_INPUTS, BaseModel, FusionHead, LinearProbe, weights_id
from dfxlib.models.train import FINISHED, FitResult, classifier_step, device_of, fit, is_finished, load_weights
from dfxlib.run import Run


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """The paper's weights w_c = 1 / (number of training images of class c)."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    return torch.as_tensor(np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0), dtype=torch.float32)


def balanced_val(df: pd.DataFrame, frac: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation with the same number of images per class (frac of the smallest class), the rest to train."""
    n = max(1, int(frac * df.groupby("label").size().min()))
    val = sample_groups(df, "label", n, seed)
    return df.drop(index=val.index).reset_index(drop=True), val.reset_index(drop=True)


def head_meta(backbone: str, kind: str, bases: list[BaseModel]) -> dict:
    """What identifies a fusion head: its backbone and kind, the weights of the three base models it fuses, and
    that it standardises its inputs (a head saved before it did is refused by name, not by missing buffers)."""
    return {"model": "head", "backbone": backbone, "kind": kind, "classes": list(CLASSES),
            "bases": [b.id for b in bases], "inputs": HEAD_INPUTS}


def train_head(run: Run, folder: Path, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
               y_val: np.ndarray, meta: dict) -> tuple[FusionHead, FitResult]:
    """Train a fusion head on cached features with weighted cross entropy; keep minimum validation loss."""
    cfg = run.config
    dev = device_of(cfg.device)
    torch.manual_seed(cfg.seed)
    head = FusionHead(in_channels=x_train.shape[1], feature_dim=x_train.shape[2])
    head.set_input_stats(torch.as_tensor(x_train))
    weight = class_weights(y_train).to(dev)
    xt, yt = torch.as_tensor(x_train), torch.as_tensor(y_train, dtype=torch.long)
    xv, yv = torch.as_tensor(x_val), torch.as_tensor(y_val, dtype=torch.long)

    def train_batches(epoch: int) -> Iterator:
        idx = order(len(xt), cfg.seed, epoch)
        for i in range(0, len(idx), cfg.batch_size):
            j = idx[i:i + cfg.batch_size]
            if len(j) > 1:  # batch norm needs two samples
                yield xt[j].to(dev), yt[j].to(dev)

    def val_batches() -> Iterator:
        for i in range(0, len(xv), cfg.batch_size * 4):
            yield xv[i:i + cfg.batch_size * 4].to(dev), yv[i:i + cfg.batch_size * 4].to(dev)

    meta = {**meta, "name": str(folder.relative_to(run.checkpoints.heads)), "in_channels": int(x_train.shape[1]),
            "feature_dim": int(x_train.shape[2])}
    patience = cfg.head_patience if cfg.head_patience >= 0 else cfg.patience  # -1: the run's patience
    result = fit(head, classifier_step(weight), train_batches, val_batches, folder, meta, epochs=cfg.head_epochs,
                 lr=cfg.head_lr, weight_decay=cfg.weight_decay, seed=cfg.seed, patience=patience,
                 min_delta=cfg.min_delta, device=dev, amp=False, progress=run.progress, config_json=cfg.to_json())
    load_weights(head, folder / "best.safetensors")
    return head.eval(), result


def predict_head(head: FusionHead, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Class probabilities (N, 3) of a head on cached features."""
    dev = next(head.parameters()).device
    with torch.no_grad():
        out = [F.softmax(head(torch.as_tensor(x[i:i + batch]).to(dev)), dim=1).cpu() for i in range(0, len(x), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(CLASSES)))


def complete_probs(run: Run, store: ImageStore, c: "Complete", rels: Sequence[str], variant: str = "raw",
                   fn: Perturbation | None = None) -> np.ndarray:
    """Class probabilities (N, 3) of the complete model `c` on `rels` of `store` under `variant` (`fn` its
    perturbation), computed once per (head weights, dataset, variant, image) and kept under `cache/predictions/` as
    the features are (`features.kept`): notebooks 03 to 07 score the same test images again, and the paper's head
    costs more per image than Lite0 at 64 px."""
    if not len(rels):
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    key = f"{c.backbone}-{c.kind}-{weights_id(run.checkpoints.head(c.backbone, c.kind) / 'best.safetensors')}-" \
          f"{store.key}-{variant}"
    return cached_rows(run.cache / "predictions" / f"{key}.safetensors", rels,
                       lambda todo: predict_head(c.head, stacked_features(run, store, c.bases, todo, variant, fn)),
                       kept(run, variant))


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int) -> LinearProbe:
    """A standardised, class-balanced logistic regression on frozen features (N, D) with labels in CLASSES:
    a base model used alone (notebook 03) and the linear-probe baseline (`dfxlib.models.baselines`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced",
                                                             random_state=seed))
    return LinearProbe.of(clf.fit(x, y), len(CLASSES))


def probe_proba(probe: LinearProbe, x: np.ndarray) -> np.ndarray:
    """(N, 3) probabilities over CLASSES of a fitted probe (a class absent from its training gets 0)."""
    with torch.no_grad():
        return probe(torch.as_tensor(x)).numpy()


@dataclass
class Complete:
    """A trained complete model: the three frozen base models of (backbone, kind), DM, GAN, REAL, and their
    fusion head; as notebook 03 trains it, also its fit and its evaluation on the test split (None when loaded
    by a later notebook). Its network is `networks.CompleteModel`; `dfx predict` serves it as
    `predict.complete.Predictor`."""

    backbone: str
    kind: str
    bases: list[BaseModel]
    head: FusionHead
    fit: FitResult | None = None
    multiclass: dict | None = None
    binary: dict | None = None
    ablation: pd.DataFrame | None = None


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
    meta = head_meta(backbone, kind, bases)
    head, result = train_head(run, run.checkpoints.head(backbone, kind), feats["train"], ys["train"], feats["val"],
                              ys["val"], meta)
    complete = Complete(backbone=backbone, kind=kind, bases=bases, head=head, fit=result)
    p_multi = complete_probs(run, store, complete, list(multi["path"]))
    m = evaluate(ys["multi"], p_multi, binary=False, n_boot=cfg.bootstrap, seed=cfg.seed)
    p_binary = complete_probs(run, store, complete, list(binary["path"]))
    b = evaluate(ys["binary"], p_binary, binary=True, n_boot=cfg.bootstrap, seed=cfg.seed)
    rows = [{"backbone": backbone, "kind": kind, "features": "DM + GAN + REAL (complete)",
             "accuracy": m["accuracy"], "f1": m["f1"], "outcomes": outcomes(correct(ys["multi"], p_multi, binary=False))}]
    for k, c in enumerate(CLASSES if ablation else ()):
        probs = probe_proba(fit_probe(feats["train"][:, k], ys["train"], cfg.seed), feats["multi"][:, k])
        r = evaluate(ys["multi"], probs, binary=False, n_boot=1, seed=cfg.seed)
        rows.append({"backbone": backbone, "kind": kind, "features": f"{c.upper()} base model alone",
                     "accuracy": r["accuracy"], "f1": r["f1"], "outcomes": outcomes(correct(ys["multi"], probs, binary=False))})
    complete.multiclass, complete.binary, complete.ablation = m, b, pd.DataFrame(rows)
    return complete


def train_complete_models(run: Run, store: ImageStore, split: Split,
                          ablation: bool = False) -> list[Complete]:
    """A complete model for every (backbone, kind) of the run (trained, or reused once trained), evaluated on
    the test split; with `ablation`, each base model alone too (see `train_complete`)."""
    return [train_complete(run, store, split, b, k, ablation) for b, k in combos(run)]


def per_class_table(completes: list[Complete]) -> pd.DataFrame:
    """Per-class precision, recall and F1 (%) of every complete model, 3-class and binary."""
    rows = []
    for c in completes:
        for task, m in (("3-class", c.multiclass), ("binary", c.binary)):
            for name in m["class_names"]:
                rows.append({"backbone": display_name(c.backbone), "kind": c.kind, "task": task, "class": name,
                             "precision": pct(m[f"precision_{name}"]), "recall": pct(m[f"recall_{name}"]),
                             "f1": pct(m[f"f1_{name}"])})
    return pd.DataFrame(rows)


def load_complete(run: Run, split: Split, backbone: str, kind: str) -> Complete:
    """The complete model of (backbone, kind) that notebook 03 trained, loaded without training or evaluating
    anything: MissingPrerequisite when its head is not finished, CheckpointMismatch when the head was trained
    on other base models."""
    bases = [load_base_model(run, split, backbone, kind, c) for c in CLASSES]
    folder = run.checkpoints.head(backbone, kind)
    if not is_finished(folder):
        run.require(str((folder / FINISHED).relative_to(run.dir)), "03_complete_model")
    head = FusionHead(in_channels=len(bases), feature_dim=feature_dim(bases[0].features_net))
    load_weights(head, folder / "best.safetensors", head_meta(backbone, kind, bases))
    return Complete(backbone=backbone, kind=kind, bases=bases, head=head.to(device_of(run.config.device)).eval())


def load_complete_models(run: Run, split: Split) -> list[Complete]:
    """Every complete model of the run (`load_complete`): what notebooks 04-06 evaluate."""
    return [load_complete(run, split, b, k) for b, k in combos(run)]
