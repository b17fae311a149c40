"""Grad-CAM: which pixels drive a class, for the complete model (one map per base model: the gradient of the
chosen class's logit flows through the fusion head into each backbone's last feature map) and for a compared
detector (one map at the layer it names, else at its backbone's last feature map). The layer is always named
and the class always chosen.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dfxlib.data.index import CLASSES
from dfxlib.models.networks import CompleteModel


def cam_layer(backbone: nn.Module) -> tuple[str, nn.Module]:
    """The layer Grad-CAM reads in a timm backbone, by name: for ViTs the last block's first norm (its patch
    tokens, reshaped to the grid), else the last module to output a 4-D feature map (ResNet `layer4`,
    EfficientNet `bn2`, DenseNet `features`)."""
    if hasattr(backbone, "blocks") and getattr(backbone, "num_prefix_tokens", None) is not None:
        name = f"blocks.{len(backbone.blocks) - 1}.norm1"
        return name, backbone.get_submodule(name)
    done: list[str] = []
    names = {m: n for n, m in backbone.named_modules() if n}
    def seen(m: nn.Module, i, o) -> None:
        if torch.is_tensor(o) and o.dim() == 4 and min(o.shape[-2:]) > 1:  # a map, not a pooled 1x1
            done.append(names[m])
    hooks = [m.register_forward_hook(seen) for m in names]
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, 224, 224, device=next(backbone.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return done[-1], backbone.get_submodule(done[-1])


def _cam(act: torch.Tensor, grad: torch.Tensor, prefix: int, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM maps (B, H, W), not normalised, from activations and their gradients."""
    if act.dim() == 3:  # ViT tokens (B, N, C): drop the class/prefix tokens, reshape to the patch grid
        act, grad = act[:, prefix:], grad[:, prefix:]
        side = int(round(act.shape[1] ** 0.5))
        act = act.transpose(1, 2).reshape(act.shape[0], -1, side, side)
        grad = grad.transpose(1, 2).reshape(grad.shape[0], -1, side, side)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(1, keepdim=True))
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0].detach()


def grad_cam(forward: Callable[[torch.Tensor], torch.Tensor], layers: Sequence[tuple[nn.Module, int]],
             x: torch.Tensor, target: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Grad-CAM of the logit of class `target` (None: each image's predicted class) at each of `layers`
    ((module, number of prefix tokens)). Returns one (B, H, W) map per layer, scaled to [0, 1] by each
    image's largest value over all layers (so maps of several layers compare), and the classes explained."""
    acts: list[torch.Tensor | None] = [None] * len(layers)

    def keep(k: int):
        def hook(module, inputs, out):
            if not out.requires_grad:
                out.requires_grad_(True)  # frozen backbone: track gradients from here on
            acts[k] = out
            return out
        return hook
    hooks = [m.register_forward_hook(keep(k)) for k, (m, _) in enumerate(layers)]
    try:
        with torch.enable_grad():
            logits = forward(x)
            cls = logits.argmax(1) if target is None else torch.full((len(x),), int(target), device=logits.device)
            score = logits.gather(1, cls[:, None]).sum()
            grads = torch.autograd.grad(score, acts)
    finally:
        for h in hooks:
            h.remove()
    size = (x.shape[-2], x.shape[-1])
    maps = torch.stack([_cam(a, g, prefix, size) for a, g, (_, prefix) in zip(acts, grads, layers)])
    peak = maps.transpose(0, 1).flatten(1).max(1).values.clamp_min(1e-12)[None, :, None, None]
    return list((maps / peak).cpu().numpy()), cls.cpu().numpy()


def complete_cams(model: CompleteModel, x: torch.Tensor, target: str | None = None) -> dict:
    """Grad-CAM of a complete model for the preprocessed batch `x`, one map per base model. `target`: a class
    name, or None for each image's predicted class. Returns maps {dm, gan, real: (B, H, W)}, the layer names,
    the classes explained and the network input."""
    layers, names = [], []
    for b in model.bases:
        name, module = cam_layer(b)
        layers.append((module, int(getattr(b, "num_prefix_tokens", 0) or 0)))
        names.append(name)
    t = None if target in (None, "", "predicted") else CLASSES.index(target)

    def forward(inp: torch.Tensor) -> torch.Tensor:  # CompleteModel.features runs without gradients
        return model.head(torch.stack([b(inp) for b in model.bases], dim=1))
    maps, cls = grad_cam(forward, layers, x, t)
    return {"maps": dict(zip(CLASSES, maps)), "layers": dict(zip(CLASSES, names)),
            "classes": [CLASSES[c] for c in cls], "input": x}


def detector_cams(net: nn.Module, x: torch.Tensor, target: str = "fake") -> tuple[np.ndarray, str]:
    """Grad-CAM of a one-logit detector (dfxlib.detectors) for the class `target` ("fake": the logit,
    "real": its negation) at its last feature map: the layer the network names (`cam_layer_name`), else its
    backbone's `cam_layer`. Returns maps (B, H, W) in [0, 1] and the layer's name."""
    if hasattr(net, "cam_layer_name"):  # a network that names its own layer (SimpleCNN, GANFingerprint)
        name = net.cam_layer_name
        module, prefix = net.get_submodule(name), 0
    else:
        inner, module = cam_layer(net.backbone)
        name, prefix = f"backbone.{inner}", int(getattr(net.backbone, "num_prefix_tokens", 0) or 0)

    def forward(inp: torch.Tensor) -> torch.Tensor:
        logit = net(inp)
        return torch.stack([-logit, logit], dim=1)  # (real, fake)
    maps, _ = grad_cam(forward, [(module, prefix)], x, ["real", "fake"].index(target))
    return maps[0], name


def overlay(img: Image.Image, cam: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """`cam` (H, W in [0, 1]) as a heat overlay on `img` resized to the map's size."""
    from matplotlib import colormaps

    base = np.asarray(img.convert("RGB").resize(cam.shape[::-1], Image.Resampling.BILINEAR), dtype=np.float32)
    heat = colormaps["jet"](cam)[..., :3] * 255
    return Image.fromarray(np.clip((1 - alpha) * base + alpha * heat, 0, 255).astype(np.uint8))


def heatmap_panel(img: Image.Image, cams: dict, i: int, title: str = "") -> Image.Image:
    """One image beside its three base-model overlays (DM, GAN, REAL), with the layer and class named."""
    from PIL import ImageDraw

    side = cams["maps"]["dm"].shape[-1]
    tiles = [img.convert("RGB").resize((side, side))] + [overlay(img, cams["maps"][c][i]) for c in CLASSES]
    scale = max(1, 160 // side)
    w = side * scale
    panel = Image.new("RGB", (w * 4, w + 28), "white")
    for k, t in enumerate(tiles):
        panel.paste(t.resize((w, w), Image.Resampling.NEAREST), (k * w, 28))
    draw = ImageDraw.Draw(panel)
    labels = ["input"] + [f"{c.upper()} base: {cams['layers'][c]}" for c in CLASSES]
    for k, text in enumerate(labels):
        draw.text((k * w + 3, 14), text, fill="black")
    draw.text((3, 1), (title + " " if title else "") + f"Grad-CAM of class '{cams['classes'][i]}'", fill="black")
    return panel
