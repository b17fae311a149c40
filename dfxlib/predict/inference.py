"""Trained models on your own images: streaming prediction for any model `dfx predict` serves (`Served`: the
complete model of `predict.complete`, every other model of `predict.served`). `dfx predict` and notebook 07 both
go through `predict_items`.

- One image path: each file is decoded in full (`data.decode`) and each model prepares it as the notebooks do
  (`resize.resize_uint8` and the model's own normalisation, a detector its evaluation transform), so a model
  answers here what it answers in the tables, to float precision.
- Prediction streams: images are decoded and prepared in background threads, a batch at a time, and rows are
  yielded as they are ready (memory stays flat on any number of files; a large photo's raster is held by one
  thread at a time). An unreadable image gives a row with its error; the run goes on.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from dfxlib.config import DEFAULT_MAX_PIXELS
from dfxlib.data.decode import ImageError, decode_rgb, decoded, load_rgb, read_file
from dfxlib.data.index import CLASSES
from dfxlib.predict.files import iter_inputs

T = TypeVar("T")

#: columns of a prediction row (contributions only when asked)
COLUMNS = ["path", "p_dm", "p_gan", "p_real", "predicted", "p_fake", "error", "note"]
CONTRIB_COLUMNS = ["contrib_dm", "contrib_gan", "contrib_real", "driver"]
#: the cells of each model's column group when several models predict together
GROUP_CELLS = ["p_fake", "predicted"]


class Served(Protocol):
    """A trained model as `dfx predict` serves it: `prepare` one decoded image (in a decoding thread), `forward`
    a batch of prepared images to (B, 3) probabilities over CLASSES (a binary detector: p(fake) in the dm
    column and 1 - p(fake) in the real one, the convention of `evaluation.scoring`)."""

    name: str
    multiclass: bool
    input_size: int
    device: torch.device

    def prepare(self, img: Image.Image) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...


def decode(name: str, data: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """An RGB image from a file or from bytes (an upload), decoded as the notebooks decode it
    (`data.decode.decode_rgb`); ImageError names it and says why not."""
    return load_rgb(name, max_pixels) if data is None else decode_rgb(data, name, max_pixels)


def upscale_note(img: Image.Image, input_size: int) -> str:
    """A note for an image the model's resize enlarges (e.g. a 1x1 image), else ""."""
    w, h = img.size
    return f"upscaled from {w}x{h} to {input_size}x{input_size}" if min(w, h) < input_size else ""


# ------------------------------------------------------------------------------------------ prediction
@dataclass
class _Batch:
    """One decoded batch: names, errors ('' when fine), notes, and each model's input tensor of the good ones."""

    names: list[str]
    errors: list[str]
    notes: list[str]
    xs: list[torch.Tensor] | None


def _prepare(models: Sequence[Served], items: list[tuple[str, bytes | None]], max_pixels: int) -> _Batch:
    """Decode each image once and prepare it for every model."""
    inputs: list[list[torch.Tensor]] = [[] for _ in models]
    errors, notes = [], []
    size = max(m.input_size for m in models)
    for name, data in items:
        try:
            prepared, note = _inputs(models, name, data, max_pixels, size)
        except ImageError as exc:
            errors.append(exc.reason)
            notes.append("")
            continue
        except Exception as exc:  # anything else about one file must not stop the run
            errors.append(f"{type(exc).__name__}: {exc}")
            notes.append("")
            continue
        for k, x in enumerate(prepared):
            inputs[k].append(x)
        errors.append("")
        notes.append(note)
    return _Batch([n for n, _ in items], errors, notes, [torch.stack(x) for x in inputs] if inputs[0] else None)


def _inputs(models: Sequence[Served], name: str, data: bytes | None, max_pixels: int,
            size: int) -> tuple[list[torch.Tensor], str]:
    """Every model's input from one image, and its note. A large photo's raster lives only in this call, held
    until every model has its input: one at a time across threads."""
    with decoded(read_file(name) if data is None else data, name, max_pixels) as img:
        return [m.prepare(img) for m in models], upscale_note(img, size)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch: list = []
    for it in items:
        batch.append(it)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_items(models: Served | Sequence[Served], items: Iterable[tuple[str, bytes | None]],
                  batch_size: int = 64, explain: bool = False, workers: int = 2,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[dict]:
    """One row per item (name, bytes or None to read the file): for one model its probabilities, predicted
    class and p_fake (`COLUMNS`), for a list of models a p_fake and a predicted class per model (`columns`); an error
    for unreadable images, and with `explain` (one complete model) the base models' contributions. Decoding
    runs `workers` batches ahead in background threads."""
    grouped = isinstance(models, Sequence)
    models = list(models) if isinstance(models, Sequence) else [models]
    if explain and (grouped or not hasattr(models[0], "explain")):
        raise ValueError("explain needs one complete model (DeepFeatureX): it reads the fusion head's inputs")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: list = []
        for batch in batches(items, batch_size):
            pending.append(pool.submit(_prepare, models, batch, max_pixels))
            if len(pending) > workers:
                yield from _rows(models, pending.pop(0).result(), explain, grouped)
        for fut in pending:
            yield from _rows(models, fut.result(), explain, grouped)


def _cells(model: Served, p: np.ndarray) -> dict:
    """The prediction cells of one image: p_fake = 1 - p(real), the predicted class (fake or real for a
    binary detector), and a 3-class model's class probabilities."""
    cells = {"predicted": CLASSES[int(p.argmax())] if model.multiclass else ("fake" if p[2] < 0.5 else "real"),
             "p_fake": float(1.0 - p[2])}
    if model.multiclass:
        cells.update({f"p_{c}": float(p[k]) for k, c in enumerate(CLASSES)})
    return cells


def _rows(models: Sequence[Served], batch: _Batch, explain: bool, grouped: bool) -> list[dict]:
    good = [i for i, e in enumerate(batch.errors) if not e]
    out: dict[int, dict] = {i: {} for i in good}
    if batch.xs is not None:
        with torch.no_grad():
            for model, x in zip(models, batch.xs):
                if explain:
                    probs, contrib = model.explain(x)
                    contrib = contrib.numpy()
                    for j, i in enumerate(good):
                        out[i].update({f"contrib_{c}": float(contrib[j, k]) for k, c in enumerate(CLASSES)},
                                      driver=CLASSES[int(contrib[j].argmax())])
                else:
                    probs = model.forward(x)
                probs = probs.double().cpu().numpy()  # per-image cells from numpy: torch scalars cost microseconds
                for j, i in enumerate(good):
                    cells = _cells(model, probs[j])
                    out[i].update({f"{model.name}.{c}": cells[c] for c in GROUP_CELLS} if grouped else cells)
    cols = columns(models if grouped else models[0], explain)
    return [{c: "" for c in cols} | {"path": n, "error": batch.errors[i], "note": batch.notes[i]} | out.get(i, {})
            for i, n in enumerate(batch.names)]


def predict_paths(models: Served | Sequence[Served], inputs: Sequence[str], batch_size: int = 64,
                  explain: bool = False, workers: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[dict]:
    """`predict_items` over files, folders and globs (see `iter_inputs`)."""
    return predict_items(models, ((p, None) for p in iter_inputs(inputs)), batch_size, explain, workers, max_pixels)


def columns(models: Served | Sequence[Served], explain: bool = False, heatmaps: bool = False) -> list[str]:
    """The CSV columns of a prediction run: `COLUMNS` for one model, for a list of models the path, a column
    group per model (`<name>.p_fake`, `<name>.predicted`), the error and the note."""
    if not isinstance(models, Sequence):
        return COLUMNS + (CONTRIB_COLUMNS if explain else []) + (["heatmap"] if heatmaps else [])
    return ["path", *(f"{m.name}.{c}" for m in models for c in GROUP_CELLS), "error", "note"]


