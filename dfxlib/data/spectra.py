"""Fourier fingerprints and two sanity baselines for a dataset.

- colour baseline: a classifier on global colour statistics (per-channel mean and std). If it beats chance
  by much, the classes differ in content or colour, not in generator fingerprints.
- spectral baseline: a classifier on the log power spectrum of the high-pass residual (the fingerprint). If
  it does not beat chance, there is no fingerprint to find.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dfxlib.data.decode import load_rgb

#: sanity bounds on the built-in world, as margins over chance balanced accuracy. Colour statistics must stay
#: within COLOUR_MAX_MARGIN of chance (fakes are colour-matched to their source crops, so only sampling noise
#: should remain: about two standard errors on the smoke profile's ~30 test images per class); the residual
#: spectrum must beat chance by SPECTRAL_MIN_MARGIN (a fingerprint a linear model finds in every generator).
COLOUR_MAX_MARGIN = 0.20
SPECTRAL_MIN_MARGIN = 0.25


def _gray(arr: np.ndarray) -> np.ndarray:
    return arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0


def residual(arr: np.ndarray) -> np.ndarray:
    """High-pass residual of an RGB uint8 image: grayscale minus its 3x3 box blur (edges reflected)."""
    g = _gray(arr)
    p = np.pad(g, 1, mode="reflect")
    blur = sum(p[i:i + g.shape[0], j:j + g.shape[1]] for i in range(3) for j in range(3)) / 9.0
    return g - blur


def log_spectrum(arr: np.ndarray) -> np.ndarray:
    """Centred log power spectrum of the residual."""
    f = np.fft.fftshift(np.fft.fft2(residual(arr)))
    return np.log(np.abs(f) ** 2 + 1e-8)


def colour_features(arr: np.ndarray) -> np.ndarray:
    """Per-channel mean and standard deviation (6 numbers)."""
    a = arr.reshape(-1, 3).astype(np.float64) / 255.0
    return np.concatenate([a.mean(0), a.std(0)])


def spectral_features(arr: np.ndarray, pooled: int = 8) -> np.ndarray:
    """Log spectrum of the residual, average-pooled to `pooled` x `pooled` (the folded fingerprint)."""
    s = log_spectrum(arr)
    h, w = s.shape
    k = max(1, h // pooled)
    s = s[: k * pooled, : k * pooled].reshape(pooled, k, pooled, k).mean(axis=(1, 3))
    return s.ravel()


def load_arrays(paths: Iterable[Path]) -> list[np.ndarray]:
    """Decode images to uint8 RGB arrays (one decode per image)."""
    return [np.asarray(load_rgb(p)) for p in paths]


def mean_spectra(arrays: list[np.ndarray], labels: list[str]) -> dict[str, np.ndarray]:
    """Mean centred log spectrum of the residual per label (images of one size per label)."""
    out: dict[str, list[np.ndarray]] = {}
    for a, lab in zip(arrays, labels):
        out.setdefault(lab, []).append(log_spectrum(a))
    return {k: np.mean(v, axis=0) for k, v in out.items()}


def baseline(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             seed: int = 0) -> float:
    """Balanced accuracy on the test set of a standardised logistic regression fit on the training set."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(train_x, train_y)
    return float(balanced_accuracy_score(test_y, clf.predict(test_x)))


def sanity_baselines(rows: pd.DataFrame, arrays: list[np.ndarray], seed: int = 0) -> pd.DataFrame:
    """Colour and spectral baselines, 3-class (dm/gan/real) and binary (real/fake): trained on the `base`
    split, tested on `test` (other rows are ignored). `rows` has columns family and split, aligned with
    `arrays`."""
    feats = {"colour statistics": np.stack([colour_features(a) for a in arrays]),
             "residual spectrum": np.stack([spectral_features(a) for a in arrays])}
    tr, te = (rows["split"] == "base").to_numpy(), (rows["split"] == "test").to_numpy()
    out = []
    for task, y, k in (("dm vs gan vs real", rows["family"].to_numpy(), 3),
                       ("real vs fake", np.where(rows["family"] == "real", "real", "fake"), 2)):
        for name, x in feats.items():
            acc = baseline(x[tr], y[tr], x[te], y[te], seed)
            out.append({"baseline": name, "task": task, "balanced_accuracy": acc, "chance": 1.0 / k,
                        "train_images": int(tr.sum()), "test_images": int(te.sum())})
    return pd.DataFrame(out)


def check_sanity(table: pd.DataFrame) -> list[str]:
    """Sentences for every baseline outside its bound (empty when the world is sound)."""
    problems = []
    for r in table.itertuples():
        margin = r.balanced_accuracy - r.chance
        if r.baseline == "colour statistics" and margin > COLOUR_MAX_MARGIN:
            problems.append(f"colour statistics separate the classes ({r.task}: {r.balanced_accuracy:.0%}, chance "
                            f"{r.chance:.0%}): content or colour, not fingerprints, tells the classes apart")
        if r.baseline == "residual spectrum" and margin < SPECTRAL_MIN_MARGIN:
            problems.append(f"the residual spectrum barely beats chance ({r.task}: {r.balanced_accuracy:.0%}, "
                            f"chance {r.chance:.0%}): there is no fingerprint to find")
    return problems
