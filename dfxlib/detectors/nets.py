"""The compared detectors' networks: SimpleCNN, a backbone with one logit (Wang2020), SSP's SRM front end and
GANFingerprint's streams. Each gives `features(x)` (the penultimate layer) and `fc` (one logit), and names its
Grad-CAM layer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfxlib.models.backbones import feature_dim


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
