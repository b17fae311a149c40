"""The complete model (three frozen base models and the fusion head) on your own images: loading it from a run
folder with every consistency check, each base model's contribution to a decision, and Grad-CAM panels. It is
the default model of `dfx predict` and the one notebook 07 explains; prediction itself is
`inference.predict_items`, shared by every model.

- Loading reads safetensors only (never pickled code) and checks every file's metadata: a head and base models
  that do not belong together, another backbone, or another checkpoint format are clear errors.
- Contribution of a base model (DM, GAN, REAL) to one decision: the drop in the probability of the predicted
  class when that base model's features are replaced by zeros (occlusion at the fusion head's input).
- Grad-CAM panels (`dfxlib.predict.gradcam`): the input as the model sees it beside one map per base model.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from dfxlib.config import BASE_KINDS, DEFAULT_PROFILE, Config, ConfigError, runs_root
from dfxlib.data.index import CLASSES
from dfxlib.data.resize import resize_uint8
from dfxlib.models.backbones import create_backbone, feature_dim, normalization_meta, preprocess
from dfxlib.models.features import prepare_batch
from dfxlib.models.networks import HEAD_INPUTS, CompleteModel, FusionHead, network
from dfxlib.models.train import CheckpointMismatch, device_of, load_weights, read_meta
from dfxlib.predict.gradcam import complete_cams, heatmap_panel
from dfxlib.predict.inference import batches, decode, predict_items
from dfxlib.run import Checkpoints


@dataclass
class Predictor:
    """A complete model (three frozen base backbones + fusion head) ready for inference; its features are
    rounded to the run's `feature_dtype`, as the notebooks' feature cache holds them."""

    model: CompleteModel
    backbone: str
    kind: str
    input_size: int
    head_path: Path
    device: torch.device
    feature_dtype: torch.dtype = torch.float32
    multiclass: bool = True

    @cached_property
    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The backbone's preprocessing at the model's input size (built once)."""
        return preprocess(self.backbone, self.input_size)

    @property
    def name(self) -> str:
        return f"{self.backbone}/{self.kind}"

    def prepare(self, img: Image.Image) -> torch.Tensor:
        """The uint8 pixels the notebooks' pixel store holds for `img`."""
        return resize_uint8(img, self.input_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, D) base-model features of prepared images, as cached by the notebooks."""
        return self.model.features(self.transform(x.to(self.device))).to(self.feature_dtype).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model.head(self.features(x)), dim=1)

    def explain(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities and each base model's contribution (`contributions`) for prepared images."""
        feats = self.features(x)
        probs = F.softmax(self.model.head(feats), dim=1)
        return probs, contributions(self.model.head, feats, probs).cpu()


def contributions(head: FusionHead, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(B, 3) drop in the predicted class's probability when each base model's features are zeroed."""
    b, k, _ = feats.shape
    cls = probs.argmax(1)
    occluded = feats.unsqueeze(1).repeat(1, k, 1, 1)  # (B, k, k, D): copy j has base j zeroed
    idx = torch.arange(k)
    occluded[:, idx, idx] = 0
    p = F.softmax(head(occluded.reshape(b * k, k, -1)), dim=1).reshape(b, k, -1)
    return probs.gather(1, cls[:, None]) - p.gather(2, cls[:, None, None].expand(b, k, 1)).squeeze(2)


def find_head(model: str | Path = "", backbone: str = "", kind: str = "") -> Path:
    """The head checkpoint (best.safetensors) named by `model`: a run folder (its first trained backbone, in
    the run's order, and the unbalanced kind, unless given), a head folder, or the file itself. Default:
    runs/mini."""
    p = Path(model) if model else runs_root() / DEFAULT_PROFILE
    if p.is_file():
        return p
    if (p / "best.safetensors").is_file():
        return p / "best.safetensors"
    checkpoints = Checkpoints.of(p)
    heads = checkpoints.heads
    if not heads.is_dir():
        raise FileNotFoundError(f"{p}: not a run folder, head folder or checkpoint (no {heads}); train one with "
                                "`dfx run` (notebooks 02 and 03) or pass --model")
    order = list(run_setting(p, "backbones", ()))  # the run's own backbone order
    pattern = checkpoints.head(backbone or "*", kind or "*").relative_to(checkpoints.root)
    found = sorted(checkpoints.root.glob(f"{pattern}/best.safetensors"),
                   key=lambda f: (order.index(f.parts[-4]) if f.parts[-4] in order else len(order),
                                  f.parts[-3] != "unbalanced", str(f)))
    if not found:
        raise FileNotFoundError(f"{heads}: no trained complete model{' for ' + backbone if backbone else ''}"
                                f"{' / ' + kind if kind else ''}; run notebook 03 first")
    return found[0]


def load_predictor(model: str | Path = "", backbone: str = "", kind: str = "", device: str = "auto") -> Predictor:
    """Load a complete model from safetensors checkpoints (see `find_head`), checking that its head and its
    three base models belong together."""
    head_path = find_head(model, backbone, kind)
    meta = checked_head_meta(head_path)
    bb, kd = meta["backbone"], meta["kind"]
    checkpoints = Checkpoints.of_head(head_path)
    bases, input_size = [], None
    layout = run_setting(checkpoints.root.parent, "memory_format")  # the run's own: its notebooks' numbers exactly
    for main, ident in zip(CLASSES, meta["bases"]):
        path = checkpoints.base(bb, kd, main) / "best.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: base model {main} of {head_path} is missing")
        bmeta = read_meta(path)  # a file that is not a dfx checkpoint is said so, not "retrained"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        if not ident.endswith(digest):
            if path.stat().st_mtime > head_path.stat().st_mtime:
                raise CheckpointMismatch(f"{path}: this base model was retrained after the head {head_path} "
                                         f"(head expects {ident}); run notebook 03 again")
            raise CheckpointMismatch(f"{path}: not the base model the head {head_path} was trained with (head expects "
                                     f"{ident}, the file's weights hash to {digest}) although it is not newer than "
                                     "the head: damaged or copied from another run; restore it, or run notebooks 02 "
                                     "and 03 again")
        input_size = bmeta.get("input_size", input_size)
        if bmeta.get("normalization", normalization_meta(bb)) != normalization_meta(bb):
            raise CheckpointMismatch(f"{path}: trained with inputs normalised by mean/std {bmeta['normalization']}, "
                                     f"but dfx now feeds {bb} {normalization_meta(bb)} (its weights' own); "
                                     "retrain it (notebooks 02 and 03)")
        net = network(kd, create_backbone(bb, "none", layout))
        load_weights(net, path, {"model": "base", "backbone": bb, "kind": kd, "main": main})
        bases.append(net.backbone)
    head = FusionHead(in_channels=meta["in_channels"], feature_dim=feature_dim(bases[0]))
    load_weights(head, head_path, {"model": "head", "backbone": bb, "kind": kd, "inputs": HEAD_INPUTS})
    dev = device_of(device)
    model = CompleteModel(bases, head).to(dev).eval()
    return Predictor(model=model, backbone=bb, kind=kd, input_size=int(input_size or 256), head_path=head_path,
                     device=dev, feature_dtype=getattr(torch, run_setting(checkpoints.root.parent, "feature_dtype")))


def run_setting(run_dir: Path, name: str, default: Any = None) -> Any:
    """A setting of the run folder `run_dir` as its config.json records it; when the file or the setting is not
    there (a head copied out of its run), `default`, or the setting's own default."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}  # `run_dir` may be a head's file or folder
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable run settings ({exc})") from None
    default = getattr(Config(), name) if default is None else default
    return saved.get(name, default) if isinstance(saved, dict) else default


def checked_head_meta(path: Path) -> dict:
    """The metadata of a fusion head, checked field by field (CheckpointMismatch names the file and the field):
    model "head", the classes, a known backbone and kind, three base-model identities, an integer in_channels."""
    meta = read_meta(path)

    def bad(field: str, why: str) -> CheckpointMismatch:
        return CheckpointMismatch(f"{path}: head metadata field {field!r} {why}; this file was not written by "
                                  "notebook 03 of this dfx, train it again there")
    if meta.get("model") != "head":
        raise CheckpointMismatch(f"{path}: not a complete model's head (model={meta.get('model')!r})")
    if meta.get("classes") != list(CLASSES):
        raise CheckpointMismatch(f"{path}: classes {meta.get('classes')} differ from {list(CLASSES)}")
    for field in ("backbone", "kind", "bases"):
        if field not in meta:
            raise bad(field, "is missing")
    if not isinstance(meta["backbone"], str) or not meta["backbone"]:
        raise bad("backbone", f"is {meta['backbone']!r}, not a backbone name")
    if meta["kind"] not in BASE_KINDS:
        raise CheckpointMismatch(f"{path}: unknown base-model kind {meta['kind']!r}")
    bases = meta["bases"]
    if not (isinstance(bases, list) and len(bases) == len(CLASSES) and all(isinstance(b, str) for b in bases)):
        raise bad("bases", f"is {bases!r}, not the identities of the {len(CLASSES)} base models")
    channels = meta.get("in_channels", len(CLASSES))
    if isinstance(channels, bool) or not isinstance(channels, int) or channels != len(CLASSES):
        raise bad("in_channels", f"is {channels!r}, not {len(CLASSES)} (one channel per base model)")
    return dict(meta, in_channels=channels)


def _safe_stem(path: str) -> str:
    """A file's stem fit for a heatmap's name: control characters (a newline in a file name) and anything but
    letters, digits, '.', '-' and '_' become '_', at most 100 characters."""
    return re.sub(r"[^\w.-]", "_", Path(path).stem)[:100] or "image"


def seen(pred: Predictor, img: Image.Image) -> Image.Image:
    """What the model sees of a decoded image (its input pixels, before normalisation): the picture a Grad-CAM
    panel shows, and never a full-size photo held while panels are drawn."""
    return Image.fromarray(pred.prepare(img).permute(1, 2, 0).numpy())


def panels(pred: Predictor, rows: Sequence[dict], images: Sequence[Image.Image],
           target: str | None = None) -> list[Image.Image]:
    """A Grad-CAM panel (input and the three base models' maps) for each predicted row and its image."""
    if not rows:
        return []
    cams = complete_cams(pred.model, prepare_batch(list(images), pred.transform).to(pred.device), target)
    return [heatmap_panel(img, cams, j, f"{Path(r['path']).name}: {r['predicted']} (p_fake {r['p_fake']:.2f}).")
            for j, (r, img) in enumerate(zip(rows, images))]


def with_heatmaps(pred: Predictor, rows: Iterable[dict], folder: Path, target: str | None = None,
                  batch_size: int = 16) -> Iterator[dict]:
    """Pass `rows` through while writing a Grad-CAM panel PNG into `folder` for each readable image (a chunk
    at a time, so streaming is kept); the row gains the panel's path in `heatmap`."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for chunk in batches(rows, batch_size):
        good = [r for r in chunk if not r["error"]]
        for r, panel in zip(good, panels(pred, good, [seen(pred, decode(r["path"])) for r in good],
                                      target)):
            out = folder / f"{n:06d}_{_safe_stem(r['path'])}.png"
            panel.save(out)
            r["heatmap"] = str(out)
            n += 1
        yield from chunk


def inspect(pred: Predictor, items: Sequence[tuple[str, bytes | None]],
            target: str | None = None) -> tuple[list[dict], list[Image.Image]]:
    """What notebook 07 shows for some images (name, bytes or None to read the file): the prediction rows
    with the base models' contributions (the `dfx predict --explain` path) and a Grad-CAM panel per readable
    image."""
    rows = list(predict_items(pred, items, explain=True))
    good = [(r, seen(pred, decode(name, data))) for r, (name, data) in zip(rows, items) if not r["error"]]
    return rows, panels(pred, [r for r, _ in good], [img for _, img in good], target)
