"""The paper's own numbers, as data, so tables can show them beside ours.

Source: the DeepFeatureX-SN README's dataset table (``../shared/seeds/000_*.txt``).
"""

from __future__ import annotations

import pandas as pd

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
