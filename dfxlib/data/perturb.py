"""Image manipulations for the robustness tests: pure functions of (PIL image, seed) -> new PIL RGB image.

Applied in memory at evaluation time (no perturbed copies on disk). Names are the keys of `PERTURBATIONS`;
the frozen-feature cache is keyed by them.

- ``jpeg90`` ... ``jpeg50``: JPEG at that quality, 4:4:4 chroma (no subsampling), RGB first (the paper's test).
- ``blur3``, ``blur7``, ``blur15``: Gaussian blur with a k x k kernel and sigma from OpenCV's rule for a given
  kernel, sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8 (0.8, 1.4, 2.6); edges reflected (OpenCV's default). dfx's
  addition: what a kernel size usually means.
  ``blur3_sigma4`` ...: the reference code's blur, whose sigma is 4 for every kernel (it passed
  cv2.BORDER_DEFAULT, which equals 4, as sigmaX).
- ``noise5``, ``noise10``: additive Gaussian noise, standard deviation 5 or 10 grey levels, seeded (dfx's
  addition: the reference has no noise).
- ``scale50``, ``scale200``: resize to 50% (area average) or 200% (nearest, as OpenCV's INTER_AREA does when
  enlarging, which the reference used).
- ``mirror``: horizontal mirror (dfx's addition). ``rot180``: the reference's "mirror" (cv2.flip(img, -1) flips
  both axes, which is a 180-degree rotation).

The paper profile runs the reference's list (sigma-4 blurs, scalings, rot180, rotations); the OpenCV-rule blurs,
noise and the true mirror are dfx's additions (`evaluation.differences`).
- ``rot45``, ``rot135``: rotation about the centre keeping the canvas (corners black), bilinear.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

Perturbation = Callable[[Image.Image, int], Image.Image]
JPEG_QUALITIES: tuple[int, ...] = (90, 80, 70, 60, 50)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """JPEG bytes of `img` (converted to RGB) at `quality`, 4:4:4 chroma."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality), subsampling=0)
    return buf.getvalue()


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """`img` after a JPEG round trip at `quality` (4:4:4)."""
    out = Image.open(io.BytesIO(encode_jpeg(img, quality)))
    out.load()
    return out.convert("RGB")


def opencv_sigma(kernel: int) -> float:
    """OpenCV's sigma for a Gaussian kernel of size k when none is given: 0.3 ((k - 1) / 2 - 1) + 0.8."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def gaussian_kernel(kernel: int, sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of odd length `kernel`."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel must be odd and positive, got {kernel}")
    x = np.arange(kernel) - (kernel - 1) / 2
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_blur(img: Image.Image, kernel: int, sigma: float | None = None) -> Image.Image:
    """Separable k x k Gaussian blur (sigma: OpenCV's rule when None), edges reflected without repeating the
    border pixel (OpenCV's BORDER_REFLECT_101)."""
    g = gaussian_kernel(kernel, opencv_sigma(kernel) if sigma is None else sigma)
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    r = kernel // 2
    p = np.pad(a, ((r, r), (r, r), (0, 0)), mode="reflect")
    h, w = a.shape[:2]
    rows = sum(g[i] * p[i:i + h, :, :] for i in range(kernel))
    out = sum(g[j] * rows[:, j:j + w, :] for j in range(kernel))
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def gaussian_noise(img: Image.Image, std: float, seed: int) -> Image.Image:
    """Additive Gaussian noise of `std` grey levels, drawn from `seed`."""
    a = np.asarray(img.convert("RGB"), dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, std, a.shape)
    return Image.fromarray(np.clip(np.rint(a + noise), 0, 255).astype(np.uint8))


def scale(img: Image.Image, percent: int) -> Image.Image:
    """Resize to `percent`% (area average when shrinking, nearest when enlarging)."""
    img = img.convert("RGB")
    w, h = img.size
    size = (max(1, int(w * percent / 100)), max(1, int(h * percent / 100)))
    resample = Image.Resampling.BOX if percent < 100 else Image.Resampling.NEAREST
    return img.resize(size, resample)


def rotate(img: Image.Image, angle: float) -> Image.Image:
    """Rotate counter-clockwise about the centre, same canvas, bilinear, black corners."""
    return img.convert("RGB").rotate(angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=(0, 0, 0))


PERTURBATIONS: dict[str, Perturbation] = {
    **{f"jpeg{q}": (lambda img, seed, q=q: jpeg(img, q)) for q in JPEG_QUALITIES},
    **{f"blur{k}": (lambda img, seed, k=k: gaussian_blur(img, k)) for k in (3, 7, 15)},
    **{f"blur{k}_sigma4": (lambda img, seed, k=k: gaussian_blur(img, k, 4.0)) for k in (3, 7, 15)},
    **{f"noise{s}": (lambda img, seed, s=s: gaussian_noise(img, s, seed)) for s in (5, 10)},
    "scale50": lambda img, seed: scale(img, 50),
    "scale200": lambda img, seed: scale(img, 200),
    "mirror": lambda img, seed: ImageOps.mirror(img.convert("RGB")),
    "rot180": lambda img, seed: img.convert("RGB").rotate(180),
    "rot45": lambda img, seed: rotate(img, 45),
    "rot135": lambda img, seed: rotate(img, 135),
}


def get(name: str) -> Perturbation:
    """The perturbation called `name` (also ``jpegQ`` for any quality Q in 1..100); a clear error lists the
    known ones."""
    if name in PERTURBATIONS:
        return PERTURBATIONS[name]
    q = name[4:] if name.startswith("jpeg") else ""
    if q.isdigit() and 1 <= int(q) <= 100:  # any JPEG quality, e.g. the re-encoding of the wild evaluation
        return lambda img, seed, q=int(q): jpeg(img, q)
    raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(PERTURBATIONS)}")


def condition(variant: str) -> str:
    """The one label of a test condition in every table: 'RAW' for the images as they are, 'QF<q>' for JPEG at
    quality q (the paper's Tables 2-3), the perturbation's own name otherwise."""
    if variant == "raw":
        return "RAW"
    q = variant[4:] if variant.startswith("jpeg") else ""
    return f"QF{q}" if q.isdigit() else variant
