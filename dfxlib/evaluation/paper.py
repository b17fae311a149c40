"""The paper's own numbers, as data, so tables can show them beside ours.

Sources: the DeepFeatureX-SN README's dataset table (``../shared/seeds/000_*.txt``) and the DeepFeatureX Net
paper's Tables 1-4 (``../shared/seeds/001_*.txt``), copied as printed.
"""

from __future__ import annotations

import pandas as pd

from dfxlib.data.perturb import JPEG_QUALITIES, condition

#: (family, architecture or source, type, images, distinct sizes)
DATASET: tuple[tuple[str, str, str, int, str], ...] = (
    ("gan", "AttGAN", "FO", 6005, "256x256"),
    ("gan", "BigGAN", "O", 2600, "256x256"),
    ("gan", "CycleGAN", "FO", 1047, "256x256; 512x512"),
    ("gan", "GauGAN", "O", 4000, "256x256; 512x512"),
    ("gan", "GDWCT", "O", 3367, "216x216"),
    ("gan", "ProGAN", "O", 1000, "256x256; 512x512"),
    ("gan", "StarGAN", "F", 6848, "256x256"),
    ("gan", "StyleGAN", "O", 4705, "256x256; 512x512"),
    ("gan", "StyleGAN2", "FO", 7000, "256x256; 512x512; 1024x1024"),
    ("gan", "StyleGAN3", "F", 1000, "256x256; 512x512; 1024x1024"),
    ("dm", "DALL-E 2", "FO", 3421, "512x512; 1024x1024"),
    ("dm", "DALL-E MINI", "O", 1000, "256x256"),
    ("dm", "Glide", "O", 2000, "256x256; 512x512"),
    ("dm", "Latent Diffusion", "FO", 4000, "256x256; 512x512"),
    ("dm", "Stable Diffusion", "FO", 5000, "256x256; 512x512"),
    ("real", "CelebA", "F", 5135, "178x218"),
    ("real", "FFHQ", "F", 4981, "1024x1024"),
    ("real", "Others", "O", 9225, "256x256; 512x512; 1024x1024"),
)
DATASET_TOTALS: dict[str, int] = {"gan": 37572, "dm": 15421, "real": 19341}


def norm_name(name: str) -> str:
    """Lower-case alphanumerics only, to match generator names across spellings."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def dataset_table() -> pd.DataFrame:
    """The paper's dataset table: family, generator, type (F faces / O objects), images, sizes."""
    return pd.DataFrame(DATASET, columns=["family", "generator", "type", "images", "sizes"])


#: paper backbone names, in the paper's order
BACKBONE_NAMES: tuple[str, ...] = ("DenseNet 121", "DenseNet 161", "DenseNet 169", "DenseNet 201", "EfficientNet b0", "EfficientNet b4", "ResNet 18", "ResNet 34", "ResNet 50", "ResNet 101", "ResNet 152", "ResNeXt 101", "ViT b16", "ViT b32")

#: Table 1 (base models, main class vs others, %): per backbone, (acc, rec, pre, f1) for DM, GAN, REAL
TABLE1: dict[str, tuple[float, ...]] = {
    "DenseNet 121": (76.34, 99.00, 47.60, 64.29, 92.34, 99.25, 87.64, 93.08, 73.17, 99.08, 49.73, 66.22),
    "DenseNet 161": (83.96, 98.64, 57.40, 72.57, 94.62, 99.45, 91.03, 95.05, 77.39, 99.21, 54.04, 69.97),
    "DenseNet 169": (78.83, 99.16, 50.40, 66.83, 93.86, 99.32, 89.91, 94.38, 71.20, 99.29, 47.95, 64.67),
    "DenseNet 201": (79.11, 98.90, 50.75, 67.08, 92.61, 99.37, 87.96, 93.32, 72.97, 99.29, 49.54, 66.10),
    "EfficientNet b0": (85.74, 97.09, 60.50, 74.55, 88.77, 98.81, 82.87, 90.14, 77.91, 97.56, 54.70, 70.10),
    "EfficientNet b4": (78.00, 97.47, 49.43, 65.59, 87.14, 98.74, 80.78, 88.86, 74.31, 97.27, 50.84, 66.78),
    "ResNet 18": (76.64, 98.03, 47.90, 64.36, 84.28, 99.06, 77.16, 86.75, 65.14, 99.03, 43.17, 60.13),
    "ResNet 34": (77.29, 98.12, 48.62, 65.02, 83.33, 99.40, 75.93, 86.10, 66.75, 98.82, 44.33, 61.21),
    "ResNet 50": (78.14, 98.61, 49.59, 66.00, 90.34, 99.14, 84.82, 91.42, 70.79, 99.13, 47.59, 64.31),
    "ResNet 101": (77.20, 99.00, 48.53, 65.13, 90.85, 98.87, 85.71, 91.82, 69.10, 99.08, 46.17, 62.99),
    "ResNet 152": (76.48, 99.00, 47.75, 64.43, 93.42, 99.32, 89.23, 94.00, 70.59, 98.92, 47.41, 64.10),
    "ResNeXt 101": (75.38, 98.58, 46.60, 63.28, 93.82, 98.40, 90.53, 94.30, 66.26, 98.66, 43.96, 60.82),
    "ViT b16": (76.53, 98.58, 47.80, 64.38, 83.58, 99.69, 76.11, 86.32, 68.45, 99.24, 45.67, 62.55),
    "ViT b32": (74.05, 96.92, 45.20, 61.65, 80.83, 98.99, 73.39, 84.29, 60.44, 99.61, 40.13, 57.21),
}

#: Table 2 (3-class, %): per backbone, (accuracy, F1) for RAW, JPEG QF 90, 80, 70, 60, 50
TABLE2: dict[str, tuple[tuple[float, float], ...]] = {
    "DenseNet 121": ((91.39, 91.35), (89.34, 89.26), (87.19, 87.11), (84.31, 84.26), (81.17, 81.24), (79.19, 79.33)),
    "DenseNet 161": ((93.30, 93.21), (91.72, 92.07), (88.21, 88.04), (83.88, 84.06), (77.78, 78.21), (74.06, 74.53)),
    "DenseNet 169": ((91.11, 91.14), (89.36, 89.36), (86.99, 87.04), (82.99, 83.17), (77.92, 78.31), (75.46, 75.92)),
    "DenseNet 201": ((92.31, 92.30), (90.70, 90.67), (87.78, 87.76), (84.76, 84.76), (81.98, 82.01), (79.78, 79.87)),
    "EfficientNet b0": ((88.62, 88.66), (86.19, 86.26), (84.74, 84.83), (82.95, 83.05), (80.45, 80.56), (78.98, 79.11)),
    "EfficientNet b4": ((84.39, 84.51), (83.00, 83.16), (81.59, 81.75), (80.28, 80.45), (78.48, 78.66), (78.42, 78.61)),
    "ResNet 18": ((85.22, 85.23), (84.64, 84.64), (83.61, 83.61), (82.72, 82.71), (80.65, 80.68), (79.77, 79.77)),
    "ResNet 34": ((85.98, 86.00), (85.37, 85.37), (84.25, 84.23), (82.82, 82.75), (80.37, 80.30), (79.12, 79.02)),
    "ResNet 50": ((89.63, 89.62), (88.01, 87.99), (86.07, 86.06), (83.94, 83.95), (80.90, 80.96), (78.85, 78.93)),
    "ResNet 101": ((90.96, 90.97), (89.85, 89.84), (87.90, 87.88), (86.53, 86.52), (83.27, 84.32), (82.97, 83.05)),
    "ResNet 152": ((91.10, 91.11), (89.57, 89.57), (87.53, 87.54), (85.26, 85.30), (82.18, 82.26), (80.63, 80.72)),
    "ResNeXt 101": ((89.26, 89.28), (87.89, 87.91), (87.02, 87.04), (85.60, 85.67), (83.71, 84.83), (82.76, 82.61)),
    "ViT b16": ((88.09, 88.11), (86.96, 87.03), (85.91, 85.99), (84.33, 84.45), (82.80, 82.69), (79.48, 79.69)),
    "ViT b32": ((81.25, 81.24), (81.23, 81.22), (81.12, 81.07), (81.15, 81.11), (80.73, 80.68), (80.14, 80.08)),
}

#: Table 3 (binary, GAN+DM as fake, %): per backbone, (accuracy, F1) for RAW, JPEG QF 90, 80, 70, 60, 50
TABLE3: dict[str, tuple[tuple[float, float], ...]] = {
    "DenseNet 121": ((92.50, 92.23), (91.64, 91.35), (90.67, 90.48), (87.44, 88.55), (85.86, 86.44), (83.85, 84.89)),
    "DenseNet 161": ((93.83, 93.67), (92.74, 92.56), (90.17, 90.16), (88.34, 88.84), (82.75, 84.28), (79.65, 82.15)),
    "DenseNet 169": ((92.10, 91.92), (90.95, 90.69), (89.01, 88.92), (86.21, 86.58), (82.64, 83.79), (80.48, 82.12)),
    "DenseNet 201": ((93.30, 93.03), (91.30, 90.97), (89.45, 89.06), (88.09, 87.81), (85.78, 85.75), (83.78, 83.89)),
    "EfficientNet b0": ((89.36, 89.01), (87.72, 87.35), (85.86, 85.48), (84.96, 84.57), (82.69, 82.59), (81.57, 81.39)),
    "EfficientNet b4": ((86.67, 86.56), (86.03, 86.11), (84.58, 84.91), (84.32, 84.67), (82.14, 82.73), (82.26, 82.74)),
    "ResNet 18": ((85.62, 84.89), (85.71, 84.96), (84.35, 83.49), (84.05, 82.99), (81.92, 80.84), (81.55, 80.21)),
    "ResNet 34": ((87.00, 86.37), (86.99, 86.28), (85.25, 84.28), (83.56, 82.16), (81.58, 79.89), (79.57, 77.48)),
    "ResNet 50": ((90.27, 89.83), (89.10, 88.53), (87.12, 86.41), (85.48, 84.71), (82.92, 82.21), (80.24, 79.24)),
    "ResNet 101": ((91.59, 91.37), (91.01, 90.68), (89.10, 88.60), (87.72, 87.17), (85.33, 84.89), (84.02, 83.63)),
    "ResNet 152": ((91.71, 91.38), (90.44, 89.93), (88.57, 88.03), (86.79, 86.21), (84.60, 84.16), (82.72, 82.20)),
    "ResNeXt 101": ((90.86, 90.67), (90.50, 90.25), (89.12, 88.93), (88.09, 87.93), (86.54, 86.61), (86.11, 86.13)),
    "ViT b16": ((89.49, 89.27), (89.75, 89.68), (88.40, 88.43), (87.19, 87.38), (85.36, 85.71), (82.25, 82.59)),
    "ViT b32": ((82.31, 81.15), (82.63, 81.45), (82.55, 81.38), (82.24, 81.09), (82.33, 80.96), (81.66, 80.20)),
}
#: Tables 2-3's conditions, in the order of the rows above: RAW, then JPEG at each of perturb.JPEG_QUALITIES
CONDITIONS: tuple[str, ...] = tuple(condition(v) for v in ["raw"] + [f"jpeg{q}" for q in JPEG_QUALITIES])


def table1(backbone: str, main: str) -> dict[str, float]:
    """The paper's Table 1 cells (accuracy, recall, precision, f1) for a backbone and base model, or {}."""
    row = TABLE1.get(backbone)
    if row is None:
        return {}
    k = ("dm", "gan", "real").index(main) * 4
    return dict(zip(("accuracy", "recall", "precision", "f1"), row[k:k + 4]))


def table23(table: str, backbone: str, condition: str = "RAW") -> dict[str, float]:
    """The paper's Table 2 (`table="multiclass"`) or 3 (`"binary"`) cell (accuracy, f1), or {}."""
    row = (TABLE2 if table == "multiclass" else TABLE3).get(backbone)
    if row is None:
        return {}
    return dict(zip(("accuracy", "f1"), row[CONDITIONS.index(condition)]))


#: Table 4 (generalization, binary accuracy %, JPEG test sets): per row, the nine sets in TSET_NAMES order.
#: Rows: the 14 backbones trained as plain classifiers ("Baselines"), four published detectors, and "Our"
#: (DeepFeatureX Net, DenseNet 121 base models).
TSET_NAMES: tuple[str, ...] = ("T_G^i", "T_G^o", "T_G^i/o", "T_D^i", "T_D^o", "T_D^i/o", "T_G/D^i", "T_G/D^o",
                               "T_G/D^i/o")
TABLE4: dict[str, tuple[float, ...]] = {
    "DenseNet 121": (56.57, 74.02, 66.96, 72.07, 48.2, 58.68, 60.58, 64.23, 63.13),
    "DenseNet 161": (53.56, 73.97, 66.21, 69.19, 48.12, 56.93, 58.55, 64.51, 61.98),
    "DenseNet 169": (52.03, 66.73, 61.1, 65.25, 43.98, 52.61, 56.8, 57.93, 57.51),
    "DenseNet 201": (55.93, 70.03, 64.14, 67.39, 48.7, 56.1, 60.71, 62.35, 62.72),
    "EfficientNet b0": (49.58, 71.81, 62.99, 69.22, 45.12, 55.19, 55.78, 61.67, 59.85),
    "EfficientNet b4": (50.37, 68.64, 61.36, 69.42, 46.6, 55.92, 56.75, 60.98, 60.0),
    "ResNet 18": (63.77, 68.89, 66.65, 66.23, 55.03, 58.3, 63.7, 62.3, 62.82),
    "ResNet 34": (53.87, 70.03, 63.25, 65.48, 48.55, 54.76, 57.31, 61.84, 60.98),
    "ResNet 50": (59.58, 73.13, 67.95, 67.89, 53.38, 58.5, 62.1, 65.01, 63.9),
    "ResNet 101": (60.35, 68.08, 65.4, 72.12, 56.45, 59.68, 64.21, 63.62, 63.2),
    "ResNet 152": (53.94, 68.61, 61.84, 63.9, 50.15, 55.27, 55.27, 61.51, 60.0),
    "ResNeXt 101": (54.35, 67.42, 62.86, 74.18, 50.23, 59.57, 61.19, 61.06, 61.87),
    "ViT b16": (65.81, 73.31, 69.46, 68.59, 52.69, 58.3, 66.62, 64.53, 62.72),
    "ViT b32": (54.07, 61.91, 58.87, 60.34, 41.87, 47.92, 56.22, 54.25, 57.38),
    "Gandhi2020": (52.3, 50.79, 51.71, 49.91, 50.86, 50.34, 51.54, 50.57, 51.06),
    "Wang2020": (62.41, 53.18, 57.87, 50.13, 50.93, 50.44, 58.26, 52.14, 54.86),
    "Arshed2024": (47.46, 47.65, 48.54, 52.69, 50.0, 51.04, 49.89, 48.94, 52.2),
    "Guarnera2024": (55.0, 55.63, 56.23, 54.11, 45.98, 49.97, 56.07, 52.21, 57.17),
    "Our": (64.74, 72.47, 69.89, 68.09, 60.82, 59.96, 66.06, 65.02, 64.39),
}


#: rows of Table 4 that dfx cannot retrain: published models (Wang2020's was trained on ProGAN images) and
#: methods without public training code here; shown as the paper's values only, never beside a retrained model
PAPER_ONLY: tuple[str, ...] = ("Gandhi2020", "Wang2020", "Arshed2024", "Guarnera2024")

#: DeepFeatureX-SN's published figures (its abstract; backbone and test sets not stated): detection accuracy on
#: the binary test set and the average generalization accuracy over the nine test sets (%)
SN_DETECTION: float = 97.29
SN_GENERALIZATION: float = 67.40


def table4(row: str, tset: str) -> float | str:
    """The paper's Table 4 accuracy for a row (backbone name, detector or "Our") and test set, or ""."""
    vals = TABLE4.get(row)
    return vals[TSET_NAMES.index(tset)] if vals is not None and tset in TSET_NAMES else ""
