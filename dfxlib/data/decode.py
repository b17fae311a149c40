"""Reading image files safely: one inspection (header or full decode) and one RGB loader used everywhere.

Every failure is an `ImageError` whose message names the file and the reason. Readable images in unusual
modes (CMYK, 16-bit, palette, alpha, grayscale, animated) are converted to 8-bit RGB and the conversion is
described in a note, so the audit can list them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from dfxlib.config import DEFAULT_MAX_PIXELS

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MAX_FILE_BYTES = 512 * 2**20  # no image of the field comes near it; /dev/zero would fill memory

_MODE_NOTES = {
    "CMYK": "CMYK converted to RGB",
    "P": "palette image converted to RGB",
    "PA": "palette image with alpha converted to RGB (alpha dropped)",
    "RGBA": "alpha channel dropped",
    "RGBa": "alpha channel dropped",
    "LA": "grayscale with alpha converted to RGB (alpha dropped)",
    "L": "grayscale converted to RGB",
    "1": "1-bit image converted to RGB",
    "I": "32-bit integer image scaled to 8-bit RGB",
    "I;16": "16-bit image scaled to 8-bit RGB",
    "I;16B": "16-bit image scaled to 8-bit RGB",
    "I;16L": "16-bit image scaled to 8-bit RGB",
    "F": "floating-point image clipped to 8-bit RGB",
    "YCbCr": "YCbCr converted to RGB",
    "LAB": "LAB converted to RGB",
    "HSV": "HSV converted to RGB",
}


class ImageError(Exception):
    """An image file that cannot be used; `str()` names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageInfo:
    """What the index records of one file. `error` is "" for a usable image."""

    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    frames: int = 0
    bytes: int = 0
    sha256: str = ""
    note: str = ""
    error: str = ""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def read_file(path: str | Path, cap: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file (symbolic links followed), at most `cap` of them. A FIFO, a device (e.g. a
    link to /dev/zero), a socket or a folder is refused without blocking, as is a larger file: ImageError."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(path, f"not a regular file: {_kind(st.st_mode)}")
        if st.st_size > cap:
            raise ImageError(path, f"file too large ({st.st_size} bytes > {cap})")
        try:
            data = fh.read(cap + 1)
        except OSError as exc:
            raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if len(data) > cap:  # grew while being read
        raise ImageError(path, f"file too large (more than {cap} bytes)")
    return data


_limit_lock = threading.Lock()


@contextlib.contextmanager
def _own_limit() -> Iterator[None]:
    """Pillow's own bomb check off while opening a header: dfx's `max_pixels` is checked right after, so the
    setting decides (also above Pillow's hard limit) and the message is dfx's."""
    with _limit_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(data: bytes, path: Path, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings(), _own_limit():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (format not recognised)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(path, f"unreadable header ({exc})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError(path, f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(path, f"decompression bomb refused: {w}x{h} = {w * h} pixels > max_pixels={max_pixels}")
    return img


def _decode(img: Image.Image, path: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.seek(0)
            img.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(path, f"truncated or corrupt image data ({exc})") from None


def _tail_ok(data: bytes, fmt: str) -> bool:
    """Cheap truncation check for header-only indexing: PNG must end with its IEND chunk."""
    if fmt == "PNG":
        return data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
    if fmt == "JPEG":
        return b"\xff\xd9" in data[-1024:]
    return True


def _png_depth(data: bytes) -> int:
    """The bit depth a PNG's header declares (0 if `data` is not a PNG)."""
    return data[24] if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[12:16] == b"IHDR" else 0


def _notes(img: Image.Image, data: bytes = b"") -> str:
    notes = []
    if img.mode in ("RGB", "RGBA") and _png_depth(data) == 16:  # Pillow reads it as 8-bit and says nothing
        notes.append("16-bit colour PNG read as 8-bit")
    if img.mode != "RGB":
        notes.append(_MODE_NOTES.get(img.mode, f"mode {img.mode} converted to RGB"))
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated ({frames} frames): first frame used")
    return "; ".join(notes)


def inspect_file(path: str | Path, check: str = "full", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Hash and inspect one file; never raises for a bad image (the reason goes to `error`)."""
    path = Path(path)
    try:
        data = read_file(path)
    except ImageError as exc:
        return ImageInfo(error=exc.reason)
    base = dict(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    try:
        img = _open(data, path, max_pixels)
    except ImageError as exc:
        return ImageInfo(**base, error=exc.reason)
    info = dict(base, width=img.width, height=img.height, format=img.format or "", mode=img.mode,
                frames=getattr(img, "n_frames", 1), note=_notes(img, data))
    try:
        if check == "full":
            _decode(img, path)
        elif not _tail_ok(data, info["format"]):
            raise ImageError(path, "truncated file (missing end marker)")
    except ImageError as exc:
        return ImageInfo(**info, error=exc.reason)
    finally:
        img.close()
    return ImageInfo(**info)


#: rows of a 16- or 32-bit image converted at a time (`to_gray8`): no full-size float copy of a huge raster
STRIP_ROWS = 256


def to_gray8(img: Image.Image) -> Image.Image:
    """An `I`, `I;16*` or `F` image as 8-bit grayscale: 16-bit values (and `I` values above 255) scaled by
    1/257, rounded and clipped, a strip of rows at a time (a 9000-pixel 16-bit PNG once took 2.9 GB)."""
    arr = np.asarray(img)
    scale = img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255)
    out = np.empty(arr.shape, np.uint8)
    for i in range(0, arr.shape[0], STRIP_ROWS):
        block = arr[i:i + STRIP_ROWS].astype(np.float64)
        out[i:i + STRIP_ROWS] = np.clip(np.rint(block / 257.0 if scale else block), 0, 255)
    return Image.fromarray(out, mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (16-bit scaled, alpha dropped, palette expanded)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        return to_gray8(img).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `path` to an 8-bit RGB image (first frame if animated), or raise ImageError."""
    path = Path(path)
    return decode_rgb(read_file(path), path, max_pixels)


#: decodes of images above this many pixels run one at a time (their full raster is what costs memory)
LARGE_PIXELS = 4096 * 4096
_large = threading.Lock()


def decode_rgb(data: bytes, name: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode the bytes of an image file (e.g. an upload) to 8-bit RGB at its full size, or raise ImageError
    naming `name`: the one decode of training, evaluation and `dfx predict` (a model then reads it through
    `resize.resize_uint8`, which never copies the full raster). Images above `LARGE_PIXELS` are decoded one at
    a time, across threads (`decoded` keeps one held while it is used)."""
    with decoded(data, name, max_pixels) as img:
        return img


@contextlib.contextmanager
def decoded(data: bytes, name: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """`decode_rgb` for the duration of a block: an image above `LARGE_PIXELS` holds the one-at-a-time lock
    until the block ends (its decode and what the block does with it, e.g. resizing), so threads that decode
    large photos hold one full raster at a time between them."""
    path = Path(name)
    img = _open(data, path, max_pixels)
    if img.width * img.height <= LARGE_PIXELS:
        _decode(img, path)
        yield to_rgb(img)
        return
    with _large:
        _decode(img, path)
        img = to_rgb(img)  # the raster as decoded (16-bit: 162 MB at 9000 px) is not kept beside the RGB one
        yield img
