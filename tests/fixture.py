"""A tiny synthetic dataset in the paper's layout, and a run of untrained models, for tests and benchmarks.

Each generator gets its own cheap, seeded texture recipe (smooth fields, periodic patterns, noise), so the
classes are separable but not trivially by colour. This is not MiniDFX: it has no real photographs.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: (family folder, generator, recipe)
FIXTURE_GENERATORS: tuple[tuple[str, str, str], ...] = (
    ("dm_generated", "dm_a", "smooth"),
    ("dm_generated", "dm_b", "smooth_noise"),
    ("gan_generated", "gan_a", "checker"),
    ("gan_generated", "gan_b", "stripes"),
    ("real", "real_a", "blobs"),
    ("real", "real_b", "grain"),
)


def _image(recipe: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy + rng.uniform()))
                     for _ in range(3)], axis=-1) * 0.35 + 0.5
    if recipe == "smooth":
        img = base
    elif recipe == "smooth_noise":
        img = base + rng.normal(0, 0.03, base.shape)
    elif recipe == "checker":
        img = base + 0.08 * (((np.arange(size)[:, None] + np.arange(size)[None, :]) % 2)[..., None] - 0.5)
    elif recipe == "stripes":
        img = base + 0.08 * ((np.arange(size)[None, :] % 4 < 2)[..., None] - 0.5)
    elif recipe == "blobs":
        img = base + rng.normal(0, 0.08, base.shape)
    else:  # grain
        img = base + rng.laplace(0, 0.05, base.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_fixture(root: str | Path, per_generator: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Write `per_generator` PNGs for each fixture generator under `root` (paper layout); returns `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for family, gen, recipe in FIXTURE_GENERATORS:
        folder = root / family / gen
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_generator):
            Image.fromarray(_image(recipe, size, rng)).save(folder / f"{gen}_{i:05d}.png")
    return root


def make_run(root: Path, backbone: str = "test_resnet", kind: str = "unbalanced", input_size: int = 32,
             normalization: list | None = None) -> Path:
    """A run folder holding seeded random base models and a head, laid out and labelled as training does
    (for `dfx predict` without training); `normalization` recorded in the base models when given."""
    import torch

    from dfxlib.data.index import CLASSES
    from dfxlib.models import networks
    from dfxlib.models.backbones import create_backbone, feature_dim
    from dfxlib.models.train import save_weights
    from dfxlib.run import Checkpoints

    ids = []
    for k, main_ in enumerate(CLASSES):
        torch.manual_seed(k)
        net = networks.BaseClassifier(create_backbone(backbone, "none")) if kind == "unbalanced" else networks.SiameseNet(
            create_backbone(backbone, "none"))
        path = Checkpoints.of(root).base(backbone, kind, main_) / "best.safetensors"
        save_weights(net, path, {"model": "base", "backbone": backbone, "kind": kind, "main": main_,
                                 "classes": list(CLASSES), "input_size": input_size,
                                 **({"normalization": normalization} if normalization else {})})
        ids.append(f"{backbone}-{kind}-{main_}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    torch.manual_seed(5)
    head = networks.FusionHead(feature_dim=feature_dim(net.backbone))
    save_weights(head, Checkpoints.of(root).head(backbone, kind) / "best.safetensors",
                 {"model": "head", "backbone": backbone, "kind": kind, "classes": list(CLASSES), "bases": ids,
                  "in_channels": 3, "inputs": "standardised"})
    (root / "config.json").write_text(json.dumps({"backbones": [backbone]}))
    return root


def write_notebook(path: Path, *sources: str) -> None:
    """A notebook with dfx's four-parameter cell (tagged `parameters`) and one code cell per source."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = new_code_cell('profile = "mini"\nrun_dir = ""\ndata_root = ""\noverrides = {}')
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def _png_header(width: int, height: int, text: str) -> bytes:
    """A PNG file that declares `width` x `height` RGB pixels and carries `text` (its content differs per file),
    with an empty image stream: it reads as that size from its header and is not meant to be decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"id\x00" + text.encode())
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def make_paper_tree(root: str | Path, scale: float = 1.0) -> Path:
    """The paper's dataset as a tree of header-only PNGs: its generators and sources, `scale` x their image
    counts, each file declaring one of its listed sizes in turn (about 100 bytes each: the 72,334 files of the
    paper fit in a few hundred MB of file-system blocks). For planning (`dfx plan`, a header-only index); the
    images cannot be decoded."""
    from dfxlib.evaluation import paper

    root = Path(root)
    folders = {"gan": "gan_generated", "dm": "dm_generated", "real": "real"}
    for family, gen, _, images, sizes in paper.DATASET:
        folder = root / folders[family] / paper.norm_name(gen)
        folder.mkdir(parents=True, exist_ok=True)
        sides = [tuple(int(v) for v in s.strip().split("x")) for s in sizes.split(";")]
        for i in range(max(1, round(images * scale))):
            (folder / f"{i:05d}.png").write_bytes(_png_header(*sides[i % len(sides)], f"{gen}/{i}"))
    return root


def empty_slurm_queue(timeout_s: float = 60) -> None:
    """Cancel every job of the test cluster and wait (at most `timeout_s`) until the queue is empty."""
    subprocess.run(["scancel", "--user=root"], capture_output=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline and subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)


def reference_layout(src: Path, dst: Path) -> dict[str, int]:
    """The reference's nine named folders built from the fixture's images (in the paper layout): inner = the
    `_a` generators, outer = the `_b` ones, reals from both sources; returns the file count of each set."""
    import shutil

    from dfxlib.evaluation import generalization as gz

    fams = {"gan": "gan_generated", "dm": "dm_generated"}
    inner, outer = {"gan": ["gan_a"], "dm": ["dm_a"]}, {"gan": ["gan_b"], "dm": ["dm_b"]}
    counts = {}
    for folder in gz.REFERENCE_SETS:
        role, _, fam = folder.partition("_") if folder != "all" else ("io", "", "all")
        families = ["gan", "dm"] if fam == "all" else [fam]
        gens = [(f, g) for f in families for g in (inner[f] if role == "inner" else outer[f] if role == "outer"
                                                   else inner[f] + outer[f])]
        n = 0
        for f, g in gens:
            for p in sorted((src / fams[f] / g).glob("*.png"))[:4]:
                (dst / folder / "1_fake" / g).mkdir(parents=True, exist_ok=True)
                shutil.copy(p, dst / folder / "1_fake" / g / p.name)
                n += 1
        for p in sorted((src / "real").rglob("*.png"))[:n]:
            (dst / folder / "0_real").mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dst / folder / "0_real" / p.name)
        counts[gz.REFERENCE_SETS[folder]] = 2 * n
    return counts
