"""MiniDFX's generators: auto-encoders whose decoders upsample one way (the GAN family) and small denoising
U-Nets sampled with DDIM from partial noise (SDEdit; the DM family), and how they are trained.

Two kinds exist only among the held-out ("unseen") generators, so that a detector meets a generator that
differs in kind from every one it trained on, as in the field:
- `UNetTranslator`: an image-to-image translator (pix2pix / CycleGAN's U-Net) whose skip connection carries
  half-resolution detail past the bottleneck: it lacks the softness every seen GAN (a plain auto-encoder)
  shares, and leaves a fingerprint of its own.
- latent diffusion (`LatentAE` + a `Denoiser` over its latents, as Stable Diffusion is built): the DM's
  noise and sampler act on a 4x smaller latent, and the pixels come from an auto-encoder's decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TRAIN_PATCH, TRAIN_BATCH = 32, 16  # generators train on random patches (they are fully convolutional)


class UpsampleAE(nn.Module):
    """Encoder (3 stride-2 convs) and a decoder whose 3 upsampling stages use one architecture."""

    def __init__(self, upsample: str, width: int = 16):
        super().__init__()
        w = width
        self.enc = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU())
        chans = [4 * w, 2 * w, w, w]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            if upsample == "tconv":
                layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1)]
            elif upsample == "pixelshuffle":
                layers += [nn.Conv2d(cin, cout * 4, 3, 1, 1), nn.PixelShuffle(2)]
            elif upsample in ("nearest", "bilinear"):
                layers += [nn.Upsample(scale_factor=2, mode=upsample), nn.Conv2d(cin, cout, 3, 1, 1)]
            else:
                raise ValueError(f"unknown upsampling {upsample!r}")
            layers.append(nn.ReLU())
        layers += [nn.Conv2d(w, 3, 3, 1, 1)]
        self.dec = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        z = self.enc(x)
        if noise:
            z = z + noise * torch.randn_like(z) * z.std()
        return torch.sigmoid(self.dec(z))


class UNetTranslator(nn.Module):
    """An image-to-image translator (pix2pix / CycleGAN's U-Net): the auto-encoder's path plus a skip connection
    that carries the input's half-resolution features past the bottleneck (dropout on it, in training and in
    generation, is pix2pix's noise). No full-resolution skip: with one it learns to copy its input."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.e1 = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1), nn.ReLU())
        self.e2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU())
        self.e3 = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU())
        self.d3 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(4 * w, 2 * w, 3, 1, 1), nn.ReLU())
        self.d2 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(4 * w, w, 3, 1, 1), nn.ReLU())
        self.out = nn.Conv2d(w, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        h2 = self.e2(self.e1(x))
        z = self.e3(h2)
        if noise:  # in training and in generation alike
            z = z + noise * torch.randn_like(z) * z.std()
            h2 = F.dropout(h2, 0.5, training=True)
        return torch.sigmoid(self.out(self.d2(torch.cat([self.d3(z), h2], 1))))


class LatentAE(nn.Module):
    """The auto-encoder of a latent diffusion model: 4x smaller latents with `channels` channels, decoded by
    two pixel-shuffle stages."""

    def __init__(self, width: int = 16, channels: int = 4):
        super().__init__()
        w = width
        self.enc = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1), nn.SiLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.SiLU(),
                                 nn.Conv2d(2 * w, channels, 3, 1, 1))
        self.dec = nn.Sequential(nn.Conv2d(channels, 2 * w, 3, 1, 1), nn.SiLU(),
                                 nn.Conv2d(2 * w, 4 * w, 3, 1, 1), nn.PixelShuffle(2), nn.SiLU(),
                                 nn.Conv2d(w, 4 * w, 3, 1, 1), nn.PixelShuffle(2), nn.SiLU(), nn.Conv2d(w, 3, 3, 1, 1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class Denoiser(nn.Module):
    """A small U-Net predicting the noise of x_t, conditioned on t by a per-channel embedding."""

    def __init__(self, width: int = 16, channels: int = 3):
        super().__init__()
        w = width
        self.temb = nn.Sequential(nn.Linear(1, w), nn.SiLU(), nn.Linear(w, 2 * w))
        self.inp = nn.Conv2d(channels, w, 3, 1, 1)
        self.down = nn.Conv2d(w, 2 * w, 3, 2, 1)
        self.mid = nn.Conv2d(2 * w, 2 * w, 3, 1, 1)
        self.up = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(2 * w, w, 3, 1, 1), nn.SiLU(), nn.Conv2d(w, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h0 = F.silu(self.inp(x))
        h = F.silu(self.down(h0)) + self.temb(t[:, None])[:, :, None, None]
        h = F.silu(self.mid(h))
        h = F.silu(self.up(h))
        return self.out(torch.cat([h, h0], dim=1))


def alpha_bar(schedule: str, T: int = 1000) -> torch.Tensor:
    """Cumulative signal fraction for a linear (DDPM) or cosine (improved DDPM) schedule."""
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, T)
        return torch.cumprod(1 - betas, 0)
    s = 0.008
    t = torch.linspace(0, 1, T + 1)
    f = torch.cos((t + s) / (1 + s) * torch.pi / 2) ** 2
    return (f[1:] / f[0]).clamp(1e-5, 1.0)


def train(model: nn.Module, loss_fn, data: torch.Tensor, steps: int, gen: torch.Generator) -> float:
    """Adam on random patches of `data` (N, 3, H, W) for `steps` steps; the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss = torch.tensor(0.0)
    patch = min(TRAIN_PATCH, data.shape[-1])
    for _ in range(steps):
        idx = torch.randint(len(data), (TRAIN_BATCH,), generator=gen)
        y, x = (int(v) for v in torch.randint(data.shape[-1] - patch + 1, (2,), generator=gen))
        loss = loss_fn(model, data[idx, :, y:y + patch, x:x + patch], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def ae_loss(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """An auto-encoder's L1 reconstruction loss."""
    return F.l1_loss(model(x), x)


#: the bottleneck noise (and skip dropout) of the translator, in training and generation
TRANSLATOR_NOISE = 0.3


def translator_loss(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A translator's L1 reconstruction loss through its noisy bottleneck and dropped-out skip."""
    return F.l1_loss(model(x, noise=TRANSLATOR_NOISE), x)


def make_dm_loss(abar: torch.Tensor, pixels: bool = True):
    """A denoiser's loss for schedule `abar`: MSE of the predicted noise at a random step. `pixels`: the data
    are images in [0, 1] (mapped to [-1, 1]); else latents already scaled to unit variance."""
    def loss(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        t = torch.randint(len(abar), (len(x),), generator=gen)
        eps = torch.randn(x.shape, generator=gen)
        a = abar[t][:, None, None, None]
        xt = a.sqrt() * (2 * x - 1 if pixels else x) + (1 - a).sqrt() * eps
        return F.mse_loss(model(xt, t.float() / len(abar)), eps)
    return loss


@torch.no_grad()
def sdedit(model: Denoiser, x: torch.Tensor, abar: torch.Tensor, strength: float, steps: int,
           gen: torch.Generator, pixels: bool = True) -> torch.Tensor:
    """Noise `x` (in [0,1], or unit-variance latents when not `pixels`) to t = strength*T, then denoise with a
    deterministic DDIM sampler in `steps`."""
    T = len(abar)
    ts = torch.linspace(int(strength * (T - 1)), 0, steps + 1).long()
    y = 2 * x - 1 if pixels else x
    a = abar[ts[0]]
    y = a.sqrt() * y + (1 - a).sqrt() * torch.randn(y.shape, generator=gen)
    for t, t_next in zip(ts[:-1], ts[1:]):
        a, a_next = abar[t], abar[t_next] if t_next > 0 else torch.tensor(1.0)
        eps = model(y, torch.full((len(y),), float(t) / T))
        y0 = (y - (1 - a).sqrt() * eps) / a.sqrt()
        y0 = y0.clamp(-1, 1) if pixels else y0.clamp(-4, 4)
        y = a_next.sqrt() * y0 + (1 - a_next).sqrt() * eps
    return ((y + 1) / 2).clamp(0, 1) if pixels else y
