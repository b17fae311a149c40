"""The detectors DeepFeatureX is compared with, trained and evaluated on the same splits, one convention:
binary, one logit, fake = 1 (the positive class for recall, AUC and AP).

- ``simplecnn`` (the comparative study's baseline, defined here as it publishes no code): four blocks of
  Conv 3x3 (padding 1) + ReLU + MaxPool 2 with 32, 64, 128, 256 channels, flatten, FC 512 + ReLU + Dropout
  0.5, FC 1; PyTorch's default initialisation, seeded; trained from scratch.
- ``wang2020`` (CNNDetection, Blur+JPEG(0.5)): the detector backbone (ResNet50 in the paper profile) with
  `fc = Linear(D, 1)` initialised N(0, 0.02); training augmentation in the published order: resize, Gaussian
  blur with probability 0.5 and sigma ~ U[0, 3], JPEG with probability 0.5 and quality ~ U{30..100} (PIL only:
  the published cv2 branch is left out), random crop to 224/256 of the side, horizontal flip; evaluation:
  resize and centre crop.
- ``ganfingerprint``: a ResNet (`fingerprint_backbone`; ResNet34 in the paper profile) in three streams, a
  log-spectrum branch, self-attention, the fingerprint block and the residual classifier (see the class);
  only the new layers are initialised. Training augmentation here is a horizontal flip only (the reference's
  stack of crops, rotation, colour jitter, JPEG, noise, blur and erasing is not reproduced).
- ``ssp`` (Single Simple Patch): the simplest of 64 candidate 32x32 patches (sum of absolute differences in
  four directions, lowest wins) taken at native resolution, upsampled bilinearly to the input size, three
  fixed SRM filters (5x5, summed over RGB) truncated to [-3, 3], the backbone, one logit. Training draws 64
  random candidates (seeded per image and epoch); evaluation uses a fixed 8 x 8 grid of candidates, so a
  prediction is deterministic.

Every detector trains on the base and fusion splits (the images DeepFeatureX saw) with a seeded validation
part, BCE with the real:fake ratio as positive weight (balanced), and keeps minimum validation loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from torch import nn
from tqdm.auto import tqdm

from . import perturb
from .backbones import create_backbone, feature_dim, normalization, normalization_meta, resize_normalize
from .data import ImageStore, image_batches, image_seed, order
from .evaluation import Detector, memoized
from .gradcam import detector_cams, overlay
from .index import CLASSES
from .metrics import bootstrap_ci, fmt_ci, pct, score_metrics
from .perturb import Perturbation
from .run import Run
from .split import Split, split_id, train_val
from .train import FitResult, device_of, fit, load_weights

Transform = Callable[[Image.Image, int], torch.Tensor]  # (image, seed) -> tensor


# ------------------------------------------------------------------------------------------------ models
class SimpleCNN(nn.Module):
    """Four conv blocks (32-64-128-256), FC 512, dropout 0.5, one logit."""

    #: Grad-CAM's layer: the ReLU of the last conv block, before its pooling
    cam_layer_name = "convs.10"

    def __init__(self, input_size: int):
        super().__init__()
        chans = [3, 32, 64, 128, 256]
        self.convs = nn.Sequential(*[m for a, b in zip(chans, chans[1:])
                                     for m in (nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))])
        side = input_size // 16
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(256 * side * side, 512), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(512, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.convs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x))).squeeze(1)


class BackboneLogit(nn.Module):
    """A backbone and one logit, `fc` initialised N(0, 0.02) (CNNDetection)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(feature_dim(backbone), 1)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)).squeeze(1)


#: SSP's SRM filters (5x5): KB, KV and the horizontal second-order filter
SRM_FILTERS = np.stack([
    np.pad(np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], dtype=np.float32) / 4, 1),
    np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
             dtype=np.float32) / 12,
    np.pad(np.array([[1, -2, 1]], dtype=np.float32) / 2, ((2, 2), (1, 1))),
])


class SSPNet(BackboneLogit):
    """Patch (B, 3, 32, 32) -> bilinear upsampling to `input_size` -> fixed SRM filters, truncated to [-3, 3]
    -> backbone -> one logit."""

    def __init__(self, backbone: nn.Module, input_size: int):
        super().__init__(backbone)
        self.input_size = input_size
        kernel = torch.as_tensor(SRM_FILTERS)[:, None].repeat(1, 3, 1, 1)  # (3 out, 3 in, 5, 5): summed over RGB
        self.register_buffer("srm", kernel)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.backbone(F.hardtanh(F.conv2d(x, self.srm, padding=2), -3.0, 3.0))


class SelfAttention(nn.Module):
    """SAGAN self-attention: gamma * softmax(q^T k) v + x, gamma starting at 0."""

    def __init__(self, c: int):
        super().__init__()
        self.q, self.k, self.v = nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c // 8, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = torch.softmax(self.q(x).flatten(2).transpose(1, 2) @ self.k(x).flatten(2), dim=-1)  # (B, HW, HW)
        out = (self.v(x).flatten(2) @ attn.transpose(1, 2)).reshape(b, c, h, w)
        return self.gamma * out + x


class FingerprintBlock(nn.Module):
    """Frequency awareness (the same two 3x3 convolutions on x and on its high-pass x - avgpool3(x), summed;
    each branch with its own batch norms, where the reference shared them) then spatial attention and
    Dropout2d 0.1."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(4)])
        self.attn = nn.Conv2d(c, 1, 1)
        self.drop = nn.Dropout2d(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def branch(t: torch.Tensor, k: int) -> torch.Tensor:
            return self.bn[k + 1](self.conv2(F.relu(self.bn[k](self.conv1(t)))))
        y = F.relu(branch(x, 0) + branch(x - F.avg_pool2d(x, 3, 1, 1), 2))
        return self.drop(y * torch.sigmoid(self.attn(y)))


class FingerprintClassifier(nn.Module):
    """The residual classifier: 512 -> 512 -> 256 (+ a linear shortcut from the embedding) -> 128 -> 1."""

    def __init__(self, d: int = 512):
        super().__init__()

        def block(a: int, b: int, p: float) -> nn.Sequential:
            return nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b), nn.LeakyReLU(0.1), nn.Dropout(p))
        self.out1, self.out2, self.out3 = block(d, 512, 0.4), block(512, 256, 0.4), block(256, 128, 0.32)
        self.residual = nn.Linear(d, 256)
        self.last = nn.Linear(128, 1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.last(self.out3(self.out2(self.out1(e)) + self.residual(e)))


class GANFingerprint(nn.Module):
    """GANFingerprint: a ResNet split into low (stem + layer1), mid (layer2) and high (layer3 + layer4)
    streams, each pooled to the high stream's size and reduced to 128 channels; a frequency branch on the
    per-channel log-magnitude spectrum (rfft2, no shift); fusion to 256 channels, self-attention, the
    fingerprint block, global pooling, a 512-d embedding and the residual classifier (one logit). Only the new
    layers are initialised (Kaiming / N(0, 0.01)): the backbone keeps its weights (the reference wiped them)."""

    cam_layer_name = "fingerprint"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        bb = backbone
        self.low = nn.Sequential(bb.conv1, bb.bn1, bb.act1, bb.maxpool, bb.layer1)
        self.mid, self.high = bb.layer2, nn.Sequential(bb.layer3, bb.layer4)
        chans = [f["num_chs"] for f in bb.feature_info]  # stem, layer1, layer2, layer3, layer4

        def reduce(c: int, out: int = 128, k: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, out, k, padding=k // 2), nn.BatchNorm2d(out), nn.ReLU())
        new = nn.ModuleDict({
            "adapt_low": reduce(chans[1]), "adapt_mid": reduce(chans[2]), "adapt_high": reduce(chans[4]),
            "freq": nn.Sequential(reduce(3, 64, 3), reduce(64, 128, 3), nn.MaxPool2d(2), reduce(128, 256, 3),
                                  nn.MaxPool2d(2)),
            "fuse": reduce(640, 256, 3), "attention": SelfAttention(256), "fingerprint": FingerprintBlock(256),
            "embed": nn.Sequential(nn.Linear(256, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.4)),
        })
        for m in new.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight), nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01), nn.init.zeros_(m.bias)
        self.adapt_low, self.adapt_mid, self.adapt_high = new["adapt_low"], new["adapt_mid"], new["adapt_high"]
        self.freq, self.fuse, self.attention = new["freq"], new["fuse"], new["attention"]
        self.fingerprint, self.embed = new["fingerprint"], new["embed"]
        self.fc = FingerprintClassifier()
        for m in self.fc.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01), nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low(x)
        mid = self.mid(low)
        high = self.high(mid)
        size = high.shape[-2:]
        spectrum = torch.log(torch.fft.rfft2(x.float()).abs() + 1e-10)
        f = F.interpolate(self.freq(spectrum), size=size, mode="bilinear", align_corners=False)
        z = torch.cat([self.adapt_low(F.adaptive_avg_pool2d(low, size)), self.adapt_mid(F.adaptive_avg_pool2d(mid, size)),
                       self.adapt_high(high), f], dim=1)
        z = self.fingerprint(self.attention(self.fuse(z)))
        return self.embed(z.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)).squeeze(1)


# ------------------------------------------------------------------------------------------- transforms
PATCH = 32


def simplicity(patches: np.ndarray) -> np.ndarray:
    """SSP's L_div of (N, h, w, 3) uint8 patches: absolute differences horizontally, vertically and along
    both diagonals, summed over pixels and channels (lower = simpler)."""
    p = patches.astype(np.int64)
    return (np.abs(p[:, :, 1:] - p[:, :, :-1]).sum((1, 2, 3)) + np.abs(p[:, 1:] - p[:, :-1]).sum((1, 2, 3))
            + np.abs(p[:, 1:, 1:] - p[:, :-1, :-1]).sum((1, 2, 3)) + np.abs(p[:, 1:, :-1] - p[:, :-1, 1:]).sum((1, 2, 3)))


def simplest_patch(img: Image.Image, seed: int | None) -> Image.Image:
    """The simplest 32x32 patch of 64 candidates at native resolution: random positions from `seed` (training)
    or, with `seed=None`, an 8 x 8 grid (evaluation, deterministic). Images under 32 px are first resized to
    256 (as the reference)."""
    img = img.convert("RGB")
    if min(img.size) < PATCH:
        img = img.resize((256, 256), Image.Resampling.BILINEAR)
    a = np.asarray(img)
    h, w = a.shape[:2]
    if seed is None:
        ys, xs = np.meshgrid(np.linspace(0, h - PATCH, 8).round().astype(int),
                             np.linspace(0, w - PATCH, 8).round().astype(int), indexing="ij")
        ys, xs = ys.ravel(), xs.ravel()
    else:
        rng = np.random.default_rng(seed)
        ys, xs = rng.integers(0, h - PATCH + 1, 64), rng.integers(0, w - PATCH + 1, 64)
    cands = np.stack([a[y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs)])
    return Image.fromarray(cands[int(np.argmin(simplicity(cands)))])


def wang_augment(img: Image.Image, rng: np.random.Generator, prob: float = 0.5) -> Image.Image:
    """CNNDetection's data_augment: blur (sigma ~ U[0, 3]) with `prob`, then JPEG (quality ~ U{30..100}) with
    `prob` (PIL)."""
    if rng.random() < prob:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 3.0))))
    if rng.random() < prob:
        img = perturb.jpeg(img, int(rng.integers(30, 101)))
    return img


@dataclass(frozen=True)
class DetectorSpec:
    """A detector: its name in tables, how to build it, and its training and evaluation transforms. (The paper's
    Wang2020 row is the published model, trained elsewhere: shown apart, `paper.PAPER_ONLY`.)"""

    name: str
    display: str
    build: Callable[[Run], nn.Module]
    train_tf: Callable[[Run], Transform]
    eval_tf: Callable[[Run], Callable[[Image.Image], torch.Tensor]]


def _crop(run: Run) -> int:
    return round(run.config.input_size * 224 / 256)


#: whose normalisation SimpleCNN (no backbone, no pretrained weights) takes: ImageNet's, as every test model
_NO_BACKBONE = "test_resnet"


def _norm(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of a detector backbone's weights (ImageNet's for SimpleCNN, which has none)."""
    return normalization(backbone or _NO_BACKBONE)


def _backbone(run: Run, name: str) -> nn.Module:
    """A detector's backbone with the detectors' weights setting (`detector_pretrained`)."""
    return create_backbone(name, run.config.detector_pretrained)


def _wang_train(run: Run) -> Transform:
    size, crop = run.config.input_size, _crop(run)
    norm = resize_normalize(crop, 0, *_norm(run.config.detector_backbone))  # already `crop`: resize is identity

    def tf(img: Image.Image, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        img = wang_augment(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), rng)
        y, x = rng.integers(0, size - crop + 1, 2)
        img = img.crop((int(x), int(y), int(x) + crop, int(y) + crop))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return norm(img)
    return tf


def _flip_train(run: Run) -> Transform:
    norm = resize_normalize(run.config.input_size, 0, *_norm(run.config.fingerprint_backbone))

    def tf(img: Image.Image, seed: int) -> torch.Tensor:
        x = norm(img)
        return x.flip(-1) if np.random.default_rng(seed).random() < 0.5 else x
    return tf


def _ssp_train(run: Run) -> Transform:
    norm = resize_normalize(PATCH, 0, *_norm(run.config.detector_backbone))
    return lambda img, seed: norm(simplest_patch(img, seed))


def _ssp_eval(run: Run) -> Callable[[Image.Image], torch.Tensor]:
    norm = resize_normalize(PATCH, 0, *_norm(run.config.detector_backbone))
    return lambda img: norm(simplest_patch(img, None))


DETECTORS: dict[str, DetectorSpec] = {s.name: s for s in (
    DetectorSpec("simplecnn", "SimpleCNN", lambda run: SimpleCNN(run.config.input_size),
                 lambda run: (lambda img, seed, f=resize_normalize(run.config.input_size): f(img)),
                 lambda run: resize_normalize(run.config.input_size)),
    DetectorSpec("wang2020", "Wang2020 (ResNet, blur+JPEG)",
                 lambda run: BackboneLogit(_backbone(run, run.config.detector_backbone)), _wang_train,
                 lambda run: resize_normalize(run.config.input_size, _crop(run), *_norm(run.config.detector_backbone))),
    DetectorSpec("ganfingerprint", "GANFingerprint",
                 lambda run: GANFingerprint(_backbone(run, run.config.fingerprint_backbone)), _flip_train,
                 lambda run: resize_normalize(run.config.input_size, 0, *_norm(run.config.fingerprint_backbone))),
    DetectorSpec("ssp", "SSP (simplest patch + SRM)",
                 lambda run: SSPNet(_backbone(run, run.config.detector_backbone), run.config.input_size),
                 _ssp_train, _ssp_eval),
)}


def spec_of(name: str) -> DetectorSpec:
    """The detector called `name`; a clear error lists the known ones."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]


# --------------------------------------------------------------------------------------------- training
@dataclass
class TrainedDetector:
    """A detector's network (best weights, eval mode) and where it lives."""

    spec: DetectorSpec
    net: nn.Module
    folder: Path
    fit: FitResult | None = None


def detector_folder(run: Run, name: str) -> Path:
    """Checkpoint folder of the compared detector `name` (not created)."""
    return run.dir / "checkpoints" / "detectors" / name


def detector_meta(run: Run, split: Split, name: str) -> dict:
    """What identifies a trained detector (checked when resuming or loading)."""
    cfg = run.config
    backbone = {"simplecnn": "", "ganfingerprint": cfg.fingerprint_backbone}.get(name, cfg.detector_backbone)
    return {"model": "detector", "detector": name, "backbone": backbone, "input_size": cfg.input_size,
            "pretrained": cfg.detector_pretrained, "normalization": normalization_meta(backbone or _NO_BACKBONE),
            "name": f"detectors/{name}", "split": split_id(split)}


def new_detector(run: Run, name: str) -> nn.Module:
    """A detector with its seeded initial weights (what 'before training' means in the PCA figure)."""
    torch.manual_seed(run.config.seed)
    return spec_of(name).build(run)


def training_rows(split: Split) -> pd.DataFrame:
    """The images every detector trains on: base and fusion splits, `target` 1 for fake, 0 for real."""
    rows = pd.concat([split.rows("base"), split.rows("fusion")], ignore_index=True)
    return rows.assign(target=(rows["family"] != "real").astype(int))


def train_detector(run: Run, store: ImageStore, split: Split, name: str) -> TrainedDetector:
    """Train (or resume, or reuse) one detector; returns it with its minimum-validation-loss weights."""
    cfg = run.config
    spec = spec_of(name)
    dev = device_of(cfg.device)
    net = new_detector(run, name)
    tr, va = train_val(training_rows(split), cfg.val_fraction, cfg.seed)
    n_fake = max(int(tr["target"].sum()), 1)
    pos_weight = torch.tensor((len(tr) - n_fake) / n_fake, device=dev)  # real:fake, so both classes weigh alike
    train_tf, eval_tf = spec.train_tf(run), spec.eval_tf(run)

    def step(model: nn.Module, batch) -> tuple[torch.Tensor, float, int]:
        x, y = batch
        logit = model(x)
        loss = F.binary_cross_entropy_with_logits(logit, y.float(), pos_weight=pos_weight)
        return loss, float(((logit > 0).long() == y).sum()), len(y)

    def train_batches(epoch: int) -> Iterator:
        paths, ys = tr["path"].to_numpy(), tr["target"].to_numpy().copy()
        idx = order(len(tr), cfg.seed, epoch)
        for i in range(0, len(idx), cfg.batch_size):
            j = idx[i:i + cfg.batch_size]
            if len(j) < 2:  # batch norm (GANFingerprint's embedding) needs two samples
                continue
            x = torch.stack([train_tf(store.image(paths[k]), image_seed(cfg.seed * 1000 + epoch, paths[k]))
                             for k in j])
            yield x.to(dev), torch.as_tensor(ys[j]).to(dev)

    def val_batches() -> Iterator:
        paths, ys = list(va["path"]), va["target"].to_numpy().copy()
        for i in range(0, len(paths), cfg.batch_size):
            x = torch.stack([eval_tf(store.image(p)) for p in paths[i:i + cfg.batch_size]])
            yield x.to(dev), torch.as_tensor(ys[i:i + cfg.batch_size]).to(dev)

    folder = detector_folder(run, name)
    meta = detector_meta(run, split, name)
    epochs = cfg.fingerprint_epochs if name == "ganfingerprint" else cfg.detector_epochs
    result = fit(net, step, train_batches, val_batches, folder, meta, epochs=epochs,
                 lr=cfg.detector_lr, weight_decay=0.0, seed=cfg.seed, patience=cfg.patience, device=dev,
                 amp=cfg.amp, progress=run.progress, config_json=cfg.to_json())
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
    return Detector(group="Detectors", name=det.spec.display, predict=memoized(predict), models=[])


# ------------------------------------------------------------------------------------------- comparison
def comparison_rows(run: Run, index, split: Split) -> pd.DataFrame:
    """Images of the comparison: the test split (seen generators and real images) and the held-out inner and
    unseen generators; `role` is seen / inner / unseen for fakes, real for reals."""
    roles = run.generator_roles(index).set_index("generator")["role"]
    test = split.rows("test")
    held = split.rows("holdout")
    held = held[(held["family"] != "real") & held["generator"].map(roles).isin(["inner", "unseen"])]
    rows = pd.concat([test, held], ignore_index=True)
    role = rows["generator"].map(roles).fillna("seen")
    return rows.assign(role=role.where(rows["family"] != "real", "real")).sort_values("path").reset_index(drop=True)


def compare(store: ImageStore, rows: pd.DataFrame, detectors: Sequence) -> pd.DataFrame:
    """Per image and detector (`evaluation.Detector`s): p_fake and the binary prediction."""
    rels = list(rows["path"])
    out = []
    for det in detectors:
        probs = det.predict(store, rels, "raw", None)
        pred = (probs.argmax(1) != CLASSES.index("real")).astype(int)
        out.append(rows[["path", "family", "generator", "role"]].assign(
            detector=f"{det.group}: {det.name}", fake=(rows["family"] != "real").astype(int).to_numpy(),
            p_fake=1.0 - probs[:, CLASSES.index("real")], pred_fake=pred))
    return pd.concat(out, ignore_index=True)


def comparison_table(per_image: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per detector: accuracy (%) per generator and real source, then for seen and for unseen
    (inner + unseen) generators, each with all the real images: balanced accuracy, ROC AUC and AP with 95%
    bootstrap intervals."""
    rows = []
    for det, g in per_image.groupby("detector", sort=False):
        row: dict = {"detector": det}
        for gen, part in g.groupby("generator", sort=True):
            row[f"acc {gen}"] = pct(float((part["pred_fake"] == part["fake"]).mean()))
        for group, roles in (("seen", ["seen"]), ("unseen", ["inner", "unseen"])):
            part = g[g["role"].isin(roles + ["real"])]
            y, pred = part["fake"].to_numpy(), part["pred_fake"].to_numpy()
            rec = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
            s = score_metrics(y, part["p_fake"].to_numpy(), n_boot, seed)
            row.update({f"{group} balanced_accuracy": pct(float(np.mean(rec))),
                        f"{group} balanced_accuracy_ci95": fmt_ci(bootstrap_ci(y, pred, 2, "balanced_accuracy",
                                                                                n_boot, seed)),
                        f"{group} auc": pct(s["auc"]), f"{group} auc_ci95": fmt_ci(s["auc_ci"]),
                        f"{group} ap": pct(s["ap"]), f"{group} ap_ci95": fmt_ci(s["ap_ci"])})
        rows.append(row)
    return pd.DataFrame(rows)


def noise_verdict(table: pd.DataFrame, noise: str = "SSP") -> str:
    """The comparative study's conclusion tested on this data: does the noise-based detector (SSP: SRM
    noise residuals of the simplest patch) generalize better, i.e. is its balanced accuracy on unseen
    generators above every other detector's, beyond the 95% intervals?"""
    col, ci = "unseen balanced_accuracy", "unseen balanced_accuracy_ci95"
    mine = table[table["detector"].str.contains(noise, regex=False)]
    if mine.empty:
        return f"No {noise} row: the question cannot be answered here."
    m = mine.iloc[0]
    lo = float(m[ci].strip("[]").split(",")[0])
    others = table.drop(index=mine.index)
    best = others.loc[others[col].idxmax()]
    best_hi = float(best[ci].strip("[]").split(",")[1])
    if m[col] > best[col] and lo > best_hi:
        verdict = "yes: better than every other detector, beyond the intervals"
    elif m[col] > best[col]:
        verdict = "above every other detector, but within the intervals of the best one (not a clear yes)"
    else:
        verdict = "no"
    return (f"Does the noise-based detector generalize better? {verdict}. {m['detector']}: "
            f"{m[col]:.2f} {m[ci]} on unseen generators; best other: {best['detector']} {best[col]:.2f} "
            f"{best[ci]}.")


def gradcam_grid(run: Run, dets: Sequence[TrainedDetector], images: Sequence[Image.Image],
                 target: str = "fake") -> Image.Image:
    """Grad-CAM overlays of class `target`: one row per image, one column per detector (SSP's column shows
    the patch it chose), each tile labelled with the detector and the layer read."""
    tile, label = 128, 14
    grid = Image.new("RGB", (tile * len(dets), (tile + label) * len(images)), "white")
    draw = ImageDraw.Draw(grid)
    for c, det in enumerate(dets):
        tf = det.spec.eval_tf(run)
        x = torch.stack([tf(img) for img in images]).to(next(det.net.parameters()).device)
        maps, layer = detector_cams(det.net.eval(), x, target)
        for r, img in enumerate(images):
            shown = simplest_patch(img, None) if det.spec.name == "ssp" else img
            grid.paste(overlay(shown, maps[r]).resize((tile, tile), Image.Resampling.NEAREST),
                       (c * tile, r * (tile + label) + label))
            draw.text((c * tile + 2, r * (tile + label)), f"{det.spec.name}: {layer}", fill="black")
    return grid


def confusions(per_image: pd.DataFrame) -> list[tuple[str, np.ndarray, list[str]]]:
    """(detector, 2x2 confusion matrix with rows true real/fake and columns predicted real/fake, names) per
    detector of a `compare` table, for plots.confusion_matrices."""
    out = []
    for det, g in per_image.groupby("detector", sort=False):
        cm = np.zeros((2, 2), dtype=int)
        np.add.at(cm, (g["fake"].to_numpy(), g["pred_fake"].to_numpy()), 1)
        out.append((det, cm, ["real", "fake"]))
    return out


def pca_panels(run: Run, store: ImageStore, dets: Sequence[TrainedDetector],
               rows: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Penultimate features of each detector on `rows`, from its seeded initial weights and after training,
    with binary labels: the panels of the PCA figure (plots.pca_scatter)."""
    rels, y = list(rows["path"]), (rows["family"] != "real").astype(int).to_numpy()
    panels = []
    for d in dets:
        before = outputs(run, store, new_detector(run, d.spec.name), rels, name=d.spec.name)[1]
        panels += [(f"{d.spec.display}: before training", before, y),
                   (f"{d.spec.display}: after training", outputs(run, store, d, rels)[1], y)]
    return panels
