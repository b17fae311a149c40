"""Every model a run trains, as `dfx predict --detector` serves it: the complete models (DeepFeatureX Net and
-SN, `complete.Predictor`), the plain classifiers and linear probes of notebook 05, and the compared detectors
of notebook 06 (SimpleCNN, Wang2020, GANFingerprint, SSP and DIF), each read from the run folder's safetensors
checkpoints with its metadata checked, and each preparing an image with the function its notebook uses (a
detector's evaluation transform: Wang2020's centre crop, SSP's simplest patch at native resolution, DIF's
centre crop and noise residual).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dfxlib.config import DEFAULT_PROFILE, DETECTOR_NAMES, PREDICT_CHOICES, Config, load, runs_root
from dfxlib.data.index import CLASSES
from dfxlib.data.resize import resize_uint8
from dfxlib.detectors import dif
from dfxlib.detectors.difnet import centre_crop, wiener_residual
from dfxlib.detectors.registry import detector_meta, spec_of
from dfxlib.detectors.training import as_detector, train_detector
from dfxlib.evaluation.scoring import Detector, complete_detector
from dfxlib.models.backbones import create_backbone, feature_dim, normalization_meta, preprocess
from dfxlib.models.baselines import plain_detector, probe_detector, train_plain, train_probe
from dfxlib.models.fusion import load_complete_models
from dfxlib.models.networks import LinearProbe, network
from dfxlib.models.train import device_of, load_weights, read_meta
from dfxlib.predict.complete import load_predictor
from dfxlib.predict.inference import Served
from dfxlib.run import Checkpoints, Run


@dataclass
class Model:
    """A model other than the complete one, ready for `predict_items` (see `inference.Served`)."""

    name: str
    multiclass: bool
    input_size: int
    device: torch.device
    prepare_fn: Callable[[Image.Image], torch.Tensor]
    forward_fn: Callable[[torch.Tensor], torch.Tensor]

    def prepare(self, img: Image.Image) -> torch.Tensor:
        return self.prepare_fn(img)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(x.to(self.device))


def binary(p_fake: torch.Tensor) -> torch.Tensor:
    """(B, 3) in the convention of `evaluation.scoring`: p(fake) in the dm column, 1 - p(fake) in the real one."""
    p = p_fake.double()
    return torch.stack([p, torch.zeros_like(p), 1.0 - p], dim=1)


def run_config(run_dir: Path) -> Config:
    """The settings a run folder was trained with (its config.json); FileNotFoundError says what to pass."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json); pass --model with the folder "
                                "`dfx run` trained (the detectors are read from its checkpoints)")
    return load(path)


def _needs(path: Path, notebook: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not trained in this run; run notebook {notebook} first")
    return path


def _uint8_model(name: str, cfg: Config, backbone: str, dev: torch.device, net: nn.Module,
                 head: Callable[[torch.Tensor], torch.Tensor]) -> Model:
    """A model over the notebooks' uint8 pixels and its backbone's features (rounded to `feature_dtype`, as
    the notebooks' feature cache holds them): the plain classifier and the linear probe."""
    tf, dtype = preprocess(backbone, cfg.input_size), getattr(torch, cfg.feature_dtype)
    net = net.to(dev).eval()
    return Model(name, True, cfg.input_size, dev, lambda img: resize_uint8(img, cfg.input_size),
                 lambda x: head(net(tf(x)).to(dtype).float()))


def load_plain(run_dir: Path, cfg: Config, backbone: str, dev: torch.device) -> Model:
    """The plain 3-class classifier of `backbone` (notebook 05)."""
    path = _needs(Checkpoints.of(run_dir).plain(backbone) / "best.safetensors", "05")
    net = load_weights(network("plain", create_backbone(backbone, "none", cfg.memory_format)), path,
                       {"model": "plain", "backbone": backbone, "input_size": cfg.input_size,
                        "normalization": normalization_meta(backbone)})
    fc = net.fc.to(dev)
    return _uint8_model(f"{backbone}/plain", cfg, backbone, dev, net.backbone,
                        lambda f: F.softmax(fc(f), dim=1))


def load_probe(run_dir: Path, cfg: Config, backbone: str, dev: torch.device) -> Model:
    """The linear probe of `backbone` (notebooks 05 and 06): its frozen backbone and fitted classifier."""
    checkpoints = Checkpoints.of(run_dir)
    wanted = {"backbone": backbone, "input_size": cfg.input_size, "normalization": normalization_meta(backbone)}
    net = load_weights(network("linear probe", create_backbone(backbone, "none", cfg.memory_format)),
                       _needs(checkpoints.probe(backbone) / "best.safetensors", "05"), {"model": "probe", **wanted})
    path = _needs(checkpoints.probe_classifier(backbone), "05")
    fitted = read_meta(path).get("fitted", len(CLASSES))
    clf = load_weights(LinearProbe(feature_dim(net.backbone), fitted if isinstance(fitted, int) else 0, len(CLASSES)),
                       path, {"model": "probe-classifier", **wanted})
    return _uint8_model(f"{backbone}/probe", cfg, backbone, dev, net.backbone, clf)


def load_detector(run_dir: Path, cfg: Config, name: str, dev: torch.device) -> Model:
    """A compared one-logit detector (notebook 06) with its evaluation transform."""
    spec = spec_of(name)
    run = Run(config=dataclasses.replace(cfg, detector_pretrained="none"), dir=Path(run_dir))  # weights: the file's
    path = _needs(Checkpoints.of(run_dir).detector(name) / "best.safetensors", "06")
    wanted = {k: v for k, v in detector_meta(Run(config=cfg, dir=Path(run_dir)), None, name).items() if k != "name"}
    net = load_weights(spec.build(run), path, wanted).to(dev).eval()
    return Model(name, False, int(wanted["input_size"]), dev, spec.eval_tf(run),
                 lambda x: binary(torch.sigmoid(net.fc(net.features(x)).squeeze(1))))


def load_dif(run_dir: Path, cfg: Config, dev: torch.device) -> Model:
    """DIF (notebook 06): one fingerprint per seen generator, used together (`detectors.dif.Union`), on the
    centre crop of each image at native resolution."""
    union = dif.load_union(Checkpoints.of(run_dir), cfg.dif_crop)
    mean = union.fingerprints[0].net.mean_residual.cpu()
    for fp in union.fingerprints:
        fp.net.to(dev)

    def forward(x: torch.Tensor) -> torch.Tensor:
        r = wiener_residual(x.cpu()) - mean
        return binary(torch.as_tensor(union.p_fake(dif.fingerprint_scores(union.fingerprints, r))))
    return Model("dif", False, cfg.dif_crop, dev, lambda img: centre_crop(img, cfg.dif_crop), forward)


def _trained(run_dir: Path, cfg: Config) -> list[str]:
    """The names `--detector all` loads: those whose checkpoints this run has."""
    checkpoints = Checkpoints.of(run_dir)
    names = [n for n in DETECTOR_NAMES if n != "dif" and (checkpoints.detector(n) / "best.safetensors").is_file()]
    return names + (["dif"] if checkpoints.dif_union("all").is_file() else [])


def load_models(model: str | Path = "", detector: str = "deepfeaturex", backbone: str = "", kind: str = "",
                device: str = "auto") -> list[Served]:
    """The models `dfx predict --detector` names, from the run folder `model` (default runs/mini):
    "deepfeaturex" the complete model of (backbone, kind) as `complete.load_predictor` finds it; "plain" and
    "probe" the baseline of `backbone` (default the run's first); a detector's name; "all" every model the run
    has trained (every complete model, baseline and detector; those not trained are named on stderr)."""
    if detector not in PREDICT_CHOICES:
        raise ValueError(f"unknown detector {detector!r}; known: {', '.join(PREDICT_CHOICES)}")
    if detector == "deepfeaturex":
        return [load_predictor(model, backbone, kind, device)]
    run_dir = find_run(model)
    cfg, dev = run_config(run_dir), device_of(device)
    backbones = [backbone] if backbone else list(cfg.backbones)
    if detector == "plain":
        return [load_plain(run_dir, cfg, backbones[0], dev)]
    if detector == "probe":
        return [load_probe(run_dir, cfg, backbones[0], dev)]
    if detector == "dif":
        return [load_dif(run_dir, cfg, dev)]
    if detector != "all":
        return [load_detector(run_dir, cfg, detector, dev)]
    out: list[Served] = []
    missing = []
    for b in backbones:
        for k in ([kind] if kind else cfg.base_kinds):
            try:
                out.append(load_predictor(run_dir, b, k, device))
            except FileNotFoundError:
                missing.append(f"{b}/{k}")
        for name, loader in (("plain", load_plain), ("probe", load_probe)):
            try:
                out.append(loader(run_dir, cfg, b, dev))
            except FileNotFoundError:
                missing.append(f"{b}/{name}")
    trained = _trained(run_dir, cfg)
    out += [load_dif(run_dir, cfg, dev) if n == "dif" else load_detector(run_dir, cfg, n, dev) for n in trained]
    missing += [n for n in cfg.detectors if n not in trained]
    if missing:
        print(f"dfx predict: not trained in {run_dir}, left out: {', '.join(missing)}", file=sys.stderr)
    return out


def notebook_detectors(run: Run) -> dict[str, Detector]:
    """Every model of `run` as notebooks 05 and 06 evaluate it (`evaluation.scoring.Detector`; trained ones are
    reused), keyed by the name `dfx predict --detector all` serves it under: what parity with the notebooks is
    checked against (tests/predict/test_parity.py, benchmarks/bench_predict_skew.py)."""
    index = run.index()
    split, store, cfg = run.split(index), run.images(index), run.config
    rows = {f"{c.backbone}/{c.kind}": complete_detector(run, c) for c in load_complete_models(run, split)}
    for b in cfg.backbones:
        rows[f"{b}/plain"] = plain_detector(run, train_plain(run, store, split, b))
        rows[f"{b}/probe"] = probe_detector(run, train_probe(run, store, split, b))
    for name in cfg.detectors:
        if name != "dif":
            rows[name] = as_detector(run, train_detector(run, store, split, name))
    if "dif" in cfg.detectors:
        rows["dif"] = dif.as_detector(run, dif.union(run, store, split, dif.train_fingerprints(run, store, split)))
    return rows


def find_run(model: str | Path = "") -> Path:
    """The run folder `model` names (default runs/mini)."""
    return Path(model) if model else runs_root() / DEFAULT_PROFILE
