"""The paper path of one backbone, a step of each stage, timed: what a run of that backbone costs per image on
the machine at hand, and a check that every stage works with its real architecture at its input size.

For one backbone and the run's settings, on a batch of random images: one training step of an unbalanced base
model and of a Siamese one (the same step functions and optimizer settings as training), the pooled features
of the batch in evaluation mode, and one step of the fusion head on those features stacked three times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dfxlib.config import Config
from dfxlib.models.backbones import create_backbone, preprocess
from dfxlib.models.basemodels import siamese_step
from dfxlib.models.features import prepare_batch
from dfxlib.models.fusion import class_weights
from dfxlib.models.networks import FusionHead, network
from dfxlib.models.train import classifier_step, device_of


@dataclass
class Calibration:
    """Seconds per batch of each stage for one backbone, the batch it was measured on, and what it computed."""

    backbone: str
    input_size: int
    batch_size: int
    device: str
    parameters: int  # of the backbone
    feature_dim: int
    base_step_s: float  # one unbalanced base-model step (forward, backward, Adam)
    siamese_step_s: float  # one Siamese step (two forward passes per pair)
    features_s: float  # pooled features of the batch, evaluation mode, no gradients
    head_step_s: float  # one fusion-head step on the stacked features
    losses: dict[str, float]  # the loss of each step (finite when the stage works)
    updated: dict[str, bool]  # whether each step changed its model's weights

    def images_per_s(self) -> dict[str, float]:
        """Images per second of each stage (a Siamese step sees two images per pair)."""
        b = self.batch_size
        return {"base": b / self.base_step_s, "siamese": 2 * b / self.siamese_step_s,
                "features": b / self.features_s, "head": b / self.head_step_s}


def _timed_step(model: torch.nn.Module, step, batch, lr: float, weight_decay: float, steps: int = 1,
                warmup: int = 0) -> tuple[float, float, bool]:
    """Optimiser steps as `train.fit` takes them (Adam): the median seconds of `steps` timed ones after
    `warmup` untimed ones, the last loss, and whether any weight changed."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    model.train()
    times, loss = [], torch.zeros(())
    for k in range(warmup + steps):
        _sync(batch[0])
        t0 = time.perf_counter()
        loss, _, _ = step(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(batch[0])
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    after = [p for p in model.parameters() if p.requires_grad]
    return float(np.median(times)), float(loss.detach()), any(not torch.equal(a, b) for a, b in zip(before, after))


def _sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def calibrate(backbone: str, cfg: Config, batch_size: int = 0, device: str = "cpu", pretrained: str = "none",
              seed: int = 0, steps: int = 1, warmup: int = 0) -> Calibration:
    """Each stage of the paper path for `backbone` with the settings of `cfg` (input size, lr, weight decay,
    Siamese margin, head lr) on `batch_size` random images (default: `cfg.batch_size`), with weights
    `pretrained` ("none": random, nothing downloaded): `warmup` untimed then `steps` timed steps of each
    (median seconds)."""
    b = batch_size or cfg.batch_size
    dev = device_of(device)
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 256, (cfg.input_size, cfg.input_size, 3), dtype=np.uint8))
            for _ in range(2 * b)]
    tf = preprocess(backbone, cfg.input_size)
    x, x2 = prepare_batch(imgs[:b], tf).to(dev), prepare_batch(imgs[b:], tf).to(dev)
    y = torch.as_tensor(np.arange(b) % 2, device=dev)
    torch.manual_seed(seed)
    net = network("unbalanced", create_backbone(backbone, pretrained, cfg.memory_format)).to(dev)
    base_s, base_loss, base_upd = _timed_step(net, classifier_step(), (x, y), cfg.lr, cfg.weight_decay, steps,
                                              warmup)
    siam = network("siamese", net.backbone)
    siam_s, siam_loss, siam_upd = _timed_step(siam, siamese_step(cfg.siamese_margin), (x, x2, y), cfg.lr,
                                              cfg.weight_decay, steps, warmup)
    net.eval()
    times = []
    with torch.no_grad():
        for k in range(warmup + steps):
            _sync(x)
            t0 = time.perf_counter()
            feats = net.backbone(x)
            _sync(x)
            if k >= warmup:
                times.append(time.perf_counter() - t0)
    feat_s = float(np.median(times))
    head = FusionHead(in_channels=3).to(dev)
    stacked = torch.stack([feats.float()] * 3, dim=1)
    labels = torch.as_tensor(np.arange(b) % 3, device=dev)
    weight = class_weights(labels.cpu().numpy()).to(dev)
    head_s, head_loss, head_upd = _timed_step(head, classifier_step(weight), (stacked, labels), cfg.head_lr,
                                              cfg.weight_decay, steps, warmup)
    return Calibration(backbone=backbone, input_size=cfg.input_size, batch_size=b, device=str(dev),
                       parameters=sum(p.numel() for p in net.backbone.parameters()),
                       feature_dim=int(feats.shape[1]), base_step_s=base_s,
                       siamese_step_s=siam_s, features_s=feat_s, head_step_s=head_s,
                       losses={"base": base_loss, "siamese": siam_loss, "head": head_loss},
                       updated={"base": base_upd, "siamese": siam_upd, "head": head_upd})
