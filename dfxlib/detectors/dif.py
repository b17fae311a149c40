"""DIF, Deep Image Fingerprint (Sinitsa & Fried, WACV 2024): a U-Net fed fixed noise produces an image F,
the fingerprint, trained so that the Pearson correlation of F with the noise residuals of images separates
one generator's fakes from real images; an image is then given the class of the nearer of two centres.

The reference's settings (Sergo2020/DIF_pytorch_official, summarised in section 4 of
`../shared/reference/METHODS.md`) are the constants of `difnet`, which holds the network and the residuals; this
module trains and applies the fingerprints. Where the reference leaves a gap or has a bug, this implementation
chooses:

- Residual extractor: the reference's DnCNN weights are not public, so the residual here is that of a fixed,
  training-free local Wiener denoiser (Lee's adaptive filter, the rule of ``scipy.signal.wiener``): per channel,
  with mean ``mu`` and variance ``var`` over 3x3 windows, ``residual = (x - mu) * s0^2 / max(var, s0^2)``,
  ``s0 = 5/255`` (the noise level of Lukas et al.'s PRNU extraction). It has no weights, gives the same result
  on every machine and is shift invariant (no block grid of its own). The mean residual of the real training
  images is subtracted from every residual, as the reference subtracts its ``clean_real.npy``, at any crop.
- Input: centre crop to ``dif_crop`` at native resolution, zero-padded when the image is smaller, values in
  [0, 1]; never resampled (the fingerprint lives on the pixel grid).
- Margin: the reference's 0.01 holds at 256 px; at other crops it is scaled by 256 / crop (`margin_for`),
  which keeps its ratio to the spread of chance correlations (about 1 / sqrt(3 crop^2)).
- Seeds: the noise input, the jitter, the batches and so the pairing all come from the run's seed.
- Odd batches: the last image sits out of the pairing (the reference crashes on them).
- Checkpoints and validation every PASSES = 5 passes over the images (the reference's checkpoint interval);
  the fingerprint kept is the EMA at the checkpoint of minimum validation loss (the rule of every dfx model), and
  the class centres are computed with it on held-out images (the validation part), not from training batches.
- One fingerprint per seen generator, as DIF is model-specific. As a single real-vs-fake detector (the
  comparison, Table 4) each fingerprint gives ``s = (rho - mid) / (mu_fake - mid)`` (+1 at its fake centre,
  -1 at its real one, 0 half-way), an image's score is its largest ``s`` (the fingerprint it resembles most),
  and DIF's own rule is applied once more: the nearer of the two centres of that score on the held-out
  images (reals, and fakes of every seen generator). ``p_fake`` is the sigmoid of that centre score
  (monotone, so AUC and AP read the order; ``p_fake > 0.5`` is the nearest-centre rule). Taking any
  fingerprint's own decision instead would let every weak fingerprint flag half of the real images.
- Low budget: ``dif_budgets`` trains again with that many training images per class and generator, for the
  same number of epochs (so fewer steps, as the reference would with fewer files); the centres still come from
  the same held-out images, and the mean real residual from all real training images (real photos are not
  what is scarce).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from dfxlib.data.batches import ImageStore, order
from dfxlib.data.perturb import Perturbation
from dfxlib.data.split import Split, split_id, train_val
from dfxlib.detectors.difnet import (BATCH, LR, PASSES, SIGMA0, WEIGHT_DECAY, DIFNet, centre_score, centres,
                                     correlation, fourier_picture, margin_for, residuals, step, stretch)
from dfxlib.detectors.training import training_rows
from dfxlib.evaluation.generalization import equal_sample
from dfxlib.evaluation.metrics import binary_scores, pct
from dfxlib.evaluation.scoring import Detector, memoized
from dfxlib.models.train import CheckpointMismatch, FitResult, device_of, fit, load_weights, read_meta, save_weights
from dfxlib.run import Checkpoints, Run


# -------------------------------------------------------------------------------------------- training
@dataclass
class Fingerprint:
    """One generator's trained fingerprint: (3, crop, crop), its held-out centres, and where it lives."""

    generator: str
    budget: str
    n_train: int
    net: DIFNet
    mu_real: float
    mu_fake: float
    folder: Path
    fit: FitResult | None = None

    def scores(self, r: torch.Tensor) -> np.ndarray:
        """centre_score of residuals `r` (mean real residual already subtracted)."""
        return centre_score(correlation(self.net.fingerprint, r).cpu().numpy(), self.mu_real, self.mu_fake)


def budget_tag(n: int | None) -> str:
    """'all' for the full training set, 'n<k>' for k images per class."""
    return "all" if n is None else f"n{n}"


def pools(split: Split, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and held-out parts of the images DIF may learn from: base and fusion splits (what every
    detector trains on), `target` 1 for fake, the held-out part drawn per generator (seeded) so that every
    fingerprint has held-out images for its centres."""
    return train_val(training_rows(split), val_fraction, seed, by="generator")


def _balanced(fakes: pd.DataFrame, reals: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` fakes and `n` reals (as equally from every real source as sizes allow), seeded, in a fixed order."""
    f = fakes.sample(n=min(n, len(fakes)), random_state=seed)
    r = equal_sample(reals, "generator", len(f), seed)
    return pd.concat([f, r], ignore_index=True).sort_values("path").reset_index(drop=True)


def train_fingerprint(run: Run, store: ImageStore, split: Split, generator: str, budget: int | None = None,
                      mean: torch.Tensor | None = None) -> Fingerprint:
    """Train (or resume, or reuse) the fingerprint of `generator` on at most `budget` (default
    `dif_train_size`) training images per class; centres from the held-out part."""
    cfg = run.config
    dev = device_of(cfg.device)
    tr, va = pools(split, cfg.val_fraction, cfg.seed)
    n = budget or cfg.dif_train_size
    fit_rows = _balanced(tr[tr["generator"] == generator], tr[tr["target"] == 0], n, cfg.seed)
    va_fakes = va[va["generator"] == generator]
    held = _balanced(va_fakes, va[va["target"] == 0], len(va_fakes), cfg.seed)
    if fit_rows["target"].nunique() < 2 or held["target"].nunique() < 2:
        raise ValueError(f"DIF {generator}: needs fake and real images in both the training and held-out "
                         f"parts (has {len(fit_rows)} training, {len(held)} held-out)")
    if mean is None:
        mean = mean_residual(run, store, split)
    net = DIFNet(cfg.dif_crop, cfg.seed)
    net.mean_residual.copy_(mean)
    r_fit = residuals(store, list(fit_rows["path"]), cfg.dif_crop, mean).to(dev)
    y_fit = torch.as_tensor(fit_rows["target"].to_numpy().copy()).to(dev)
    r_held = residuals(store, list(held["path"]), cfg.dif_crop, mean).to(dev)
    y_held = torch.as_tensor(held["target"].to_numpy().copy()).to(dev)
    mix = torch.as_tensor(order(len(held), cfg.seed, 0))  # a fixed shuffle: validation pairs mix the classes

    def train_batches(epoch: int) -> Iterator:  # fit's epoch e holds passes 5(e-1)+1 .. 5e over the images
        for p in range((epoch - 1) * PASSES + 1, min(epoch * PASSES, cfg.dif_epochs) + 1):
            idx = torch.as_tensor(order(len(fit_rows), cfg.seed, p))
            for i in range(0, len(idx), BATCH):
                j = idx[i:i + BATCH]
                if len(j) >= 2:
                    yield r_fit[j], y_fit[j]

    tag = budget_tag(budget)
    folder = run.checkpoints.fingerprint(tag, generator)
    meta = {"model": "dif", "generator": generator, "budget": tag, "n_train": len(fit_rows), "crop": cfg.dif_crop,
            "residual": f"wiener3/{SIGMA0:.6f}", "margin": margin_for(cfg.dif_crop), "passes": cfg.dif_epochs,
            "name": f"dif/{tag}/{generator}", "split": split_id(split)}
    # every epoch is run (the reference's rule; the EMA's first epochs are too noisy for early stopping)
    result = fit(net, step, train_batches, lambda: [(r_held[mix], y_held[mix])], folder, meta,
                 epochs=-(-cfg.dif_epochs // PASSES), lr=LR, weight_decay=WEIGHT_DECAY, seed=cfg.seed, patience=0,
                 device=dev, amp=False, progress=run.progress, config_json=cfg.to_json(), optimizer="adamw")
    load_weights(net, folder / "best.safetensors", meta)
    net.eval()
    with torch.no_grad():
        mu_real, mu_fake = centres(correlation(net.fingerprint, r_held), y_held)
    return Fingerprint(generator=generator, budget=tag, n_train=len(fit_rows), net=net, mu_real=mu_real,
                       mu_fake=mu_fake, folder=folder, fit=result)


def mean_residual(run: Run, store: ImageStore, split: Split) -> torch.Tensor:
    """(1, 3, crop, crop) mean residual of the real images of the training part (the reference's
    clean_real.npy)."""
    tr, _ = pools(split, run.config.val_fraction, run.config.seed)
    reals = sorted(tr.loc[tr["target"] == 0, "path"])
    total = torch.zeros(1, 3, run.config.dif_crop, run.config.dif_crop)
    for i in range(0, len(reals), 1024):
        total += residuals(store, reals[i:i + 1024], run.config.dif_crop).sum(0, keepdim=True)
    return total / max(len(reals), 1)


def seen_generators(split: Split) -> list[str]:
    """The fake generators of the training part: one fingerprint each."""
    rows = pd.concat([split.rows("base"), split.rows("fusion")])
    return sorted(rows.loc[rows["family"] != "real", "generator"].unique())


def train_fingerprints(run: Run, store: ImageStore, split: Split,
                       budget: int | None = None) -> list[Fingerprint]:
    """One fingerprint per seen generator (reused once trained)."""
    mean = mean_residual(run, store, split)
    return [train_fingerprint(run, store, split, g, budget, mean) for g in seen_generators(split)]


# ------------------------------------------------------------------------------------------- detection
def score_matrix(run: Run, store: ImageStore, fps: Sequence[Fingerprint], rels: Sequence[str],
                 perturb_fn: Perturbation | None = None) -> np.ndarray:
    """(N, G) centre scores of every image under every fingerprint (> 0: nearer that fake centre)."""
    if not fps:
        raise ValueError("no DIF fingerprints: train them first (train_fingerprints)")
    crop, mean = run.config.dif_crop, fps[0].net.mean_residual.cpu()
    out = []
    bar = tqdm(total=len(rels), desc="DIF scores", disable=not run.progress, leave=False)
    for i in range(0, len(rels), 1024):
        part = list(rels[i:i + 1024])
        out.append(fingerprint_scores(fps, residuals(store, part, crop, mean, perturb_fn, run.config.seed)))
        bar.update(len(part))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, len(fps)))


def fingerprint_scores(fps: Sequence[Fingerprint], r: torch.Tensor) -> np.ndarray:
    """(N, G) centre scores of residuals `r` (mean real residual subtracted) under every fingerprint."""
    return np.stack([fp.scores(r.to(fp.net.fingerprint.device)) for fp in fps], axis=1)


@dataclass
class Union:
    """The fingerprints as one real-vs-fake detector: an image's score is its largest centre score over the
    fingerprints, given the class of the nearer of two centres of that score on held-out images."""

    fingerprints: list[Fingerprint]
    mu_real: float
    mu_fake: float

    def p_fake(self, scores: np.ndarray) -> np.ndarray:
        """p(fake) from a score_matrix: sigmoid of the union's centre score (> 0.5: nearer the fake centre)."""
        return 1.0 / (1.0 + np.exp(-centre_score(scores.max(axis=1), self.mu_real, self.mu_fake)))


class UnionCentres(nn.Module):
    """The centres a union detector needs, as a checkpoint: row g holds fingerprint g's (real, fake) centres,
    the last row the union's."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("centres", torch.zeros(n + 1, 2, dtype=torch.float64))


def _identity(fp: Fingerprint) -> str:
    """A fingerprint's generator and the hash of its weights: what a saved union was computed with."""
    return f"{fp.generator}-{hashlib.sha256((fp.folder / 'best.safetensors').read_bytes()).hexdigest()[:12]}"


def union(run: Run, store: ImageStore, split: Split, fps: Sequence[Fingerprint]) -> Union:
    """The union detector of `fps`, its centres from the held-out part (reals and every seen generator's fakes);
    every centre is saved beside the fingerprints (`Checkpoints.dif_union`), for `dfx predict`."""
    _, held = pools(split, run.config.val_fraction, run.config.seed)
    top = score_matrix(run, store, fps, list(held["path"])).max(axis=1)
    mu_real, mu_fake = centres(torch.as_tensor(top), torch.as_tensor(held["target"].to_numpy().copy()))
    saved = UnionCentres(len(fps))
    saved.centres.copy_(torch.tensor([[fp.mu_real, fp.mu_fake] for fp in fps] + [[mu_real, mu_fake]]))
    save_weights(saved, run.checkpoints.dif_union(fps[0].budget),
                 {"model": "dif-union", "budget": fps[0].budget, "crop": run.config.dif_crop,
                  "fingerprints": [_identity(fp) for fp in fps], "split": split_id(split)})
    return Union(fingerprints=list(fps), mu_real=mu_real, mu_fake=mu_fake)


def load_union(checkpoints: Checkpoints, crop: int, tag: str = "all") -> Union:
    """The union detector saved by `union` at budget `tag`: its fingerprints and centres, checked to belong
    together (CheckpointMismatch names the fingerprint retrained since)."""
    path = checkpoints.dif_union(tag)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no DIF detector at budget {tag}; run notebook 06 first")
    meta = read_meta(path)
    names = meta.get("fingerprints")
    if meta.get("model") != "dif-union" or not isinstance(names, list) or not names:
        raise CheckpointMismatch(f"{path}: not the centres of a DIF union (model={meta.get('model')!r})")
    saved = load_weights(UnionCentres(len(names)), path, {"model": "dif-union", "budget": tag, "crop": crop})
    fps = []
    for k, ident in enumerate(names):
        generator = str(ident).rpartition("-")[0]
        folder = checkpoints.fingerprint(tag, generator)
        net = load_weights(DIFNet(crop, 0), folder / "best.safetensors",
                           {"model": "dif", "generator": generator, "budget": tag, "crop": crop}).eval()
        fp = Fingerprint(generator=generator, budget=tag, n_train=0, net=net, mu_real=float(saved.centres[k, 0]),
                         mu_fake=float(saved.centres[k, 1]), folder=folder)
        if _identity(fp) != ident:
            raise CheckpointMismatch(f"{folder}: this fingerprint is not the one the centres {path} were computed "
                                     "with (retrained, or copied from another run); run notebook 06 again")
        fps.append(fp)
    return Union(fingerprints=fps, mu_real=float(saved.centres[-1, 0]), mu_fake=float(saved.centres[-1, 1]))


def as_detector(run: Run, det: Union, name: str = "DIF (one fingerprint per seen generator)"):
    """The union detector as a row of the comparison and Table 4 (`evaluation.Detector`): p(fake) in the
    dm column."""
    def predict(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        p = det.p_fake(score_matrix(run, store, det.fingerprints, rels, fn))
        return np.stack([p, np.zeros_like(p), 1.0 - p], axis=1)
    return Detector(group="Detectors", name=name, predict=memoized(predict), models=[], paper_row="",
                    trained=[fp.folder for fp in det.fingerprints])


def fingerprint_table(run: Run, store: ImageStore, rows: pd.DataFrame,
                      fingerprints: dict[str, Sequence[Fingerprint]]) -> pd.DataFrame:
    """Per seen generator and training budget, its own fingerprint on its own test fakes and the real test
    images of `rows` (comparison_rows): training images per class, then the binary columns (balanced
    accuracy, ROC AUC and AP, each with its 95% interval; %). `fingerprints` maps a budget tag to one fingerprint per generator."""
    cfg = run.config
    rows = rows[rows["role"].isin(["seen", "real"])]
    out = []
    for tag, fps in fingerprints.items():
        s = score_matrix(run, store, fps, list(rows["path"]))
        for j, fp in enumerate(fps):
            part = ((rows["generator"] == fp.generator) | (rows["family"] == "real")).to_numpy()
            y = (rows["family"] != "real").to_numpy()[part].astype(int)
            if len(np.unique(y)) < 2:
                continue
            out.append({"generator": fp.generator, "budget": tag, "train per class": fp.n_train // 2,
                        **binary_scores(y, s[part, j], (s[part, j] > 0).astype(int), cfg.bootstrap, cfg.seed)})
    return pd.DataFrame(out)


def cross_table(run: Run, store: ImageStore, rows: pd.DataFrame, fps: Sequence[Fingerprint]) -> pd.DataFrame:
    """Fingerprint (row) x image generator (column) over `rows` (comparison_rows: seen, inner and unseen
    generators): % of that generator's fakes put nearer the fake centre, and % of the real images put nearer
    the real centre (column 'real'). Generators that share a fingerprint show up: DIF's model lineage."""
    s = score_matrix(run, store, fps, list(rows["path"]))
    fake = (rows["family"] != "real").to_numpy()
    out = []
    for j, fp in enumerate(fps):
        row: dict = {"fingerprint": fp.generator}
        for gen in sorted(rows.loc[fake, "generator"].unique()):
            row[gen] = pct(float((s[(rows["generator"] == gen).to_numpy() & fake, j] > 0).mean()))
        row["real"] = pct(float((s[~fake, j] <= 0).mean()))
        out.append(row)
    return pd.DataFrame(out)


def pictures(fps: Sequence[Fingerprint]) -> list[tuple[str, np.ndarray]]:
    """Each fingerprint as a picture (stretched to [0, 1]) and its Fourier picture, for plots.pictures."""
    out = []
    for fp in fps:
        f = fp.net.fingerprint[0].permute(1, 2, 0).cpu().numpy()
        out += [(f"{fp.generator}", stretch(f)), (f"{fp.generator}: Fourier", fourier_picture(f))]
    return out
