"""MiniDFX: an embedded world of real photographs and genuinely generated images, built from a seed.

- Real class: crops of the colour photographs bundled inside scikit-image (nothing is downloaded; licences in
  `PHOTOS`), in 3 sources. Each photo is cut into a grid of regions; every crop, and every fake made from a
  crop, carries its region as `group`, and the split keeps a region in one split only.
- GAN family: auto-encoders trained briefly to reconstruct real crops, one per upsampling architecture
  (transposed convolution, nearest+conv, bilinear+conv, pixel shuffle): each leaves its own fingerprint.
- DM family: small denoising networks (widths, noise schedules, sampler steps differ) trained on real crops
  and used to re-generate real crops from partial noise (SDEdit with a DDIM sampler).
- Fakes are colour-matched to the crop they came from (per-channel mean and std), so global colour says
  nothing about the class; the fingerprint is in the fine structure.
- Per family one seen architecture has a second instance with another seed (`inner`), and one generator differs
  in kind from every seen one (`unseen`): an image-to-image translator (a U-Net whose skip connection keeps
  detail the seen auto-encoders lose), and a latent diffusion model (noise and sampler on an auto-encoder's
  latents, pixels from its decoder), so that a detector trained on the seen generators loses accuracy on them,
  as detectors do on new generators in the field (Table 4, notebook 05, measures it). Inner and unseen
  generators are held out of every training split. Everything is stored as PNG at one size.

The world is cached under a key of its recipe; an interrupted build is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from dfxlib.config import user_cache
from dfxlib.data.generators import (TRANSLATOR_NOISE, Denoiser, LatentAE, UNetTranslator, UpsampleAE, ae_loss,
                                    alpha_bar, make_dm_loss, sdedit, train, translator_loss)

#: bump when anything below changes what is built (2: unseen generators that differ in kind)
MINIDFX_VERSION = "2"
METADATA = "minidfx.csv"
COMPLETE = "COMPLETE.json"

#: real sources -> scikit-image bundled photographs (licences from scikit-image's docstrings)
PHOTOS: dict[str, tuple[str, ...]] = {
    "people_objects": ("astronaut", "coffee", "chelsea"),
    "outdoor_space": ("rocket", "hubble_deep_field"),
    "microscopy": ("immunohistochemistry", "retina"),
}
PHOTO_LICENCES: dict[str, str] = {
    "astronaut": "NASA, public domain", "coffee": "CC0 (Rachel Michetti)", "chelsea": "CC0 (Stefan van der Walt)",
    "rocket": "SpaceX, public domain", "hubble_deep_field": "NASA, public domain",
    "immunohistochemistry": "no known copyright restrictions", "retina": "CC0 1.0 (Häggström)",
}
REGION_GRID = (2, 4)  # rows x columns of regions per photo


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of the world. role: seen (trained on), inner (seen architecture, other seed), unseen."""

    name: str
    family: str
    arch: str
    role: str = "seen"
    seed_offset: int = 0
    width: int = 16
    upsample: str = ""
    schedule: str = ""
    steps: int = 0
    strength: float = 0.0
    #: DM only: diffuse in the latent space of an auto-encoder (latent diffusion) instead of in pixels
    latent: bool = False


GENERATORS: tuple[GeneratorSpec, ...] = (
    GeneratorSpec("gan_tconv", "gan", "tconv", width=12, upsample="tconv"),
    GeneratorSpec("gan_tconv_seed2", "gan", "tconv", role="inner", seed_offset=1, width=12, upsample="tconv"),
    GeneratorSpec("gan_nearest", "gan", "nearest", width=12, upsample="nearest"),
    GeneratorSpec("gan_bilinear", "gan", "bilinear", width=12, upsample="bilinear"),
    GeneratorSpec("gan_pixelshuffle", "gan", "pixelshuffle", width=12, upsample="pixelshuffle"),
    GeneratorSpec("gan_unet", "gan", "unet_translator", role="unseen", width=12, upsample="unet"),
    GeneratorSpec("dm_lin8_s10", "dm", "lin8_s10", width=8, schedule="linear", steps=10, strength=0.5),
    GeneratorSpec("dm_lin8_s10_seed2", "dm", "lin8_s10", role="inner", seed_offset=1, width=8,
                  schedule="linear", steps=10, strength=0.5),
    GeneratorSpec("dm_cos16_s20", "dm", "cos16_s20", width=16, schedule="cosine", steps=20, strength=0.6),
    GeneratorSpec("dm_lin12_s4", "dm", "lin12_s4", width=12, schedule="linear", steps=4, strength=0.4),
    GeneratorSpec("dm_latent", "dm", "latent_cos32_s20", role="unseen", width=32, schedule="cosine", steps=20,
                  strength=0.5, latent=True),
)


@dataclass(frozen=True)
class Recipe:
    """What determines a world: change any field and the cache key changes."""

    per_generator: int = 200
    size: int = 64
    seed: int = 0
    train_steps: int = 300
    version: str = MINIDFX_VERSION

    def key(self) -> str:
        """Cache key of this recipe."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class MiniDFXError(OSError):
    """The world cannot be built or cached; the message names the folder."""


# ----------------------------------------------------------------------------------------------- real crops
def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as float32 RGB in [0, 1] (read from the installed package)."""
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return (arr[..., :3].astype(np.float32) / 255.0)


def _resize(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    img = Image.fromarray((arr * 255).round().astype(np.uint8))
    return np.asarray(img.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0


SCALES = (2.5, 3.5, 5.0)  # photo's shorter side, in crops per region row


def real_crops(n_per_source: int, size: int, rng: np.random.Generator) -> pd.DataFrame:
    """Random crops (at one of SCALES) of every photo, tagged with source, photo and region."""
    gr, gc = REGION_GRID
    rows = []
    for source, photos in PHOTOS.items():
        for k in range(n_per_source):
            rows.append({"source": source, "photo": photos[k % len(photos)], "region": int(rng.integers(gr * gc)),
                         "scale": SCALES[int(rng.integers(len(SCALES)))], "u": float(rng.uniform()),
                         "v": float(rng.uniform())})
    df = pd.DataFrame(rows)
    scaled: dict[tuple[str, float], np.ndarray] = {}
    crops = []
    for r in df.itertuples():
        if (r.photo, r.scale) not in scaled:
            full = load_photo(r.photo)
            h, w = full.shape[:2]
            f = r.scale * size * gr / min(h, w)
            scaled[(r.photo, r.scale)] = _resize(full, max(int(h * f), gr * size), max(int(w * f), gc * size))
        img = scaled[(r.photo, r.scale)]
        rh, rw = img.shape[0] // gr, img.shape[1] // gc
        ri, ci = divmod(r.region, gc)
        y = ri * rh + int(r.v * (rh - size))
        x = ci * rw + int(r.u * (rw - size))
        crops.append(img[y:y + size, x:x + size])
    df["pixels"] = crops
    df["group"] = df["photo"] + ":r" + df["region"].astype(str)
    return df.drop(columns=["u", "v", "scale"])


# -------------------------------------------------------------------------------------------- generators
def colour_match(fake: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Give `fake` the per-channel mean and std of `source` (keeps its fine structure, removes colour cues)."""
    mf, sf = fake.mean(axis=(0, 1)), fake.std(axis=(0, 1)) + 1e-6
    ms, ss = source.mean(axis=(0, 1)), source.std(axis=(0, 1))
    return np.clip((fake - mf) / sf * ss + ms, 0, 1)


def generate(spec: GeneratorSpec, pool: pd.DataFrame, recipe: Recipe, n: int) -> tuple[pd.DataFrame, float]:
    """Train `spec` on the pool's crops, then make `n` fakes from randomly chosen pool crops.

    Returns rows (pixels, group, photo) and the final training loss.
    """
    seed = recipe.seed * 1000 + GENERATORS.index(spec) * 10 + spec.seed_offset
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(np.stack(pool["pixels"].to_list())).permute(0, 3, 1, 2).contiguous()
    make = _trained(spec, data, recipe.train_steps, gen)
    pick = rng.integers(len(pool), size=n)
    src = data[pick]
    outs = []
    with torch.no_grad():
        for i in range(0, n, 64):
            yb = make[0](src[i:i + 64])
            outs.append(yb.permute(0, 2, 3, 1).numpy())
    fakes = np.concatenate(outs) if outs else np.zeros((0, recipe.size, recipe.size, 3), np.float32)
    rows = pd.DataFrame({"pixels": [colour_match(f, pool["pixels"].iloc[j]) for f, j in zip(fakes, pick)],
                         "group": pool["group"].iloc[pick].to_numpy(), "photo": pool["photo"].iloc[pick].to_numpy()})
    return rows, make[1]


def _trained(spec: GeneratorSpec, data: torch.Tensor, steps: int, gen: torch.Generator):
    """Train the networks of `spec` on `data` (N, 3, H, W); returns (images in [0, 1] -> fakes, last loss)."""
    if spec.upsample == "unet":
        unet = UNetTranslator(spec.width)
        loss = train(unet, translator_loss, data, steps, gen)
        unet.eval()
        return (lambda x: unet(x, noise=TRANSLATOR_NOISE)), loss
    if spec.family == "gan":
        ae = UpsampleAE(spec.upsample, spec.width)
        loss = train(ae, ae_loss, data, steps, gen)
        ae.eval()
        return (lambda x: ae(x, noise=0.1)), loss
    abar = alpha_bar(spec.schedule)
    if not spec.latent:
        model = Denoiser(spec.width)
        loss = train(model, make_dm_loss(abar), data, steps, gen)
        model.eval()
        return (lambda x: sdedit(model, x, abar, spec.strength, spec.steps, gen)), loss
    vae = LatentAE(spec.width)
    train(vae, ae_loss, data, steps, gen)
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(data[i:i + 256]) for i in range(0, len(data), 256)])
    scale = float(z.std()) or 1.0  # latents scaled to unit variance, as Stable Diffusion's 0.18215
    model = Denoiser(spec.width, channels=z.shape[1])
    loss = train(model, make_dm_loss(abar, pixels=False), z / scale, steps, gen)
    model.eval()
    return (lambda x: vae.decode(scale * sdedit(model, vae.encode(x) / scale, abar, spec.strength, spec.steps, gen,
                                                 pixels=False))), loss


# ---------------------------------------------------------------------------------------------- building
def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray((arr * 255).round().clip(0, 255).astype(np.uint8)).save(path, format="PNG")


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise MiniDFXError(f"{folder}: the MiniDFX cache folder is not writable ({exc.strerror or exc}); "
                           "set DFX_RUNS or run_dir to a writable place") from None


def is_complete(world: Path) -> bool:
    """A world folder is usable only if its build finished (marker written last)."""
    return (world / COMPLETE).is_file() and (world / METADATA).is_file()


def build(folder: str | Path, recipe: Recipe = Recipe(), progress: bool = True, log=print) -> Path:
    """Build (or reuse) the world for `recipe` under `folder/minidfx-<key>`; returns the world's root.

    The build happens in a temporary folder renamed into place at the end, so an interrupted build is never
    used; a leftover folder without its completion marker is deleted and rebuilt. Two processes building the
    same recipe at once (runs sharing `shared_folder()`) both finish, and the second uses the first's world.
    """
    folder = Path(folder)
    _writable(folder)
    world = folder / f"minidfx-{recipe.key()}"
    if is_complete(world):
        return world
    if world.exists():
        log(f"{world}: incomplete MiniDFX build found (interrupted?), rebuilding")
        shutil.rmtree(world)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".building-minidfx-"))
    try:
        rng = np.random.default_rng(recipe.seed)
        n_real = recipe.per_generator
        # the pool fakes are made from, and the real class itself, share the photos: group keeps them apart
        real = real_crops(n_real, recipe.size, rng)
        rows = []
        bar = tqdm(total=len(GENERATORS) + 1, desc="building MiniDFX", disable=not progress)
        for source in PHOTOS:
            (tmp / "real" / source).mkdir(parents=True)
        for i, r in enumerate(real.itertuples()):
            rel = f"real/{r.source}/{r.source}_{i:05d}.png"
            _save_png(r.pixels, tmp / rel)
            rows.append({"path": rel, "family": "real", "generator": r.source, "arch": "photo", "role": "seen",
                         "group": r.group, "photo": r.photo, "train_loss": np.nan})
        bar.update()
        for spec in GENERATORS:
            fakes, loss = generate(spec, real, recipe, recipe.per_generator)
            folder_rel = f"{spec.family}_generated/{spec.name}"
            (tmp / folder_rel).mkdir(parents=True, exist_ok=True)
            for i, f in enumerate(fakes.itertuples()):
                rel = f"{folder_rel}/{spec.name}_{i:05d}.png"
                _save_png(f.pixels, tmp / rel)
                rows.append({"path": rel, "family": spec.family, "generator": spec.name, "arch": spec.arch,
                             "role": spec.role, "group": f.group, "photo": f.photo, "train_loss": loss})
            bar.update()
        bar.close()
        pd.DataFrame(rows).to_csv(tmp / METADATA, index=False)
        (tmp / COMPLETE).write_text(json.dumps({**asdict(recipe), "seconds": time.perf_counter() - t0,
                                                "images": len(rows)}, indent=2))
        try:
            os.replace(tmp, world)
        except OSError:
            if not is_complete(world):
                raise
            log(f"{world}: built meanwhile by another process (same recipe), using it")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return world


def shared_folder() -> Path:
    """Where runs keep their worlds, one per recipe, for every run folder to reuse (a world depends on its
    recipe only): $DFX_CACHE/minidfx, else ~/.cache/dfx/minidfx (`config.user_cache`)."""
    return user_cache("minidfx")


def metadata(world: str | Path) -> pd.DataFrame:
    """The world's per-image metadata: path, family, generator, arch, role, group, photo, train_loss."""
    return pd.read_csv(Path(world) / METADATA, keep_default_na=False)


def generators_table() -> pd.DataFrame:
    """The generators of the world and their roles (seen / inner / unseen)."""
    rows = [{"family": "real", "generator": s, "arch": "photo", "role": "seen",
             "detail": ", ".join(PHOTOS[s])} for s in PHOTOS]
    for g in GENERATORS:
        detail = (f"U-Net image-to-image translator (half-resolution skip), width {g.width}" if g.upsample == "unet"
                  else f"auto-encoder, {g.upsample} upsampling, width {g.width}" if g.family == "gan" else
                  ("latent diffusion (4x smaller latents, pixel-shuffle decoder), " if g.latent else "")
                  + f"denoiser width {g.width}, {g.schedule} schedule, {g.steps} DDIM steps, strength {g.strength}")
        rows.append({"family": g.family, "generator": g.name, "arch": g.arch, "role": g.role,
                     "detail": detail + (f", seed +{g.seed_offset}" if g.seed_offset else "")})
    return pd.DataFrame(rows)
