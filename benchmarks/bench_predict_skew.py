"""Benchmark: does `dfx predict` give the notebooks' answer? Every trained model of a run on the same files
through the notebooks' path (`generalization.evaluate_wild`, what notebooks 05 and 06 run on a folder) and
through `dfx predict --detector all` (`dfxlib.predict`), and through the reduced decode `dfx predict` used before
(a large JPEG decoded at 1/2, 1/4 or 1/8 scale, other large images box-reduced, then resized).

    python benchmarks/bench_predict_skew.py [--run-dir runs/mini] [--wild ../shared/wild] [--large 48]

Sets: the wild folder (when it exists) and `--large` test-split images of the run's built-in world made 4x and
8x the input size (a textured upscale, saved as JPEG quality 95 and as PNG, the cases where a reduced decode
and a full decode differ). Prints, per model and set, for "predict vs notebooks" and "predict vs reduced decode":
the largest |delta p_fake|, the share of decisions that flip, and the change in balanced accuracy (points).
The run folder must hold a finished run (`dfx run`); it gains caches, the linear probe's classifier and DIF's
centres (what notebooks 05 and 06 write).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

import dfxlib
from dfxlib.config import load
from dfxlib.data.decode import load_rgb
from dfxlib.data.index import FAMILY_FOLDERS
from dfxlib.evaluation import generalization as gz
from dfxlib.evaluation.metrics import balanced_accuracy
from dfxlib.predict import inference, served


def large_set(run, folder: Path, n: int) -> Path:
    """`n` test-split images per factor (4x, 8x the input size), upscaled with a seeded texture, as JPEG and PNG,
    in the paper's layout under `folder`."""
    index = run.index()
    test = run.split(index).rows("test").sample(n=n, random_state=0)
    rng = np.random.default_rng(0)
    size = run.config.input_size
    folders = {family: name for name, family in FAMILY_FOLDERS.items()}
    for factor in (4, 8):
        for r in test.itertuples():
            img = load_rgb(index.abspath(r.path)).resize((size * factor, size * factor), Image.Resampling.BICUBIC)
            a = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (size * factor, size * factor, 3))
            img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
            out = folder / folders[r.family] / f"{r.generator}_x{factor}"
            out.mkdir(parents=True, exist_ok=True)
            stem = Path(r.path).stem
            img.save(out / f"{stem}.jpg", quality=95)
            img.save(out / f"{stem}.png")
    return folder


def reduced_decode(model, path: str) -> torch.Tensor:
    """`model`'s input for `path` as `dfx predict` read it before this benchmark's change: a JPEG decoded at the
    scale that keeps each side at least twice the input, any large image then box-reduced by an integer
    factor to at least twice the input."""
    fit = model.input_size
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (2 * fit, 2 * fit))
        img = img.convert("RGB")
        factor = (max(1, img.width // (2 * fit)), max(1, img.height // (2 * fit)))
        return model.prepare(img.reduce(factor) if factor != (1, 1) else img)


def compare(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> dict:
    """How p_fake `a` differs from `b` on images labelled `y` (1 fake): the largest |a - b|, the share of
    decisions p_fake > 0.5 that flip, and a's balanced accuracy minus b's (points)."""
    return {"max_abs_dp_fake": float(np.abs(a - b).max()),
            "flipped_%": round(100 * float(((a > .5) != (b > .5)).mean()), 2),
            "d_balanced_acc_pts": round(100 * (balanced_accuracy(y, (a > .5).astype(int))
                                               - balanced_accuracy(y, (b > .5).astype(int))), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/mini")
    ap.add_argument("--wild", default="../shared/wild")
    ap.add_argument("--large", type=int, default=48, help="test images per upscale factor")
    args = ap.parse_args()
    cfg = load(Path(args.run_dir) / "config.json")
    run = dfxlib.start(cfg.profile, run_dir=args.run_dir, overrides={"seed": cfg.seed, "progress": False})
    detectors = served.notebook_detectors(run)
    models = {m.name: m for m in served.load_models(run.dir, "all", device="cpu")}
    tmp = Path(tempfile.mkdtemp(prefix="dfx-skew-"))
    sets = {"large (4x, 8x; JPEG, PNG)": large_set(run, tmp / "large", args.large)}
    if Path(args.wild).is_dir():
        sets = {"wild": Path(args.wild), **sets}
    rows = []
    try:
        for set_name, folder in sets.items():
            per, _ = gz.evaluate_wild(run, folder, list(detectors.values()), reencode=0)
            paths = sorted(str(folder / p) for p in per["path"].unique())
            got = pd.DataFrame(inference.predict_paths(list(models.values()), paths)).set_index("path").loc[paths]
            for name, det in detectors.items():
                ref = per[(per["group"] == det.group) & (per["model"] == det.name)]
                ref = ref.assign(path=[str(folder / p) for p in ref["path"]]).set_index("path").loc[paths]
                p_pred, y = got[f"{name}.p_fake"].to_numpy(float), ref["fake"].to_numpy()
                rows.append({"set": set_name, "model": name, "vs": "notebooks", "n": len(paths),
                             **compare(p_pred, ref["p_fake"].to_numpy(float), y)})
                if name in ("ssp", "dif"):  # native pixels: no reduced decode to compare with
                    continue
                model = models[name]
                with torch.no_grad():
                    old = np.concatenate([1 - model.forward(torch.stack([reduced_decode(model, p) for p in
                                                                         paths[i:i + 64]]))[:, 2].double().numpy()
                                          for i in range(0, len(paths), 64)])
                rows.append({"set": set_name, "model": name, "vs": "reduced decode", "n": len(paths),
                             **compare(p_pred, old, y)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
