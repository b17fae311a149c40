"""Training the compared detectors (on the images DeepFeatureX saw, BCE balanced by the real:fake ratio,
minimum validation loss kept) and their predictions: p(fake) and penultimate features."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dfxlib.data.batches import ImageStore, image_batches, image_seed, order
from dfxlib.data.perturb import Perturbation
from dfxlib.data.split import Split, train_val
from dfxlib.detectors.registry import DetectorSpec, detector_meta, new_detector, recipe_of, spec_of
from dfxlib.evaluation.metrics import binary_metrics, score_metrics
from dfxlib.evaluation.scoring import Detector, memoized
from dfxlib.models.train import FitResult, device_of, fit, load_weights
from dfxlib.run import Run


@dataclass
class TrainedDetector:
    """A detector's network (best weights, eval mode) and where it lives."""

    spec: DetectorSpec
    net: nn.Module
    folder: Path
    fit: FitResult | None = None


def training_rows(split: Split) -> pd.DataFrame:
    """The images every detector trains on: base and fusion splits, `target` 1 for fake, 0 for real."""
    rows = pd.concat([split.rows("base"), split.rows("fusion")], ignore_index=True)
    return rows.assign(target=(rows["family"] != "real").astype(int))


def combined_score(y: np.ndarray, p_fake: np.ndarray) -> float:
    """GANFingerprint's selection score on its validation set, as its code computes it (positive class REAL,
    threshold 0.5): 0.10 accuracy + 0.05 precision + 0.70 recall + 0.10 F1 + 0.05 ROC AUC."""
    y_real, p_real = 1 - np.asarray(y, dtype=int), 1.0 - np.asarray(p_fake, dtype=float)
    m = binary_metrics(y_real, (p_real > 0.5).astype(int))
    auc = score_metrics(y_real, p_real, n_boot=0)["auc"]
    return (0.10 * m["accuracy"] + 0.05 * m["precision"] + 0.70 * m["recall"] + 0.10 * m["f1"]
            + 0.05 * (0.0 if np.isnan(auc) else auc))


#: the validation score of a detector whose recipe keeps the weights of its best one (`select="val_score"`):
#: y (fake = 1) and p_fake of the validation images -> score, higher is better
VAL_SCORES = {"ganfingerprint": combined_score}


def train_detector(run: Run, store: ImageStore, split: Split, name: str) -> TrainedDetector:
    """Train (or resume, or reuse) one detector with its recipe (`registry.recipe_of`: the published one on the
    paper profile); returns it with the weights its recipe keeps."""
    cfg = run.config
    spec = spec_of(name)
    dev = device_of(cfg.device)
    net = new_detector(run, name)
    recipe = recipe_of(cfg, name)
    tr, va = train_val(training_rows(split), cfg.val_fraction, cfg.seed)
    n_fake = max(int(tr["target"].sum()), 1)
    pos_weight = torch.tensor((len(tr) - n_fake) / n_fake, device=dev)  # real:fake, so both classes weigh alike
    train_tf, eval_tf, val_tf = spec.train_tf(run), spec.eval_tf(run), spec.val_tf(run)

    def step(model: nn.Module, batch) -> tuple[torch.Tensor, float, int]:
        x, y = batch
        logit = model(x)
        loss = F.binary_cross_entropy_with_logits(logit, y.float(), pos_weight=pos_weight)
        return loss, float(((logit > 0).long() == y).sum()), len(y)

    def train_batches(epoch: int) -> Iterator:
        paths, ys = tr["path"].to_numpy(), tr["target"].to_numpy().copy()
        idx = order(len(tr), cfg.seed, epoch)
        for i in range(0, len(idx), recipe.batch_size):
            j = idx[i:i + recipe.batch_size]
            if len(j) < 2:  # batch norm (GANFingerprint's embedding) needs two samples
                continue
            x = torch.stack([train_tf(store.image(paths[k]), image_seed(cfg.seed * 1000 + epoch, paths[k]))
                             for k in j])
            yield x.to(dev), torch.as_tensor(ys[j]).to(dev)

    def val_batches() -> Iterator:
        paths, ys = list(va["path"]), va["target"].to_numpy().copy()
        for i in range(0, len(paths), cfg.batch_size):
            x = torch.stack([eval_tf(store.image(p)) if val_tf is None
                             else val_tf(store.image(p), image_seed(cfg.seed, p)) for p in paths[i:i + cfg.batch_size]])
            yield x.to(dev), torch.as_tensor(ys[i:i + cfg.batch_size]).to(dev)

    def val_score(model: nn.Module) -> float:
        with torch.no_grad():
            p = [torch.sigmoid(model(x).float()).cpu() for x, _ in val_batches()]
        return VAL_SCORES[name](va["target"].to_numpy(), torch.cat(p).numpy())

    folder = run.checkpoints.detector(name)
    meta = detector_meta(run, split, name)
    result = fit(net, step, train_batches, val_batches, folder, meta, epochs=recipe.epochs, lr=recipe.lr,
                 weight_decay=recipe.weight_decay, seed=cfg.seed, patience=recipe.patience, device=dev, amp=cfg.amp,
                 progress=run.progress, config_json=cfg.to_json(), optimizer=recipe.optimizer,
                 schedule=recipe.schedule, select=recipe.select,
                 val_score=val_score if recipe.select == "val_score" else None)
    load_weights(net, folder / "best.safetensors", meta)
    return TrainedDetector(spec=spec, net=net.eval(), folder=folder, fit=result)


# ------------------------------------------------------------------------------------------- prediction
def outputs(run: Run, store: ImageStore, det: TrainedDetector | nn.Module, rels: Sequence[str],
            perturb_fn: Perturbation | None = None, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """p(fake) (N,) and penultimate features (N, D) of a detector for `rels` (each image perturbed first by
    `perturb_fn(image, seed)` when given), with its evaluation transform."""
    cfg = run.config
    net = det.net if isinstance(det, TrainedDetector) else det
    spec = det.spec if isinstance(det, TrainedDetector) else spec_of(name)
    tf = spec.eval_tf(run)
    dev = device_of(cfg.device)
    net = net.to(dev).eval()
    probs, feats = [], []
    bar = tqdm(total=len(rels), desc=f"{spec.name} predictions", disable=not run.progress, leave=False)
    with torch.no_grad():
        for part, imgs in image_batches(store, rels, cfg.batch_size * 2, cfg.seed, perturb_fn):
            bar.update(len(part))
            f = net.features(torch.stack([tf(img) for img in imgs]).to(dev))  # SSP's transform is per image
            probs.append(torch.sigmoid(net.fc(f).squeeze(1)).float().cpu())  # dropout is off in eval mode
            feats.append(f.float().cpu())
    bar.close()
    if not probs:
        return np.zeros(0), np.zeros((0, 0))
    return torch.cat(probs).numpy(), torch.cat(feats).numpy()


def as_detector(run: Run, det: TrainedDetector):
    """A trained detector as a row of Table 4 (`evaluation.Detector`): p(fake) in the dm column."""
    def predict(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        p, _ = outputs(run, store, det, list(rels), fn)
        return np.stack([p, np.zeros_like(p), 1.0 - p], axis=1)
    return Detector(group="Detectors", name=det.spec.display, predict=memoized(predict), models=[],
                    trained=[det.folder])
