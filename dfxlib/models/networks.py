"""The networks of DeepFeatureX Net and DeepFeatureX-SN, and what identifies a trained base model.

- `BaseClassifier`: an unbalanced base model (a backbone and a linear layer: main class vs others), also the
  plain classifier baseline with `n_classes=3`.
- `SiameseNet`: a Siamese base model (one shared backbone, trained with `contrastive_loss`).
- `FusionHead`: the paper's 1-D CNN over the three base models' stacked features; `CompleteModel`: the three
  frozen backbones and the head.
- `LinearProbe`: a fitted standardised logistic regression on frozen features, as tensors (saved like a network).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dfxlib.data.index import CLASSES
from dfxlib.models.backbones import feature_dim

if TYPE_CHECKING:  # the networks do not depend on how they are trained
    from dfxlib.models.train import FitResult



class BaseClassifier(nn.Module):
    """A backbone and a linear layer: main class (1) vs others (0), or `n_classes` classes (plain classifier)."""

    def __init__(self, backbone: nn.Module, n_classes: int = 2):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(feature_dim(backbone), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


class SiameseNet(nn.Module):
    """One shared backbone; forward gives its pooled feature (what the fusion head reads). The contrastive loss
    compares `embedding`s of it: the feature's direction only."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def network(kind: str, backbone: nn.Module) -> nn.Module:
    """The network of a model of `kind` (`config.MODEL_KINDS`) on `backbone`, built in one place for training,
    loading and `dfx predict`: an unbalanced base model's main-vs-others classifier, the plain 3-class classifier,
    or the feature extractor of a Siamese base model and of the linear probe (whose backbone stays as it came)."""
    if kind == "unbalanced":
        return BaseClassifier(backbone)
    if kind == "plain":
        return BaseClassifier(backbone, n_classes=len(CLASSES))
    if kind in ("siamese", "linear probe"):
        return SiameseNet(backbone)
    raise ValueError(f"unknown model kind {kind!r}")


def embedding(features: torch.Tensor) -> torch.Tensor:
    """A Siamese embedding: pooled features scaled to unit norm, so distances lie in [0, 2] whatever the
    backbone's scale. (On raw pooled features, the reference's choice, two images start ~10x the margin apart
    and the loss is lowered fastest by shrinking every feature towards 0: measured on mini, mean |x| 0.003 and a
    fusion head at chance.)"""
    return F.normalize(features, dim=1)


def contrastive_loss(d: torch.Tensor, dissimilar: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """mean(0.5 (1-y) d^2 + 0.5 y max(0, m - d)^2) with y = 1 for a dissimilar pair."""
    y = dissimilar.float()
    return (0.5 * (1 - y) * d.pow(2) + 0.5 * y * F.relu(margin - d).pow(2)).mean()


#: how a fusion head's inputs are prepared (`FusionHead.set_input_stats`), recorded in its checkpoint's metadata
HEAD_INPUTS = "standardised"


def weights_id(path: Path) -> str:
    """12 hex digits that change whenever the weights file `path` changes: what keys the caches of a model's
    outputs (features, the complete models' probabilities)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


class FusionHead(nn.Module):
    """The paper's head: five 1-D convolutions (16, 64, 256, 512, 1024 channels; kernels 7, 5, 3, 3, 3;
    strides 2, 2, 1, 1, 1; padding 1), ReLU then batch norm after each but the last, global average pooling,
    a linear layer to 3 classes. Input (B, channels, D): one channel per base model.

    With `feature_dim`, each input feature is first standardised with the mean and std of the head's training
    features (`set_input_stats`; buffers saved with the weights): the convolutions slide one kernel over the
    features of base models whose scales differ by orders of magnitude (a Siamese model's against an unbalanced
    one's), and a head fed raw features can stay at chance (measured on mini). The paper feeds raw features."""

    def __init__(self, in_channels: int = 3, n_classes: int = 3, feature_dim: int = 0):
        super().__init__()
        if feature_dim:
            self.register_buffer("in_mean", torch.zeros(in_channels, feature_dim))
            self.register_buffer("in_std", torch.ones(in_channels, feature_dim))
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

    def set_input_stats(self, x: torch.Tensor) -> None:
        """Standardise inputs with the per-feature mean and std of `x` (N, channels, D); a constant feature
        keeps std 1."""
        std = x.std(0)
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "in_mean"):
            x = (x - self.in_mean) / self.in_std
        return self.classifier(self.pool(self.convs(x)).flatten(1))


class LinearProbe(nn.Module):
    """A fitted standardised logistic regression (scikit-learn's StandardScaler and LogisticRegression) as
    buffers, so it is saved as safetensors and applied by one formula everywhere: `forward` gives (N, n_classes)
    probabilities in float64, 0 for a class it never saw."""

    def __init__(self, dim: int, fitted: int, n_classes: int):
        super().__init__()
        rows = 1 if fitted == 2 else fitted  # scikit-learn keeps one row of weights for two classes
        for name, shape in (("mean", (dim,)), ("scale", (dim,)), ("weight", (rows, dim)), ("bias", (rows,))):
            self.register_buffer(name, torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("classes", torch.arange(fitted))
        self.n_classes = n_classes

    @classmethod
    def of(cls, pipeline, n_classes: int) -> "LinearProbe":
        """The probe of a fitted `make_pipeline(StandardScaler(), LogisticRegression(...))`."""
        scaler, lr = pipeline[0], pipeline[-1]
        probe = cls(lr.coef_.shape[1], len(lr.classes_), n_classes)
        for name, value in (("mean", scaler.mean_), ("scale", scaler.scale_), ("weight", lr.coef_),
                            ("bias", lr.intercept_), ("classes", lr.classes_)):
            getattr(probe, name).copy_(torch.as_tensor(value))
        return probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x.double() - self.mean) / self.scale) @ self.weight.T + self.bias
        p = torch.cat([1 - torch.sigmoid(z), torch.sigmoid(z)], 1) if len(self.weight) == 1 else F.softmax(z, 1)
        out = torch.zeros(len(x), self.n_classes, dtype=torch.float64)
        out[:, self.classes] = p
        return out


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


@dataclass
class BaseModel:
    """A trained network of one backbone as the feature cache and the tables know it: a base model (`kind`
    "unbalanced" or "siamese", `main` its class) or a baseline ("plain", "linear probe"; `main` "all"), with its
    backbone name and where it lives (`config.MODEL_KINDS`)."""

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
        return f"{self.backbone}-{self.kind}-{self.main}-{weights_id(self.folder / 'best.safetensors')}"
