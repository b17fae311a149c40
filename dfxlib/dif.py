"""DIF, Deep Image Fingerprint (Sinitsa & Fried, WACV 2024): a U-Net fed fixed noise produces an image F,
the fingerprint, trained so that the Pearson correlation of F with the noise residuals of images separates
one generator's fakes from real images; an image is then given the class of the nearer of two centres.

The reference's settings (Sergo2020/DIF_pytorch_official, summarised in section 4 of the project's
reference/METHODS.md) are the module constants below. Where the reference leaves a gap or has a bug, this
implementation chooses:

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

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from .data import ImageStore, image_batches, order
from .detectors import training_rows
from .evaluation import Detector, memoized
from .generalization import equal_sample
from .metrics import bootstrap_ci, fmt_ci, pct, score_metrics
from .perturb import Perturbation
from .run import Run
from .split import Split, split_id, train_val
from .train import FitResult, device_of, fit, load_weights

#: the reference's hyper-parameters (train_hypers.pt, trainer_dif.py)
NOISE_CHANNELS, NOISE_SCALE, JITTER = 16, 0.1, 0.03
BASE, DEPTH = 32, 4
BATCH, LR, WEIGHT_DECAY = 64, 5e-4, 0.01
MARGIN, EMA = 0.01, 0.99
#: passes over the training images per checkpoint and validation (the reference saves every 5 epochs): fit's
#: epochs for DIF are groups of PASSES of the reference's epochs (`dif_epochs` counts the reference's)
PASSES = 5
#: the gray-image experiment's learning rate (blank_experiment.py)
GRAY_LR = 5e-5
#: noise level of the Wiener residual extractor (images in [0, 1])
SIGMA0 = 5.0 / 255.0


# ------------------------------------------------------------------------------------------ residuals
def centre_crop(img: Image.Image, size: int) -> torch.Tensor:
    """(3, size, size) in [0, 1]: the centre of `img` at native resolution, zero-padded where it is smaller."""
    w, h = img.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    arr = np.asarray(img.convert("RGB").crop((left, top, left + size, top + size)), dtype=np.float32)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1) / 255.0


def wiener_residual(x: torch.Tensor) -> torch.Tensor:
    """Noise residual x - wiener(x) of (N, 3, H, W) images in [0, 1] (3x3 local Wiener filter, SIGMA0)."""
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    mu = F.avg_pool2d(p, 3, stride=1)
    var = (F.avg_pool2d(p * p, 3, stride=1) - mu * mu).clamp(min=SIGMA0 ** 2)
    return (x - mu) * (SIGMA0 ** 2 / var)


def residuals(store: ImageStore, rels: Sequence[str], crop: int, mean: torch.Tensor | None = None,
              perturb_fn: Perturbation | None = None, seed: int = 0) -> torch.Tensor:
    """(N, 3, crop, crop) residuals of images (perturbed first by `perturb_fn(image, seed)` when given), minus
    the mean real residual `mean` when given."""
    out = []
    for _, imgs in image_batches(store, rels, BATCH, seed, perturb_fn):
        out.append(wiener_residual(torch.stack([centre_crop(img, crop) for img in imgs])))
    r = torch.cat(out) if out else torch.zeros(0, 3, crop, crop)
    return r - mean if mean is not None else r


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each sample of `b` (N, C, H, W) with `a` (1 or N, C, H, W), as the reference
    computes it: per-sample standardisation (unbiased std + 1e-8), mean of the product."""
    def z(t: torch.Tensor) -> torch.Tensor:
        t = t.flatten(1)
        return (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-8)
    return (z(a) * z(b)).mean(1)


def margin_for(crop: int) -> float:
    """The loss margin at a crop side: the reference's 0.01 at 256 px, scaled by 256 / crop so that it keeps
    its ratio to the spread of chance correlations (about 1 / sqrt(3 crop^2)). At 64 px an unscaled margin
    sits inside that spread: most real/fake pairs already clear it by chance, and training only learns to
    be orthogonal to the training images' noise."""
    return MARGIN * 256.0 / crop


def contrastive_loss(rho: torch.Tensor, fake: torch.Tensor, margin: float = MARGIN) -> torch.Tensor:
    """The correlation contrastive loss: the first half of the batch paired with the second half (an odd
    last sample sits out); same-class pairs pulled together, others pushed `margin` apart; divided by margin."""
    h = len(rho) // 2
    differ = (fake[:h] != fake[h:2 * h]).float()
    d = (rho[:h] - rho[h:2 * h]).abs()
    return F.relu(differ * (margin - d) + (1.0 - differ) * d).mean() / margin


def centres(rho: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
    """(mu_real, mu_fake): mean correlation of each class (nan for an absent class)."""
    rho, fake = rho.float(), fake.bool()
    return (float(rho[~fake].mean()) if (~fake).any() else float("nan"),
            float(rho[fake].mean()) if fake.any() else float("nan"))


def centre_score(rho: torch.Tensor | np.ndarray, mu_real: float, mu_fake: float) -> np.ndarray:
    """+1 at the fake centre, -1 at the real one, > 0 where the fake centre is nearer (0 if they coincide)."""
    rho = np.asarray(rho, dtype=np.float64)
    half = (mu_fake - mu_real) / 2.0
    if not np.isfinite(half) or half == 0:
        return np.zeros_like(rho)
    return (rho - (mu_real + half)) / half


# --------------------------------------------------------------------------------------------- network
class ConvBlock(nn.Sequential):
    """Two (Conv 3x3, batch norm, LeakyReLU 0.01)."""

    def __init__(self, a: int, b: int):
        super().__init__(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.LeakyReLU(0.01),
                         nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.LeakyReLU(0.01))


def _up(c: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2), nn.BatchNorm2d(c))


class UNet(nn.Module):
    """The fingerprint generator: encoder 16-32-64-128-256 (skips before each max-pool), a middle block and
    transposed-conv upsampling, decoder blocks on every skip concatenated (512-128, 256-64, 128-32 each
    followed by upsampling, then 64-32), 1x1 conv to 3 channels, tanh. Input sides must divide by 2^depth."""

    def __init__(self, in_ch: int = NOISE_CHANNELS, out_ch: int = 3, base: int = BASE, depth: int = DEPTH):
        super().__init__()
        chans = [base * 2 ** i for i in range(depth)]
        self.down = nn.ModuleList(ConvBlock(a, b) for a, b in zip([in_ch] + chans[:-1], chans))
        self.middle = nn.Sequential(ConvBlock(chans[-1], chans[-1]), _up(chans[-1]))
        outs = chans[-2::-1] + [chans[0]]  # 128, 64, 32, 32
        self.up = nn.ModuleList(
            nn.Sequential(ConvBlock(2 * c, o), *([_up(o)] if i < depth - 1 else []))
            for i, (c, o) in enumerate(zip(chans[::-1], outs)))
        self.out = nn.Conv2d(chans[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.middle(x)
        for block, skip in zip(self.up, reversed(skips)):
            x = block(torch.cat([x, skip], 1))
        return torch.tanh(self.out(x))


class DIFNet(nn.Module):
    """The U-Net, its fixed noise input (seeded), the EMA fingerprint and the mean real residual (buffers,
    so a checkpoint holds everything detection needs)."""

    def __init__(self, crop: int, seed: int):
        super().__init__()
        if crop % 2 ** DEPTH:
            raise ValueError(f"dif_crop must be a multiple of {2 ** DEPTH}, got {crop}")
        torch.manual_seed(seed)  # the initial weights depend on the seed only, not on what ran before
        self.unet = UNet()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("noise", NOISE_SCALE * torch.rand(1, NOISE_CHANNELS, crop, crop, generator=g))
        self.register_buffer("fingerprint", torch.zeros(1, 3, crop, crop))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("mean_residual", torch.zeros(1, 3, crop, crop))

    def forward(self) -> torch.Tensor:
        """The generator's output for the noise input plus fresh jitter N(0, JITTER^2)."""
        return self.unet(self.noise + JITTER * torch.randn_like(self.noise))

    @torch.no_grad()
    def update(self, out: torch.Tensor) -> None:
        """Fingerprint EMA: the first output, then F <- EMA * F + (1 - EMA) * out."""
        if int(self.updates) == 0:
            self.fingerprint.copy_(out)
        else:
            self.fingerprint.mul_(EMA).add_((1.0 - EMA) * out)
        self.updates += 1


def step(model: DIFNet, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, float, int]:
    """fit()'s step: in training the generator's output (EMA updated), in evaluation the EMA fingerprint;
    'correct' is the nearest-centre rule with the batch's own centres."""
    r, fake = batch
    if model.training:
        out = model()
        model.update(out.detach())
    else:
        out = model.fingerprint
    rho = correlation(out, r)
    score = centre_score(rho.detach().cpu().numpy(), *centres(rho.detach(), fake))
    correct = float(((score > 0) == fake.cpu().numpy().astype(bool)).sum())
    return contrastive_loss(rho, fake, margin_for(r.shape[-1])), correct, len(fake)


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


def fingerprint_folder(run: Run, tag: str, generator: str) -> Path:
    """Checkpoint folder of the DIF fingerprint of `generator` at budget `tag` (`budget_tag`; not created)."""
    return run.dir / "checkpoints" / "dif" / tag / generator


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
    folder = fingerprint_folder(run, tag, generator)
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
        r = residuals(store, part, crop, mean, perturb_fn, run.config.seed)
        out.append(np.stack([fp.scores(r.to(fp.net.fingerprint.device)) for fp in fps], axis=1))
        bar.update(len(part))
    bar.close()
    return np.concatenate(out) if out else np.zeros((0, len(fps)))


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


def union(run: Run, store: ImageStore, split: Split, fps: Sequence[Fingerprint]) -> Union:
    """The union detector of `fps`, its centres from the held-out part (reals and every seen generator's fakes)."""
    _, held = pools(split, run.config.val_fraction, run.config.seed)
    top = score_matrix(run, store, fps, list(held["path"])).max(axis=1)
    mu_real, mu_fake = centres(torch.as_tensor(top), torch.as_tensor(held["target"].to_numpy().copy()))
    return Union(fingerprints=list(fps), mu_real=mu_real, mu_fake=mu_fake)


def as_detector(run: Run, det: Union, name: str = "DIF (one fingerprint per seen generator)"):
    """The union detector as a row of the comparison and Table 4 (`evaluation.Detector`): p(fake) in the
    dm column."""
    def predict(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        p = det.p_fake(score_matrix(run, store, det.fingerprints, rels, fn))
        return np.stack([p, np.zeros_like(p), 1.0 - p], axis=1)
    return Detector(group="Detectors", name=name, predict=memoized(predict), models=[], paper_row="")


def fingerprint_table(run: Run, store: ImageStore, rows: pd.DataFrame,
                      fingerprints: dict[str, Sequence[Fingerprint]]) -> pd.DataFrame:
    """Per seen generator and training budget, its own fingerprint on its own test fakes and the real test
    images of `rows` (comparison_rows): balanced accuracy with 95% interval and ROC AUC (%), training images
    per class. `fingerprints` maps a budget tag to one fingerprint per generator."""
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
            sc, pred = s[part, j], (s[part, j] > 0).astype(int)
            out.append({"generator": fp.generator, "budget": tag, "train per class": fp.n_train // 2,
                        "balanced_accuracy": pct(float(np.mean([(pred[y == c] == c).mean() for c in (0, 1)]))),
                        "balanced_accuracy_ci95": fmt_ci(bootstrap_ci(y, pred, 2, "balanced_accuracy",
                                                                      cfg.bootstrap, cfg.seed)),
                        "auc": pct(score_metrics(y, sc, 0)["auc"])})
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


def stretch(img: np.ndarray) -> np.ndarray:
    """Contrast stretch of the 1st-99th percentile range to [0, 1], clipped (a near-flat image's pattern
    becomes visible and a few outlying pixels do not wash it out)."""
    lo, hi = (float(v) for v in np.percentile(img, [1, 99]))
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(img)


# ----------------------------------------------------------------------------------------- pictures
def fourier_picture(img: np.ndarray) -> np.ndarray:
    """The reference's Fourier picture of an (H, W[, C]) image: |FFT| of the mean-removed gray image
    (norm='forward'), log, rescaled to [0, 1], shifted, to the 4th power."""
    g = img.mean(axis=2) if img.ndim == 3 else img
    f = np.log(np.abs(np.fft.fft2(g - g.mean(), norm="forward")) + 1e-12)
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-12)
    return np.fft.fftshift(f) ** 4


def grid_ratio(img: np.ndarray, period: int = 2 ** DEPTH) -> float:
    """Mean |FFT| at the frequencies of a pattern repeating every `period` pixels (multiples of side/period
    on both axes, DC left out) over the mean elsewhere: about 1 for noise, far above for the periodic
    artifacts of `DEPTH` stride-2 upsamplings."""
    g = img.mean(axis=2) if img.ndim == 3 else img
    mag = np.abs(np.fft.fft2(g - g.mean()))
    h, w = mag.shape
    on = np.zeros_like(mag, dtype=bool)
    on[np.ix_(np.arange(0, h, max(h // period, 1)), np.arange(0, w, max(w // period, 1)))] = True
    on[0, 0] = False
    off = ~on
    off[0, 0] = False
    return float(mag[on].mean() / max(float(mag[off].mean()), 1e-12))


@dataclass
class GrayResult:
    """The gray-image experiment: the final output (H, W, 3) in [0, 1], its Fourier picture, MSE per step."""

    image: np.ndarray
    fourier: np.ndarray
    losses: list[float]

    @property
    def grid_ratio(self) -> float:
        return grid_ratio(self.image)


def gray_experiment(size: int, steps: int, seed: int, progress: bool = False) -> GrayResult:
    """Fit the U-Net (noise input + jitter) to a flat gray image with MSE, AdamW lr GRAY_LR: what it cannot
    reproduce exactly is its architecture's own pattern (the reference's blank_experiment.py)."""
    torch.manual_seed(seed)
    net = DIFNet(size, seed)
    target = torch.full((1, 3, size, size), 0.5)
    opt = torch.optim.AdamW(net.unet.parameters(), lr=GRAY_LR)
    losses = []
    net.train()
    for _ in tqdm(range(steps), desc="gray image", disable=not progress, leave=False):
        loss = F.mse_loss(net(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        out = net().squeeze(0).permute(1, 2, 0).numpy()
    image = 0.5 * out + 0.5
    return GrayResult(image=image, fourier=fourier_picture(image), losses=losses)
