"""DIF's network and the signal it reads (see `dif` for the method): the residual extractor, the Pearson
correlation of a fingerprint with residuals, the contrastive loss and class centres, the U-Net that turns fixed
noise into the fingerprint, and the gray-image experiment that shows the U-Net's own pattern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from dfxlib.data.batches import ImageStore, image_batches
from dfxlib.data.perturb import Perturbation

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
    arr = np.asarray(img.crop((left, top, left + size, top + size)).convert("RGB"), dtype=np.float32)
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
