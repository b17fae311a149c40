"""Every model as a `Detector`, and Tables 2-3 (3-class and binary, RAW and manipulated) for any of them.

A `Detector` is a name and a function giving (N, 3) probabilities over CLASSES for images of a store under a
named, seeded perturbation; a binary detector puts p(fake) in the dm column and 1 - p(fake) in the real one.
Complete models (DeepFeatureX Net and -SN), the plain classifiers and linear probes (the baselines), and the
compared detectors all become Detectors, so one loop evaluates them all on one convention.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from dfxlib.config import MODEL_KINDS
from dfxlib.data import perturb
from dfxlib.data.batches import ImageStore
from dfxlib.data.perturb import Perturbation
from dfxlib.data.split import Split, test_sets
from dfxlib.evaluation import paper
from dfxlib.evaluation.metrics import correct, evaluate, fmt_ci, outcomes, parse_ci, pct
from dfxlib.models.backbones import display_name
from dfxlib.models.features import features_many
from dfxlib.models.fusion import Complete, complete_probs
from dfxlib.models.networks import BaseModel
from dfxlib.models.train import FINISHED, cut_short
from dfxlib.run import Run

Predict = Callable[[ImageStore, Sequence[str], str, Perturbation | None], np.ndarray]

#: the group of each kind of model (`config.MODEL_KINDS`), as Tables 2-4 and the comparisons name them
GROUPS: dict[str, str] = dict(zip(MODEL_KINDS, ("DeepFeatureX Net", "DeepFeatureX-SN", "Baselines", "Linear probe")))


@dataclass
class Detector:
    """A model as a row of Tables 2-4: `predict(store, rels, variant, perturb)` gives (N, 3) probabilities."""

    group: str
    name: str
    predict: Predict
    #: the feature extractors `predict` reads from the cache (filled for all detectors in one pass)
    models: list[BaseModel]
    #: the row of the paper's Table 4 to show beside ours ("" when none)
    paper_row: str = ""
    #: one of `config.MODEL_KINDS` for the models built on one backbone; "" for the compared detectors
    kind: str = ""
    #: the training folders of the fits it rests on (base models, head; the plain classifier), to flag a cut
    trained: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How the comparison of notebook 06 names it: "group: name"."""
        return f"{self.group}: {self.name}"


def fit_summary(detectors: Sequence[Detector]) -> pd.DataFrame:
    """Every fit the detectors rest on, once each: epochs run of its cap, the epoch kept (minimum validation loss),
    and whether it was cut short (its validation loss still falling when its epochs ran out)."""
    rows = []
    for f in dict.fromkeys(Path(f) for d in detectors for f in d.trained):
        meta, st = json.loads((f / "meta.json").read_text()), json.loads((f / FINISHED).read_text())
        rows.append({"model": "/".join(f.parts[-3:]), "epochs_run": int(st["epoch"]), "cap": int(meta["epochs"]),
                     "best_epoch": int(st["best_epoch"]), "cut_short": cut_short(f)})
    return pd.DataFrame(rows, columns=["model", "epochs_run", "cap", "best_epoch", "cut_short"])


def untestable(detectors: Sequence[Detector], table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Why a claim about a detector cannot be decided, keyed by (kind, name): a fit it rests on ran out of epochs
    while still improving, or on the test split (`table`: `robustness` rows, or `evaluate_sets` rows with group
    and model) its RAW accuracy is not above chance (the lower end of its 95% interval at or below 1/classes)."""
    out = {}
    for det in detectors:
        short = ["/".join(Path(f).parts[-2:]) for f in det.trained if cut_short(f)]
        why = [f"cut short, still improving when its epochs ran out ({', '.join(short)})"] if short else []
        rows = (table[(table["kind"] == det.kind) & (table["backbone"] == det.name)] if "kind" in table
                else table[(table["group"] == det.group) & (table["model"] == det.name)])
        chance_rows = []
        for r in rows[rows["condition"] == "RAW"].itertuples():
            chance = 100 / 3 if getattr(r, "task", "binary") == "multiclass" else 50.0
            if parse_ci(r.accuracy_ci95)[0] <= chance:
                chance_rows.append(f"{getattr(r, 'task', 'binary')} {r.accuracy:.2f}% {r.accuracy_ci95}")
        if chance_rows:
            why.append(f"at chance on the test split ({'; '.join(chance_rows)})")
        if why:
            out[det.kind, det.name] = "; ".join(why)
    return out


def untestable_labels(detectors: Sequence[Detector], table: pd.DataFrame) -> dict[str, str]:
    """`untestable` keyed by each detector's `label`, as the comparison table names them."""
    why = untestable(detectors, table)
    return {d.label: why[d.kind, d.name] for d in detectors if (d.kind, d.name) in why}


def memoized(predict: Predict) -> Predict:
    """`predict` with its rows remembered per (dataset, variant, image): a model without a feature cache
    (the compared detectors) then runs once per image and condition across the comparison, the robustness
    table and Table 4. A variant names one seeded perturbation, as for the feature cache."""
    seen: dict[tuple[str, str, str], np.ndarray] = {}

    def wrapped(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        todo = list(dict.fromkeys(r for r in rels if (store.key, variant, r) not in seen))
        if todo:
            seen.update(((store.key, variant, r), row) for r, row in zip(todo, predict(store, todo, variant, fn)))
        return np.stack([seen[(store.key, variant, r)] for r in rels]) if len(rels) else np.zeros((0, 3))
    return wrapped


def complete_detector(run: Run, c: Complete) -> Detector:
    """A complete model (frozen base models + fusion head) as a detector."""
    name = display_name(c.backbone)

    def predict(store: ImageStore, rels: Sequence[str], variant: str, fn: Perturbation | None) -> np.ndarray:
        return complete_probs(run, store, c, rels, variant, fn)
    paper_row = "Our" if c.kind == "unbalanced" and name == "DenseNet 121" else ""
    return Detector(group=GROUPS[c.kind], name=name, predict=predict, models=list(c.bases), paper_row=paper_row,
                    kind=c.kind, trained=[b.folder for b in c.bases] + [run.checkpoints.head(c.backbone, c.kind)])


def robustness(run: Run, store: ImageStore, split: Split, detectors: Sequence[Detector],
               variants: Sequence[str]) -> pd.DataFrame:
    """Tables 2-3 for `detectors`: one row per (detector, condition, task) on the balanced 3-class and binary
    test sets, accuracy and F1 (%) with 95% intervals, balanced accuracy, AUC, and the paper's value where it
    has one (DeepFeatureX Net, RAW and JPEG; DeepFeatureX-SN's published detection accuracy, binary RAW). `variants`: "raw" or names in dfxlib.data.perturb.PERTURBATIONS."""
    cfg = run.config
    multi, binary = test_sets(split, cfg.seed)
    rels = sorted(set(multi["path"]) | set(binary["path"]))
    probs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for variant in variants:  # one pass per backbone and variant fills the cache for every model
        fn = None if variant == "raw" else perturb.get(variant)
        features_many(run, store, [m for d in detectors for m in d.models], rels, variant, fn)
        for k, det in enumerate(detectors):
            probs[k, variant] = dict(zip(rels, det.predict(store, rels, variant, fn)))
    rows = []
    for k, det in enumerate(detectors):
        for variant in variants:
            cond = perturb.condition(variant)
            for task, df in (("multiclass", multi), ("binary", binary)):
                p_all = np.stack([probs[k, variant][p] for p in df["path"]])
                r = evaluate(df["label"].to_numpy(), p_all, binary=task == "binary", n_boot=cfg.bootstrap, seed=cfg.seed)
                ref = (paper.table23(task, det.name, cond) if det.kind == "unbalanced" and cond in paper.CONDITIONS
                       else {"accuracy": paper.SN_DETECTION} if det.kind == "siamese" and (task, cond) == (
                           "binary", "RAW") else {})
                rows.append({"backbone": det.name, "kind": det.kind, "condition": cond, "task": task,
                             "accuracy": pct(r["accuracy"]), "accuracy_ci95": fmt_ci(r["accuracy_ci"]),
                             "f1": pct(r["f1"]), "f1_ci95": fmt_ci(r["f1_ci"]),
                             "balanced_accuracy": pct(r["balanced_accuracy"]), "auc": pct(r["auc"]), "n": r["n"],
                             "paper_accuracy": ref.get("accuracy", ""), "paper_f1": ref.get("f1", ""),
                             "outcomes": outcomes(correct(df["label"].to_numpy(), p_all, task == "binary"))})
    return pd.DataFrame(rows)
