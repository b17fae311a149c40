"""Metrics with one label convention and bootstrap confidence intervals (balanced sets are drawn by
`data.split.sample_groups`).

3-class labels follow CLASSES (0 dm, 1 gan, 2 real). Binary: fake (dm or gan) is the positive class (1),
real is 0; a 3-class prediction is collapsed by argmax (dm or gan -> fake) and its fake score is
p(dm) + p(gan).
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from dfxlib.data.index import CLASSES

REAL = CLASSES.index("real")


def to_binary(labels: np.ndarray) -> np.ndarray:
    """3-class labels -> 1 for fake (dm, gan), 0 for real."""
    return (np.asarray(labels) != REAL).astype(int)


def correct(labels: np.ndarray, probs: np.ndarray, binary: bool) -> np.ndarray:
    """Per image: is the argmax prediction of `probs` (N, 3) right (fake vs real when `binary`)?"""
    pred, labels = np.asarray(probs).argmax(1), np.asarray(labels)
    return to_binary(pred) == to_binary(labels) if binary else pred == labels


def fake_score(probs: np.ndarray) -> np.ndarray:
    """Probability of fake from 3-class probabilities: p(dm) + p(gan), as 1 - p(real) in float64 (float32
    would merge scores that differ in the 8th digit, and AUCs from the same predictions would disagree)."""
    return 1.0 - np.asarray(probs, dtype=np.float64)[:, REAL]


def _confusions(t: np.ndarray, p: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Confusion matrices (B, k, k) of the resamples given by the index rows of `idx` (B, n)."""
    b = idx.shape[0]
    codes = t[idx] * k + p[idx] + (np.arange(b) * k * k)[:, None]
    return np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)


def _scores(conf: np.ndarray, metric: str) -> np.ndarray:
    """accuracy, balanced accuracy (mean recall over the classes present), macro F1 over the classes present,
    or F1 of class 1 ("f1_pos"), from confusion matrices (B, k, k)."""
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(float)
    if metric == "accuracy":
        return tp.sum(1) / conf.sum((1, 2))
    rows, cols = conf.sum(2), conf.sum(1)
    if metric == "balanced_accuracy":
        recall = np.divide(tp, rows, out=np.zeros_like(tp), where=rows > 0)
        return (recall * (rows > 0)).sum(1) / np.maximum((rows > 0).sum(1), 1)
    denom = rows + cols  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if metric == "f1_pos":
        return f1[:, 1]
    present = denom > 0
    return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)


def _resamples(n_items: int, n: int, seed: int) -> np.ndarray:
    """Index rows (n, n_items) of `n` bootstrap resamples, drawn from `seed`."""
    return np.random.default_rng(seed).integers(0, n_items, (n, n_items))


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, k: int, metric: str, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric` ("accuracy", "balanced_accuracy", "f1_macro" or "f1_pos")
    over `n` resamples of the test set, computed from resampled confusion matrices (vectorised)."""
    return _intervals(y_true, y_pred, k, [metric], n, seed, level)[0]


def _intervals(y_true: np.ndarray, y_pred: np.ndarray, k: int, metrics: Sequence[str], n: int, seed: int,
               level: float = 0.95) -> list[tuple[float, float]]:
    """Bootstrap intervals of several metrics from the same resamples."""
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if len(y_true) == 0:
        return [(float("nan"), float("nan"))] * len(metrics)
    conf = _confusions(y_true, y_pred, k, _resamples(len(y_true), n, seed))
    a = (1 - level) / 2
    out = []
    for m in metrics:
        stats = _scores(conf, m)
        out.append((float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))))
    return out


def evaluate(y_true: np.ndarray, probs: np.ndarray, binary: bool, n_boot: int = 1000, seed: int = 0) -> dict:
    """Accuracy, F1 (macro over the classes present for 3 classes, fake-positive for binary), balanced
    accuracy, per-class precision/recall/F1, ROC AUC (fake positive), the confusion matrix, and 95% bootstrap
    intervals for accuracy, F1 and balanced accuracy; all from confusion matrices, so the point values and the
    intervals come from the same code. `probs` are 3-class probabilities; `binary` collapses labels and
    predictions."""
    y_true = np.asarray(y_true, dtype=int)
    pred = np.asarray(probs).argmax(axis=1)
    if binary:
        t, p, names, f1 = to_binary(y_true), to_binary(pred), ["real", "fake"], "f1_pos"
    else:
        t, p, names, f1 = y_true, pred, list(CLASSES), "f1_macro"
    k = len(names)
    conf = _confusions(t, p, k, np.arange(len(t))[None, :]) if len(t) else np.zeros((1, k, k), dtype=int)
    nan = float("nan")
    out: dict = {"n": int(len(t)), "accuracy": float(_scores(conf, "accuracy")[0]) if len(t) else nan,
                 "f1": float(_scores(conf, f1)[0]),
                 "balanced_accuracy": float(_scores(conf, "balanced_accuracy")[0]) if len(t) else nan}
    c = conf[0].astype(float)
    tp, rows, cols = np.diag(c), c.sum(1), c.sum(0)
    pr = np.divide(tp, cols, out=np.zeros(k), where=cols > 0)
    rc = np.divide(tp, rows, out=np.zeros(k), where=rows > 0)
    f1s = np.divide(2 * tp, rows + cols, out=np.zeros(k), where=rows + cols > 0)
    for i, name in enumerate(names):
        out[f"precision_{name}"], out[f"recall_{name}"], out[f"f1_{name}"] = float(pr[i]), float(rc[i]), float(f1s[i])
    from sklearn.metrics import roc_auc_score  # imported here: it takes seconds, and most processes never need it

    fake_t = to_binary(y_true)
    out["auc"] = float(roc_auc_score(fake_t, fake_score(probs))) if len(set(fake_t)) == 2 else nan
    out["accuracy_ci"], out["f1_ci"], out["balanced_accuracy_ci"] = _intervals(
        t, p, k, ["accuracy", f1, "balanced_accuracy"], n_boot, seed)
    out["confusion"] = conf[0]
    out["class_names"] = names
    return out


def _auc_ap(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision (sklearn's definitions, ties as one threshold) of a score for each row of
    sample weights `w` (B, n): bootstrap counts, or ones for the point value. nan where a class has no weight."""
    order = np.argsort(-score, kind="mergesort")
    s, pos, w = score[order], y[order].astype(bool), w[:, order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # one point per distinct threshold
    tp = np.cumsum(w * pos, axis=1)[:, last]
    fp = np.cumsum(w * ~pos, axis=1)[:, last]
    p_tot, n_tot = tp[:, -1:], fp[:, -1:]
    ok = (p_tot[:, 0] > 0) & (n_tot[:, 0] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr, fpr = np.c_[np.zeros(len(w)), tp / p_tot], np.c_[np.zeros(len(w)), fp / n_tot]
        auc = np.trapezoid(tpr, fpr, axis=1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        ap = (np.diff(tpr, axis=1) * precision).sum(1)
    return np.where(ok, auc, np.nan), np.where(ok, ap, np.nan)


def score_metrics(y: np.ndarray, score: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """ROC AUC and average precision of a score (fake = 1 positive) with 95% percentile bootstrap intervals
    over `n_boot` resamples (vectorised; resamples with one class are left out)."""
    y, score = np.asarray(y, dtype=int), np.asarray(score, dtype=float)
    nan = (float("nan"), float("nan"))
    if len(set(y)) < 2:
        return {"auc": float("nan"), "auc_ci": nan, "ap": float("nan"), "ap_ci": nan}
    auc, ap = _auc_ap(y, score, np.ones((1, len(y))))
    aucs, aps = [], []
    idx = _resamples(len(y), n_boot, seed)
    for i in range(0, n_boot, 100):  # blocks of 100 resamples bound the memory on large test sets
        block = idx[i:i + 100]
        counts = np.bincount((block + (np.arange(len(block)) * len(y))[:, None]).ravel(),
                             minlength=len(block) * len(y)).reshape(len(block), len(y))
        a, p = _auc_ap(y, score, counts.astype(float))
        aucs.append(a[np.isfinite(a)])
        aps.append(p[np.isfinite(p)])

    def ci(v: list[np.ndarray]) -> tuple[float, float]:
        v = np.concatenate(v) if v else np.zeros(0)
        return (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if len(v) else nan
    return {"auc": float(auc[0]), "auc_ci": ci(aucs), "ap": float(ap[0]), "ap_ci": ci(aps)}


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y` (labels 0..k-1), from the confusion matrix."""
    y, pred = np.asarray(y, dtype=int), np.asarray(pred, dtype=int)
    k = int(max(y.max(initial=0), pred.max(initial=0))) + 1
    return float(_scores(_confusions(y, pred, k, np.arange(len(y))[None, :]), "balanced_accuracy")[0])


def binary_scores(y: np.ndarray, score: np.ndarray, pred: np.ndarray, n_boot: int, seed: int) -> dict:
    """The columns of every binary table (%): balanced accuracy of `pred` with its 95% bootstrap interval, ROC
    AUC and average precision of `score` with theirs (fake = 1 positive)."""
    s = score_metrics(y, score, n_boot, seed)
    return {"balanced_accuracy": pct(balanced_accuracy(y, pred)),
            "balanced_accuracy_ci95": fmt_ci(bootstrap_ci(y, pred, 2, "balanced_accuracy", n_boot, seed)),
            "auc": pct(s["auc"]), "auc_ci95": fmt_ci(s["auc_ci"]), "ap": pct(s["ap"]), "ap_ci95": fmt_ci(s["ap_ci"])}


def binary_metrics(y_main: np.ndarray, pred_main: np.ndarray) -> dict[str, float]:
    """Accuracy, recall, precision and F1 with the main class (1) as positive: the paper's Table 1."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    pr, rc, f1, _ = precision_recall_fscore_support(y_main, pred_main, labels=[1], zero_division=0)
    return {"accuracy": float(accuracy_score(y_main, pred_main)), "recall": float(rc[0]),
            "precision": float(pr[0]), "f1": float(f1[0])}


def outcomes(correct: Sequence[bool] | np.ndarray) -> str:
    """Per-image outcomes as a string of 0 (wrong) and 1 (right), in the order of the set's rows: what a table
    row keeps so that two models scored on the same images can be compared pairwise later."""
    return "".join("1" if c else "0" for c in np.asarray(correct, dtype=bool))


def read_outcomes(text: str) -> np.ndarray:
    """The 0/1 array of an `outcomes` string (ValueError for any other character)."""
    text = str(text)
    if set(text) - {"0", "1"}:
        raise ValueError(f"outcomes: expected a string of 0 and 1, got {text[:20]!r}...")
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")


def difference_ci(pairs: Sequence[tuple[np.ndarray, np.ndarray]], paired: bool = True, n: int = 1000,
                  seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (in percentage points) of mean_k(acc(a_k) - acc(b_k)) over the sets k of
    `pairs` (per-image 0/1 outcomes). `paired`: a_k and b_k are the same images (one resample of the images
    serves both, so what the two models share cancels); else each is resampled on its own."""
    a_level = (1 - level) / 2
    diffs = np.zeros(n)
    for k, (a, b) in enumerate(pairs):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if paired and len(a) != len(b):
            raise ValueError(f"paired outcomes of different lengths ({len(a)} and {len(b)})")
        ia = _resamples(len(a), n, seed + 2 * k)
        ib = ia if paired else _resamples(len(b), n, seed + 2 * k + 1)
        diffs += a[ia].mean(1) - b[ib].mean(1)
    diffs *= 100.0 / max(len(pairs), 1)
    return float(np.quantile(diffs, a_level)), float(np.quantile(diffs, 1 - a_level))


def generator_spread(diff: np.ndarray, unit: np.ndarray, weight: Mapping[str, float],
                     level: float = 0.95) -> tuple[float, float]:
    """The (lo, hi) offsets, in points, of Student's t interval of sum_u weight[u] * mean(diff[unit == u]), to add
    to that value. The units other than "" are held-out generators, the claim's sampling unit: each slot of the
    mean could have held another generator, so their part of the variance is sum of their weights squared times
    the sample variance of their mean differences (which carries their images' noise too); unit "" (real
    images) adds weight^2 * var / n. Degrees of freedom by Welch-Satterthwaite: G - 1 for the generators, n - 1
    for the reals. With one generator its images are the unit. Simulated with four generators
    (benchmarks/sim_generator_interval.py) it covers 94-95% where 95% is asked; the two-level percentile
    bootstrap it replaced covered 84% when the generators' differences lie far apart, as they do on MiniDFX."""
    from scipy.stats import t

    diff, unit = np.asarray(diff, dtype=float), np.asarray(unit).astype(str)
    parts = {u: diff[unit == u] for u in weight}
    gens = [u for u in weight if u]
    terms: list[tuple[float, int]] = []  # (variance, degrees of freedom) of each independent part
    if len(gens) > 1:
        means = np.array([parts[u].mean() for u in gens])
        terms.append((sum(weight[u] ** 2 for u in gens) * means.var(ddof=1), len(gens) - 1))
    for u in ([""] if "" in weight else []) + (gens if len(gens) == 1 else []):
        d = parts[u]
        terms.append((weight[u] ** 2 * d.var(ddof=1) / len(d) if len(d) > 1 else 0.0, max(len(d) - 1, 1)))
    var = sum(v for v, _ in terms)
    if var <= 0:
        return 0.0, 0.0
    df = var ** 2 / sum(v ** 2 / k for v, k in terms)
    half = float(100 * t.ppf(1 - (1 - level) / 2, df) * np.sqrt(var))
    return -half, half


def pct(x: float) -> float:
    """A fraction as a percentage rounded to two decimals (the paper's tables)."""
    return round(100.0 * x, 2)


def fmt_ci(ci: tuple[float, float]) -> str:
    """A (lo, hi) fraction interval as '[lo, hi]' in percent."""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def parse_ci(text: str) -> tuple[float, float]:
    """The (lo, hi) of an interval written by `fmt_ci` (as it reads in a table: percent)."""
    lo, hi = (float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", str(text))[:2])
    return lo, hi
