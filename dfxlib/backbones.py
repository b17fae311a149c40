"""Backbones by the paper's names, through timm, and the one preprocessing function used everywhere.

Weights: ``pretrained="imagenet"`` (downloads through timm), a local weights file or a folder of files named
after the backbone (``<name>.safetensors``, ``.pth`` or ``.bin``), or ``"none"`` (random initialisation).
Feature width comes from the model (`num_features`), never from a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch, timm and torchvision are imported when a model is built, not with the registry
    import torch
    from PIL import Image
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its name here, the paper's name (for tables), the timm model, and whether it is a ViT."""

    name: str
    paper_name: str
    timm_name: str
    vit: bool = False


_SPECS = [
    BackboneSpec("densenet121", "DenseNet 121", "densenet121"),
    BackboneSpec("densenet161", "DenseNet 161", "densenet161"),
    BackboneSpec("densenet169", "DenseNet 169", "densenet169"),
    BackboneSpec("densenet201", "DenseNet 201", "densenet201"),
    BackboneSpec("efficientnet_b0", "EfficientNet b0", "efficientnet_b0"),
    BackboneSpec("efficientnet_b4", "EfficientNet b4", "efficientnet_b4"),
    BackboneSpec("resnet18", "ResNet 18", "resnet18"),
    BackboneSpec("resnet34", "ResNet 34", "resnet34"),
    BackboneSpec("resnet50", "ResNet 50", "resnet50"),
    BackboneSpec("resnet101", "ResNet 101", "resnet101"),
    BackboneSpec("resnet152", "ResNet 152", "resnet152"),
    BackboneSpec("resnext101", "ResNeXt 101", "resnext101_32x4d"),  # the reference's NVIDIA ResNeXt101-32x4d
    BackboneSpec("vit_b16", "ViT b16", "vit_base_patch16_224", vit=True),
    BackboneSpec("vit_b32", "ViT b32", "vit_base_patch32_224", vit=True),
    # small backbones for the mini and smoke profiles (timm's test models: random init, CPU-friendly; they take
    # the whole image, no ViT crop)
    BackboneSpec("test_convnext", "", "test_convnext"),
    BackboneSpec("test_vit", "", "test_vit"),
    BackboneSpec("test_efficientnet", "", "test_efficientnet"),
    BackboneSpec("test_resnet", "", "test_resnet"),
]
BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in _SPECS}
#: the paper's 14 backbones, in its order
PAPER_BACKBONES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.paper_name)


class BackboneError(RuntimeError):
    """A backbone cannot be built or its weights cannot be loaded; the message says what to do."""


def spec(name: str) -> BackboneSpec:
    """The spec of a backbone by its name here, its paper name or its timm name."""
    for s in _SPECS:
        if name in (s.name, s.paper_name, s.timm_name):
            return s
    raise BackboneError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")


def weights_file(name: str, pretrained: str) -> Path | None:
    """The local weights file `pretrained` points at for backbone `name` (a file, or a folder holding
    `<name>` or `<timm name>` with a weights suffix); None for "none" and "imagenet"."""
    if pretrained in ("none", "imagenet"):
        return None
    p = Path(pretrained).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        s = spec(name)
        for stem in (s.name, s.timm_name):
            for suf in WEIGHT_SUFFIXES:
                if (p / f"{stem}{suf}").is_file():
                    return p / f"{stem}{suf}"
        raise BackboneError(f"{p}: no weights for backbone {name!r} (expected {s.name}.safetensors or "
                            f"{s.timm_name}.pth there)")
    raise BackboneError(f"pretrained={pretrained!r}: not 'none', 'imagenet', a weights file or a folder of them")


def create_backbone(name: str, pretrained: str = "none") -> nn.Module:
    """A timm backbone without its classifier (`num_classes=0`: forward gives pooled features of width
    `model.num_features`)."""
    import timm

    s = spec(name)
    file = weights_file(name, pretrained)
    try:
        if file is not None:
            return timm.create_model(s.timm_name, pretrained=True, num_classes=0,
                                     pretrained_cfg_overlay=dict(file=str(file)))
        return timm.create_model(s.timm_name, pretrained=pretrained == "imagenet", num_classes=0)
    except Exception as exc:  # timm/hub raise many kinds for a failed download or a bad file
        where = f"from {file}" if file else "from the hub (internet needed)"
        raise BackboneError(
            f"cannot load {pretrained!r} weights for backbone {name!r} ({s.timm_name}) {where}: "
            f"{type(exc).__name__}: {exc}. Use a local weights file (pretrained=/path/to/{s.name}.safetensors "
            "or a folder of such files) or pretrained=none.") from exc


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features of a backbone made by `create_backbone` (timm's `head_hidden_size` where
    a pre-logits layer widens them, e.g. MobileNetV3, else `num_features`)."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def preprocess(name: str, input_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The preprocessing of a backbone, used by training, evaluation and inference alike: resize to
    input_size x input_size (aspect ratio not kept, as the paper), for ViTs a centre crop of 224/256 of
    it, then ImageNet normalisation."""
    return resize_normalize(input_size, round(input_size * 224 / 256) if spec(name).vit else 0)


def resize_normalize(input_size: int, crop: int = 0) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to input_size x input_size, centre crop to `crop` (0: none), ImageNet normalisation; works on
    a PIL image or a uint8 tensor batch."""
    import torch
    from torchvision.transforms import v2 as T

    steps: list = [T.ToImage(), T.Resize((input_size, input_size), antialias=True)]
    if crop:
        steps.append(T.CenterCrop(crop))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(steps)
