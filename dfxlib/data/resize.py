"""The one resize of a decoded image, shared by training, evaluation and `dfx predict` (no dfxlib import: the
backbones' preprocessing and the pixel store both use it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:  # torch is imported where it is used: `dfx --help` stays light
    import torch


#: rows of a large image resized at a time (`resize_uint8`): its full raster is never copied into a tensor
RESIZE_ROWS = 512


def resize_uint8(img: Image.Image | torch.Tensor, size: int) -> torch.Tensor:
    """(3, size, size) uint8: the resize every model's preprocessing applies to a decoded image (antialiased
    bilinear, aspect ratio not kept), on its own uint8 pixels; a uint8 tensor (3, H, W) is resized alike. An
    image taller than `RESIZE_ROWS` is resized across in strips of rows, then down: the two passes of the
    whole-image resize (across first, rounded to uint8 between them), so the same numbers, without a full-size
    tensor copy of a large photo."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    if isinstance(img, torch.Tensor):
        return TF.resize(img, [size, size], antialias=True)
    img = img if img.mode == "RGB" else img.convert("RGB")  # convert() copies even an RGB image: 243 MB at 9000 px
    w, h = img.size
    if h <= RESIZE_ROWS:
        return TF.resize(TF.pil_to_tensor(img), [size, size], antialias=True)
    strips = [TF.resize(TF.pil_to_tensor(img.crop((0, y, w, min(y + RESIZE_ROWS, h)))),
                        [min(RESIZE_ROWS, h - y), size], antialias=True) for y in range(0, h, RESIZE_ROWS)]
    return TF.resize(torch.cat(strips, dim=1), [size, size], antialias=True)
