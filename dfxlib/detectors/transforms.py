"""The compared detectors' image transforms: Wang2020's blur+JPEG augmentation, SSP's simplest patch, and each
detector's training transform (seeded per image and epoch) and evaluation transform."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

from dfxlib.data import perturb
from dfxlib.models.backbones import normalization, resize_normalize
from dfxlib.run import Run

Transform = Callable[[Image.Image, int], torch.Tensor]  # (image, seed) -> tensor
EvalTransform = Callable[[Image.Image], torch.Tensor]

PATCH = 32


def simplicity(patches: np.ndarray) -> np.ndarray:
    """SSP's L_div of (N, h, w, 3) uint8 patches: absolute differences horizontally, vertically and along
    both diagonals, summed over pixels and channels (lower = simpler)."""
    p = patches.astype(np.int16)  # differences of uint8 lie in [-255, 255]
    acc = np.int32 if 4 * 255 * p[0].size < 2 ** 31 else np.int64  # a patch's sum cannot overflow it

    def total(d: np.ndarray) -> np.ndarray:
        return np.abs(d).sum((1, 2, 3), dtype=acc)
    return (total(p[:, :, 1:] - p[:, :, :-1]) + total(p[:, 1:] - p[:, :-1])
            + total(p[:, 1:, 1:] - p[:, :-1, :-1]) + total(p[:, 1:, :-1] - p[:, :-1, 1:]))


def simplest_patch(img: Image.Image, seed: int | None) -> Image.Image:
    """The simplest 32x32 patch of 64 candidates at native resolution: random positions from `seed` (training)
    or, with `seed=None`, an 8 x 8 grid (evaluation, deterministic). Images under 32 px are first resized to
    256 (as the reference). The candidates are read from the image's array through one window view (64 PIL
    crops a call cost more than SSP's training step at 64 px)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    if min(img.size) < PATCH:
        img = img.resize((256, 256), Image.Resampling.BILINEAR)
    w, h = img.size
    if seed is None:
        ys, xs = np.meshgrid(np.linspace(0, h - PATCH, 8).round().astype(int),
                             np.linspace(0, w - PATCH, 8).round().astype(int), indexing="ij")
        ys, xs = ys.ravel(), xs.ravel()
    else:
        rng = np.random.default_rng(seed)
        ys, xs = rng.integers(0, h - PATCH + 1, 64), rng.integers(0, w - PATCH + 1, 64)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(img), (PATCH, PATCH), axis=(0, 1))
    cands = windows[ys, xs].transpose(0, 2, 3, 1)  # (64, PATCH, PATCH, 3)
    return Image.fromarray(np.ascontiguousarray(cands[int(np.argmin(simplicity(cands)))]))


def wang_augment(img: Image.Image, rng: np.random.Generator, prob: float = 0.5, sigma: tuple[float, float] = (0.0, 3.0),
                 quality: tuple[int, int] = (30, 100)) -> Image.Image:
    """CNNDetection's data_augment: blur (sigma ~ U`sigma`) with `prob`, then JPEG (quality ~ U{`quality`}) with
    `prob` (PIL). Its validation fixes each range at its middle (sigma 1.5, quality 65)."""
    if rng.random() < prob:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(*sigma))))
    if rng.random() < prob:
        img = perturb.jpeg(img, int(rng.integers(quality[0], quality[1] + 1)))
    return img


def crop_size(run: Run) -> int:
    return round(run.config.input_size * 224 / 256)


#: whose normalisation SimpleCNN (no backbone, no pretrained weights) takes: ImageNet's, as every test model
NO_BACKBONE = "test_resnet"


def norm_of(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of a detector backbone's weights (ImageNet's for SimpleCNN, which has none)."""
    return normalization(backbone or NO_BACKBONE)


def published(run: Run) -> bool:
    """Whether the detectors train and read images as their own code does (`detector_recipe="published"`)."""
    return run.config.detector_recipe == "published"


def _wang_side(img: Image.Image, size: int, keep_aspect: bool) -> tuple[int, int]:
    """CNNDetection's loadSize: the shorter side to `size` (`keep_aspect`), else dfx's square."""
    w, h = img.size
    return (max(size, round(w * size / min(w, h))), max(size, round(h * size / min(w, h)))) if keep_aspect \
        else (size, size)


def wang_train(run: Run) -> Transform:
    """Wang2020's training transform: resize (published: the shorter side to the input size, as CNNDetection's
    loadSize; shared: squashed to a square), blur + JPEG augmentation, random crop of 224/256 of the side,
    horizontal flip."""
    size, crop = run.config.input_size, crop_size(run)
    norm = resize_normalize(crop, 0, *norm_of(run.config.detector_backbone))  # already `crop`: resize is identity
    keep_aspect = published(run)

    def tf(img: Image.Image, seed: int) -> torch.Tensor:
        rng = np.random.default_rng(seed)
        img = img.convert("RGB")
        img = wang_augment(img.resize(_wang_side(img, size, keep_aspect), Image.Resampling.BILINEAR), rng)
        if img.width == img.height:  # one draw of both corners (the draws every shared-recipe table was made with)
            y, x = rng.integers(0, img.height - crop + 1, 2)
        else:
            y, x = rng.integers(0, img.height - crop + 1), rng.integers(0, img.width - crop + 1)
        img = img.crop((int(x), int(y), int(x) + crop, int(y) + crop))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return norm(img)
    return tf


def wang_eval(run: Run) -> EvalTransform:
    """Wang2020's evaluation transform: published, the centre crop of 224/256 of the input size from the image as
    it is (CNNDetection tests without resizing; a smaller image is zero-padded); shared, resized to the input
    size, then that centre crop."""
    crop, norm = crop_size(run), norm_of(run.config.detector_backbone)
    if not published(run):
        return resize_normalize(run.config.input_size, crop, *norm)
    at_crop = resize_normalize(crop, 0, *norm)  # already `crop`: resize is identity

    def tf(img: Image.Image) -> torch.Tensor:
        w, h = img.size
        left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
        return at_crop(img.crop((left, top, left + crop, top + crop)))
    return tf


def wang_val(run: Run) -> Transform | None:
    """Wang2020's validation transform, published: as CNNDetection validates (the shorter side to the input size,
    its blur and JPEG with probability 0.5 each at the middle of their ranges, sigma 1.5 and quality 65, drawn
    per image from `seed`, then the centre crop); shared: None (validated as tested)."""
    if not published(run):
        return None
    size, crop = run.config.input_size, crop_size(run)
    norm = resize_normalize(crop, 0, *norm_of(run.config.detector_backbone))

    def tf(img: Image.Image, seed: int) -> torch.Tensor:
        img = img.convert("RGB")
        img = img.resize(_wang_side(img, size, True), Image.Resampling.BILINEAR)
        img = wang_augment(img, np.random.default_rng(seed), sigma=(1.5, 1.5), quality=(65, 65))
        left, top = int(round((img.width - crop) / 2.0)), int(round((img.height - crop) / 2.0))
        return norm(img.crop((left, top, left + crop, top + crop)))
    return tf


def fingerprint_augment(img: Image.Image, seed: int, size: int) -> tuple[Image.Image, bool]:
    """GANFingerprint's training augmentation before its tensor steps, in its order: random resized crop to `size`
    (scale 0.8-1), horizontal flip, rotation up to 10 degrees (p 0.3), colour jitter (0.1, 0.1, 0.1, hue 0.05),
    JPEG at quality 60-95 (p 0.4), Gaussian noise of std 0.01-0.05 (p 0.3), PIL blur of radius 0.1-1.5 (p 0.3);
    and whether to erase a patch afterwards (p 0.2). Seeded by `seed` (torchvision's draws in a forked RNG)."""
    from torchvision.transforms import v2 as T

    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        img = T.Compose([T.RandomResizedCrop(size, scale=(0.8, 1.0), antialias=True), T.RandomHorizontalFlip(),
                         T.RandomApply([T.RandomRotation(10)], p=0.3),
                         T.ColorJitter(0.1, 0.1, 0.1, 0.05)])(img.convert("RGB"))
    if rng.random() < 0.4:
        img = perturb.jpeg(img, int(rng.integers(60, 96)))
    if rng.random() < 0.3:
        a = np.asarray(img, dtype=np.float64) / 255.0
        a = np.clip(a + rng.normal(0.0, rng.uniform(0.01, 0.05), a.shape), 0.0, 1.0)
        img = Image.fromarray(np.rint(a * 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.1, 1.5))))
    return img, bool(rng.random() < 0.2)


def fingerprint_train(run: Run) -> Transform:
    """GANFingerprint's training transform: published, its augmentation stack (`fingerprint_augment`, then
    random erasing of 2-15% of the image, then the normalisation); shared, a horizontal flip (`flip_train`)."""
    if not published(run):
        return flip_train(run)
    from torchvision.transforms import v2 as T

    size = run.config.input_size
    to_unit = resize_normalize(size, 0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # values in [0, 1], as ToTensor
    normalize = T.Normalize(*norm_of(run.config.fingerprint_backbone))

    def tf(img: Image.Image, seed: int) -> torch.Tensor:
        img, erase = fingerprint_augment(img, seed, size)
        x = to_unit(img)
        if erase:  # the reference erases (zeros) after ToTensor, before Normalize
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                x = T.RandomErasing(p=1.0, scale=(0.02, 0.15), value=0)(x)
        return normalize(x)
    return tf


def fingerprint_eval(run: Run) -> EvalTransform:
    """GANFingerprint's evaluation transform: published, the shorter side resized to the input size (PIL
    bilinear, the long side as torchvision computes it) and the centre square cropped, as its test transform;
    shared, the image squashed to the input size."""
    size, norm = run.config.input_size, norm_of(run.config.fingerprint_backbone)
    at_size = resize_normalize(size, 0, *norm)  # on an image already `size` square: no resize
    if not published(run):
        return at_size

    def tf(img: Image.Image) -> torch.Tensor:
        w, h = img.size
        short, long = min(w, h), max(w, h)
        new_long = max(size, int(size * long / short))
        img = img.resize((size, new_long) if w <= h else (new_long, size), Image.Resampling.BILINEAR)
        left, top = int(round((img.width - size) / 2.0)), int(round((img.height - size) / 2.0))
        return at_size(img.crop((left, top, left + size, top + size)))
    return tf


def flip_train(run: Run) -> Transform:
    norm = resize_normalize(run.config.input_size, 0, *norm_of(run.config.fingerprint_backbone))

    def tf(img: Image.Image, seed: int) -> torch.Tensor:
        x = norm(img)
        return x.flip(-1) if np.random.default_rng(seed).random() < 0.5 else x
    return tf


def ssp_train(run: Run) -> Transform:
    norm = resize_normalize(PATCH, 0, *norm_of(run.config.detector_backbone))
    return lambda img, seed: norm(simplest_patch(img, seed))


def ssp_eval(run: Run) -> Callable[[Image.Image], torch.Tensor]:
    norm = resize_normalize(PATCH, 0, *norm_of(run.config.detector_backbone))
    return lambda img: norm(simplest_patch(img, None))
