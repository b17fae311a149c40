"""The registry of compared detectors (`DETECTORS`: name -> network and transforms), where each one's
checkpoint lives and what identifies it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dfxlib.config import Config
from dfxlib.data.split import Split, split_id
from dfxlib.detectors.nets import BackboneLogit, GANFingerprint, SimpleCNN, SSPNet
from dfxlib.detectors.transforms import (NO_BACKBONE, EvalTransform, Transform, fingerprint_eval, fingerprint_train,
                                         ssp_eval, ssp_train, wang_eval, wang_train, wang_val)
from dfxlib.models.backbones import create_backbone, in_layout, normalization_meta, resize_normalize
from dfxlib.run import Run


@dataclass(frozen=True)
class DetectorSpec:
    """A detector: its name in tables, how to build it (its convolutions in the layout `memory_format` names,
    `backbones.in_layout`), and its training and evaluation transforms. (The paper's Wang2020 row is the published
    model, trained elsewhere: shown apart, `paper.PAPER_ONLY`.)"""

    name: str
    display: str
    build: Callable[[Run], nn.Module]
    train_tf: Callable[[Run], Transform]
    eval_tf: Callable[[Run], EvalTransform]
    #: how its validation images are read, seeded per image, where its code validates otherwise than it tests
    #: (None: as tested)
    val_tf: Callable[[Run], Transform | None] = lambda run: None


def _backbone(run: Run, name: str) -> nn.Module:
    """A detector's backbone with the detectors' weights setting (`detector_pretrained`)."""
    return create_backbone(name, run.config.detector_pretrained, run.config.memory_format)


def _laid_out(run: Run, net: nn.Module) -> nn.Module:
    """`net` in the run's layout (`memory_format`): a detector's own convolutions besides its backbone's."""
    return in_layout(net, run.config.memory_format)


def simplecnn_size(run: Run) -> int:
    """SimpleCNN's input side: the comparative study's 224 px with its published recipe, else `input_size`."""
    return 224 if run.config.detector_recipe == "published" else run.config.input_size


DETECTORS: dict[str, DetectorSpec] = {s.name: s for s in (
    DetectorSpec("simplecnn", "SimpleCNN", lambda run: _laid_out(run, SimpleCNN(simplecnn_size(run))),
                 lambda run: (lambda img, seed, f=resize_normalize(simplecnn_size(run)): f(img)),
                 lambda run: resize_normalize(simplecnn_size(run))),
    DetectorSpec("wang2020", "Wang2020 (ResNet, blur+JPEG)",
                 lambda run: BackboneLogit(_backbone(run, run.config.detector_backbone)), wang_train, wang_eval,
                 wang_val),
    DetectorSpec("ganfingerprint", "GANFingerprint",
                 lambda run: _laid_out(run, GANFingerprint(_backbone(run, run.config.fingerprint_backbone))),
                 fingerprint_train, fingerprint_eval),
    DetectorSpec("ssp", "SSP (simplest patch + SRM)",
                 lambda run: _laid_out(run, SSPNet(_backbone(run, run.config.detector_backbone),
                                                   run.config.input_size)),
                 ssp_train, ssp_eval),
)}


@dataclass(frozen=True)
class Recipe:
    """How a detector trains: optimizer, learning rate, weight decay, batch, epochs (at most), the learning-rate
    schedule (`models.train.lr_factor`), which weights are kept ("val_loss" lowest, "val_acc" highest, "val_score"
    the highest of the detector's own validation score, `detectors.training.VAL_SCORES`), early stopping patience
    (0: every epoch; with the "plateau" schedule, the epochs between its drops) and where it comes from."""

    optimizer: str
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    schedule: str
    select: str
    patience: int
    source: str


#: each compared detector's published training recipe (`detector_recipe="published"`, the paper profile);
#: ../shared/reference/METHODS.md quotes the code. What the recipes leave out is in `evaluation.differences`.
RECIPES: dict[str, Recipe] = {
    "simplecnn": Recipe("adam", 1e-4, 0.0, 32, 10, "constant", "val_loss", 0,
                        "the comparative study's Exp1: Adam 1e-4, batch 32, 10 epochs, 224 px"),
    "wang2020": Recipe("adam", 1e-4, 0.0, 64, 200, "plateau", "val_acc", 5,
                       "CNNDetection: Adam 1e-4, batch 64; lr / 10 after 5 epochs without a better validation "
                       "accuracy, stopped below 1e-6 (at most 200 epochs here); the most accurate weights kept"),
    "ganfingerprint": Recipe("adamw", 5e-5, 1e-5, 16, 20, "warmup_cosine", "val_score", 5,
                             "its code: AdamW 5e-5, weight decay 1e-5, batch 16, 20 epochs, 2 warm-up epochs then "
                             "cosine, weights of the best combined validation score, early stopping after 5 epochs "
                             "without a better one"),
    "ssp": Recipe("adam", 1e-4, 0.0, 64, 30, "poly", "val_acc", 0,
                  "its code: Adam 1e-4, batch 64, 30 epochs, poly lr (1 - epoch / 30) ** 0.9, the most accurate "
                  "weights kept"),
}


def recipe_of(cfg: Config, name: str) -> Recipe:
    """How detector `name` trains under `cfg`: its published recipe (`detector_recipe="published"`) or dfx's
    shared one (Adam at detector_lr, batch_size, detector_epochs or fingerprint_epochs, minimum validation loss,
    the run's patience)."""
    if cfg.detector_recipe == "published":
        return RECIPES[name]
    epochs = cfg.fingerprint_epochs if name == "ganfingerprint" else cfg.detector_epochs
    return Recipe("adam", cfg.detector_lr, 0.0, cfg.batch_size, epochs, "constant", "val_loss", cfg.patience,
                  "dfx's shared recipe")


def spec_of(name: str) -> DetectorSpec:
    """The detector called `name`; a clear error lists the known ones."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return DETECTORS[name]


def detector_meta(run: Run, split: Split | None, name: str) -> dict:
    """What identifies a trained detector (checked when resuming or loading; without `split`, what `dfx predict`
    checks: the same network and inputs, whatever images it was trained on)."""
    cfg = run.config
    backbone = {"simplecnn": "", "ganfingerprint": cfg.fingerprint_backbone}.get(name, cfg.detector_backbone)
    size = simplecnn_size(run) if name == "simplecnn" else cfg.input_size
    return {"model": "detector", "detector": name, "backbone": backbone, "input_size": size,
            "pretrained": cfg.detector_pretrained, "normalization": normalization_meta(backbone or NO_BACKBONE),
            "name": f"detectors/{name}", **({"split": split_id(split)} if split is not None else {})}


def new_detector(run: Run, name: str) -> nn.Module:
    """A detector with its seeded initial weights (what 'before training' means in the PCA figure)."""
    torch.manual_seed(run.config.seed)
    return spec_of(name).build(run)
