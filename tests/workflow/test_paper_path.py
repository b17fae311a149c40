"""The paper profile's path on CPU: each of the paper's 14 backbones, with its real architecture (random
weights) at the paper's input size and the paper profile's settings, takes one training step as an unbalanced
and as a Siamese base model, gives its pooled features, and feeds one fusion-head step."""

import math

import pytest
from PIL import Image

from dfxlib.config import resolve
from dfxlib.models.backbones import PAPER_BACKBONES, preprocess, spec
from dfxlib.workflow.throughput import calibrate

#: pooled feature width of each paper backbone (torchvision / timm architectures)
WIDTHS = {"densenet121": 1024, "densenet161": 2208, "densenet169": 1664, "densenet201": 1920,
          "efficientnet_b0": 1280, "efficientnet_b4": 1792, "resnet18": 512, "resnet34": 512, "resnet50": 2048,
          "resnet101": 2048, "resnet152": 2048, "resnext101": 2048, "vit_b16": 768, "vit_b32": 768}


def test_the_paper_has_fourteen_backbones():
    assert sorted(PAPER_BACKBONES) == sorted(WIDTHS)
    cfg = resolve("paper", {"data_root": "/data"})
    assert tuple(cfg.backbones) == PAPER_BACKBONES and cfg.input_size == 256
    # as the paper trained: all 50 epochs, weights of minimum validation loss, no early stopping, full precision
    assert (cfg.base_epochs, cfg.siamese_epochs, cfg.head_epochs, cfg.patience, cfg.amp) == (50, 50, 50, 0, False)
    assert resolve("paper", {"data_root": "/data", "amp": "true"}).amp is True  # asked for


@pytest.mark.parametrize("backbone", PAPER_BACKBONES)
def test_each_paper_backbone_runs_every_stage(backbone, tmp_path):
    cfg = resolve("paper", {"data_root": str(tmp_path)})
    c = calibrate(backbone, cfg, batch_size=2)
    assert c.input_size == 256 and c.feature_dim == WIDTHS[backbone]
    assert c.parameters > 3_500_000  # the real network (the smallest, EfficientNet b0, has 4.0 M), not a test toy
    assert all(math.isfinite(v) for v in c.losses.values()), c.losses
    assert c.updated == {"base": True, "siamese": True, "head": True}
    assert all(v > 0 for v in c.images_per_s().values())
    if spec(backbone).vit:  # a ViT sees the paper's 224 x 224 centre crop of the 256 px input
        assert preprocess(backbone, 256)(Image.new("RGB", (300, 200))).shape == (3, 224, 224)
