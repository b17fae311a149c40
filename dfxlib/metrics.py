"""Metrics with one label convention, balanced test sets, and bootstrap confidence intervals.

3-class labels follow CLASSES (0 dm, 1 gan, 2 real). Binary: fake (dm or gan) is the positive class (1),
real is 0; a 3-class prediction is collapsed by argmax (dm or gan -> fake) and its fake score is
p(dm) + p(gan).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score)

from .index import CLASSES

REAL = CLASSES.index("real")


def sample_groups(df: pd.DataFrame, by: str, n: int | Callable[[int], int], seed: int) -> pd.DataFrame:
    """A seeded sample of `n` rows (or `n(group size)`) from every value of `by`, rows kept in `df`'s order
    and index."""
    picked = []
    for _, g in df.groupby(by, sort=True):
        k = n(len(g)) if callable(n) else n
        picked.extend(g.sample(n=min(k, len(g)), random_state=seed).index)
    return df.loc[sorted(picked, key=df.index.get_loc)]


def to_binary(labels: np.ndarray) -> np.ndarray:
    """3-class labels -> 1 for fake (dm, gan), 0 for real."""
    return (np.asarray(labels) != REAL).astype(int)


def fake_score(probs: np.ndarray) -> np.ndarray:
    """Probability of fake from 3-class probabilities: p(dm) + p(gan)."""
    return 1.0 - np.asarray(probs)[:, REAL]


def _confusions(t: np.ndarray, p: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Confusion matrices (B, k, k) of the resamples given by the index rows of `idx` (B, n)."""
    b = idx.shape[0]
    codes = t[idx] * k + p[idx] + (np.arange(b) * k * k)[:, None]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def _scores(conf: np.ndarray, metric: str) -> np.ndarray:
    """accuracy, macro F1 over the classes present, or F1 of class 1, from confusion matrices (B, k, k)."""
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(float)
    if metric == "accuracy":
        return tp.sum(1) / conf.sum((1, 2))
    rows, cols = conf.sum(2), conf.sum(1)
    denom = rows + cols  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if metric == "f1_pos":
        return f1[:, 1]
    present = denom > 0
    return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, k: int, metric: str, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric` ("accuracy", "f1_macro" or "f1_pos") over `n` resamples of
    the test set, computed from resampled confusion matrices (vectorised)."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, len(y_true), (n, len(y_true)))
    stats = _scores(_confusions(y_true, y_pred, k, idx), metric)
    a = (1 - level) / 2
    return float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))


def evaluate(y_true: np.ndarray, probs: np.ndarray, binary: bool, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy, F1 (macro for 3 classes, fake-positive for binary), balanced accuracy, per-class
    precision/recall/F1, ROC AUC (fake positive), the confusion matrix, and 95% bootstrap intervals for
    accuracy and F1. `probs` are 3-class probabilities; `binary` collapses labels and predictions."""
    y_true = np.asarray(y_true)
    pred = np.asarray(probs).argmax(axis=1)
    if binary:
        t, p, names, f1 = to_binary(y_true), to_binary(pred), ["real", "fake"], "f1_pos"
        f1_value = float(f1_score(t, p, pos_label=1, zero_division=0))
    else:
        t, p, names, f1 = y_true, pred, list(CLASSES), "f1_macro"
        f1_value = float(f1_score(t, p, average="macro", zero_division=0))
    labels = list(range(len(names)))
    out: dict = {"n": int(len(t)), "accuracy": float(accuracy_score(t, p)), "f1": f1_value,
                 "balanced_accuracy": float(balanced_accuracy_score(t, p)) if len(t) else float("nan")}
    pr, rc, f1s, _ = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    for i, name in enumerate(names):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = float(pr[i]), float(rc[i]), float(f1s[i])
    fake_t = to_binary(y_true)
    out["auc"] = (float(roc_auc_score(fake_t, fake_score(probs))) if len(set(fake_t)) == 2 else float("nan"))
    out["accuracy_ci"] = bootstrap_ci(t, p, len(names), "accuracy", n_boot, seed)
    out["f1_ci"] = bootstrap_ci(t, p, len(names), f1, n_boot, seed)
    out["confusion"] = confusion_matrix(t, p, labels=labels)
    out["class_names"] = names
    return out


def binary_metrics(y_main: np.ndarray, pred_main: np.ndarray) -> dict[str, float]:
    """Accuracy, recall, precision and F1 with the main class (1) as positive: the paper's Table 1."""
    pr, rc, f1, _ = precision_recall_fscore_support(y_main, pred_main, labels=[1], zero_division=0)
    return {"accuracy": float(accuracy_score(y_main, pred_main)), "recall": float(rc[0]),
            "precision": float(pr[0]), "f1": float(f1[0])}


def pct(x: float) -> float:
    """A fraction as a percentage rounded to two decimals (the paper's tables)."""
    return round(100.0 * x, 2)


def fmt_ci(ci: tuple[float, float]) -> str:
    """A (lo, hi) fraction interval as '[lo, hi]' in percent."""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
