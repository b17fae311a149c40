"""The two baselines DeepFeatureX is measured against, both on the images DeepFeatureX saw (base and fusion
splits):

- Plain classifier (the paper's "Baselines" rows of Table 4): each backbone fine-tuned alone as a 3-class
  classifier with the base models' settings.
- Linear probe: the backbone's pretrained features, frozen and never fine-tuned, and a class-balanced
  logistic regression on them. It is the cheapest strong generalizer of this field (frozen pretrained
  features plus a linear layer), so a fused model has to beat it to earn its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from dfxlib.data.batches import ImageStore
from dfxlib.data.index import CLASS_INDEX, CLASSES
from dfxlib.data.perturb import Perturbation
from dfxlib.data.split import Split, split_id, train_val
from dfxlib.evaluation import paper
from dfxlib.evaluation.scoring import GROUPS, Detector
from dfxlib.models.backbones import create_backbone, display_name, normalization_meta
from dfxlib.models.basemodels import fit_on_images
from dfxlib.models.features import features
from dfxlib.models.fusion import class_weights, fit_probe, probe_proba
from dfxlib.models.networks import BaseModel, LinearProbe, network
from dfxlib.models.train import load_weights, save_weights
from dfxlib.run import Run


def seen_images(split: Split) -> pd.DataFrame:
    """The images DeepFeatureX trained on (base and fusion splits), with their class index as `target`."""
    data = pd.concat([split.rows("base"), split.rows("fusion")], ignore_index=True)
    return data.assign(target=data["family"].map(CLASS_INDEX))


# ----------------------------------------------------------------------------------------- plain classifier
def plain_meta(run: Run, split: Split, backbone: str) -> dict:
    """What identifies a plain classifier (checked when resuming or loading)."""
    cfg = run.config
    return {"model": "plain", "backbone": backbone, "classes": list(CLASSES), "input_size": cfg.input_size,
            "pretrained": cfg.pretrained, "normalization": normalization_meta(backbone), "name": f"{backbone}/plain",
            "split": split_id(split)}


def train_plain(run: Run, store: ImageStore, split: Split, backbone: str) -> BaseModel:
    """Train (or resume, or reuse) `backbone` as a plain 3-class classifier on the base and fusion splits with
    the base models' settings (epochs, lr, batch, patience, a seeded validation part), weighted cross
    entropy w_c = 1 / n_c; keeps the weights of minimum validation loss."""
    cfg = run.config
    folder = run.checkpoints.plain(backbone)
    torch.manual_seed(cfg.seed)
    net = network("plain", create_backbone(backbone, cfg.pretrained, cfg.memory_format))
    tr, va = train_val(seen_images(split), cfg.val_fraction, cfg.seed)
    result = fit_on_images(run, store, net, backbone, tr, va, folder, plain_meta(run, split, backbone),
                           weight=class_weights(tr["target"].to_numpy()))
    load_weights(net, folder / "best.safetensors", plain_meta(run, split, backbone))
    net.eval()
    return BaseModel(net=net, backbone=backbone, kind="plain", main="all", folder=folder, fit=result)


def plain_detector(run: Run, model: BaseModel) -> Detector:
    """A plain classifier as a detector (features cached like the base models', then its linear layer)."""
    fc = model.net.fc

    def predict(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        x = torch.as_tensor(features(run, store, model, rels, variant, fn))
        with torch.no_grad():
            return F.softmax(F.linear(x, fc.weight.detach().cpu(), fc.bias.detach().cpu()), dim=1).numpy()
    name = display_name(model.backbone)
    return Detector(group=GROUPS["plain"], name=name, predict=predict, models=[model],
                    paper_row=name if name in paper.TABLE4 else "", kind="plain", trained=[model.folder])


# --------------------------------------------------------------------------------------------- linear probe
@dataclass
class Probe:
    """A linear probe: the frozen backbone (as a `BaseModel` of kind "linear probe", for the feature cache)
    and the logistic regression fitted on its features of the seen images."""

    model: BaseModel
    clf: LinearProbe


def probe_meta(run: Run, backbone: str) -> dict:
    """What identifies the linear probe of `backbone` (its frozen backbone and its fitted classifier)."""
    cfg = run.config
    return {"model": "probe", "backbone": backbone, "pretrained": cfg.pretrained, "input_size": cfg.input_size,
            "normalization": normalization_meta(backbone), "seed": cfg.seed}


def frozen_backbone(run: Run, backbone: str) -> BaseModel:
    """The backbone with the run's `pretrained` weights, untouched. Its weights are written (the same bytes each
    time) under `checkpoints/probe/<backbone>`, so its features are cached, and invalidated when the weights
    change, like a base model's."""
    cfg = run.config
    folder = run.checkpoints.probe(backbone)
    meta = probe_meta(run, backbone)
    torch.manual_seed(cfg.seed)  # random-init backbones (pretrained="none") depend on the seed only
    # used as it came, never trained
    net = network("linear probe", create_backbone(backbone, cfg.pretrained, cfg.memory_format))
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(net, folder / "best.safetensors", meta)
    return BaseModel(net=net.eval(), backbone=backbone, kind="linear probe", main="all", folder=folder)


def train_probe(run: Run, store: ImageStore, split: Split, backbone: str) -> Probe:
    """The linear probe of `backbone`: frozen features of the seen images, then `fit_probe` (seeded, so the
    same run gives the same probe in every notebook); its classifier is saved beside the frozen backbone (for
    `dfx predict`)."""
    model = frozen_backbone(run, backbone)
    data = seen_images(split)
    x = features(run, store, model, list(data["path"]))
    clf = fit_probe(x, data["target"].to_numpy(), run.config.seed)
    save_weights(clf, run.checkpoints.probe_classifier(backbone),
                 {**probe_meta(run, backbone), "model": "probe-classifier", "fitted": len(clf.classes),
                  "split": split_id(split)})
    return Probe(model=model, clf=clf)


def probe_detector(run: Run, probe: Probe) -> Detector:
    """A linear probe as a detector (group "Linear probe", named by its backbone)."""

    def predict(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        return probe_proba(probe.clf, features(run, store, probe.model, rels, variant, fn))
    return Detector(group=GROUPS["linear probe"], name=display_name(probe.model.backbone), predict=predict,
                    models=[probe.model], kind="linear probe")


def baseline_detectors(run: Run, store: ImageStore, split: Split) -> list[Detector]:
    """Both baselines of every backbone of the run (trained, or reused once trained): plain, then probe."""
    plains = [plain_detector(run, train_plain(run, store, split, b)) for b in run.config.backbones]
    probes = [probe_detector(run, train_probe(run, store, split, b)) for b in run.config.backbones]
    return plains + probes
