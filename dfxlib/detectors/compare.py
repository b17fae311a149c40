"""The comparison of notebook 06: which images, every detector's per-image predictions, the table with 95%
intervals, Grad-CAM grids, confusion matrices and the PCA panels."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from dfxlib.data.batches import ImageStore
from dfxlib.data.split import Split
from dfxlib.detectors.registry import new_detector
from dfxlib.detectors.training import TrainedDetector, outputs
from dfxlib.detectors.transforms import simplest_patch
from dfxlib.evaluation.metrics import binary_scores, fake_score, pct, to_binary
from dfxlib.predict.gradcam import detector_cams, overlay
from dfxlib.run import Run


def comparison_rows(run: Run, index, split: Split) -> pd.DataFrame:
    """Images of the comparison: the test split (seen generators and real images) and the held-out inner and
    unseen generators; `role` is seen / inner / unseen for fakes, real for reals."""
    test = split.rows("test")
    held = split.rows("holdout")
    held = held[(held["family"] != "real") & run.roles_of(index, held).isin(["inner", "unseen"])]
    rows = pd.concat([test, held], ignore_index=True)
    role = run.roles_of(index, rows)
    return rows.assign(role=role.where(rows["family"] != "real", "real")).sort_values("path").reset_index(drop=True)


def compare(store: ImageStore, rows: pd.DataFrame, detectors: Sequence) -> pd.DataFrame:
    """Per image and detector (`evaluation.Detector`s): p_fake and the binary prediction."""
    rels = list(rows["path"])
    out = []
    for det in detectors:
        probs = det.predict(store, rels, "raw", None)
        out.append(rows[["path", "family", "generator", "role"]].assign(
            detector=det.label, fake=(rows["family"] != "real").astype(int).to_numpy(),
            p_fake=fake_score(probs), pred_fake=to_binary(probs.argmax(1))))
    return pd.concat(out, ignore_index=True)


def comparison_table(per_image: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per detector: accuracy (%) per generator and real source, then for seen and for unseen
    (inner + unseen) generators, each with all the real images: balanced accuracy, ROC AUC and AP with 95%
    bootstrap intervals."""
    rows = []
    for det, g in per_image.groupby("detector", sort=False):
        row: dict = {"detector": det}
        for gen, part in g.groupby("generator", sort=True):
            row[f"acc {gen}"] = pct(float((part["pred_fake"] == part["fake"]).mean()))
        for group, roles in (("seen", ["seen"]), ("unseen", ["inner", "unseen"])):
            part = g[g["role"].isin(roles + ["real"])]
            scores = binary_scores(part["fake"].to_numpy(), part["p_fake"].to_numpy(), part["pred_fake"].to_numpy(),
                                   n_boot, seed)
            row.update({f"{group} {k}": v for k, v in scores.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def gradcam_grid(run: Run, dets: Sequence[TrainedDetector], images: Sequence[Image.Image],
                 target: str = "fake") -> Image.Image:
    """Grad-CAM overlays of class `target`: one row per image, one column per detector (SSP's column shows
    the patch it chose), each tile labelled with the detector and the layer read."""
    tile, label = 128, 14
    grid = Image.new("RGB", (tile * len(dets), (tile + label) * len(images)), "white")
    draw = ImageDraw.Draw(grid)
    for c, det in enumerate(dets):
        tf = det.spec.eval_tf(run)
        x = torch.stack([tf(img) for img in images]).to(next(det.net.parameters()).device)
        maps, layer = detector_cams(det.net.eval(), x, target)
        for r, img in enumerate(images):
            shown = simplest_patch(img, None) if det.spec.name == "ssp" else img
            grid.paste(overlay(shown, maps[r]).resize((tile, tile), Image.Resampling.NEAREST),
                       (c * tile, r * (tile + label) + label))
            draw.text((c * tile + 2, r * (tile + label)), f"{det.spec.name}: {layer}", fill="black")
    return grid


def confusions(per_image: pd.DataFrame) -> list[tuple[str, np.ndarray, list[str]]]:
    """(detector, 2x2 confusion matrix with rows true real/fake and columns predicted real/fake, names) per
    detector of a `compare` table, for plots.confusion_matrices."""
    out = []
    for det, g in per_image.groupby("detector", sort=False):
        cm = np.zeros((2, 2), dtype=int)
        np.add.at(cm, (g["fake"].to_numpy(), g["pred_fake"].to_numpy()), 1)
        out.append((det, cm, ["real", "fake"]))
    return out


def pca_panels(run: Run, store: ImageStore, dets: Sequence[TrainedDetector],
               rows: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Penultimate features of each detector on `rows`, from its seeded initial weights and after training,
    with binary labels: the panels of the PCA figure (plots.pca_scatter)."""
    rels, y = list(rows["path"]), (rows["family"] != "real").astype(int).to_numpy()
    panels = []
    for d in dets:
        before = outputs(run, store, new_detector(run, d.spec.name), rels, name=d.spec.name)[1]
        panels += [(f"{d.spec.display}: before training", before, y),
                   (f"{d.spec.display}: after training", outputs(run, store, d, rels)[1], y)]
    return panels
