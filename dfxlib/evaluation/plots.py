"""Figures shared by the notebooks (matplotlib/seaborn; each function returns the Figure)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from dfxlib.data.decode import ImageError, load_rgb
from dfxlib.data.index import DatasetIndex
from dfxlib.evaluation.paper import CONDITIONS

_FAMILY_ORDER = ["dm", "gan", "real", "fake"]


def class_counts(usable: pd.DataFrame) -> plt.Figure:
    """Bar chart of images per family, stacked by generator/source."""
    t = pd.crosstab(usable["family"], usable["generator"])
    t = t.reindex([f for f in _FAMILY_ORDER if f in t.index])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    t.plot.barh(stacked=True, ax=ax, legend=len(t.columns) <= 16, width=0.7)
    ax.set_xlabel("images")
    ax.set_ylabel("")
    if len(t.columns) <= 16:
        ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title("Images per class and generator/source")
    fig.tight_layout()
    return fig


def size_distribution(usable: pd.DataFrame) -> plt.Figure:
    """Histogram of image sides (max of width and height) per family, log-scaled where sizes vary a lot."""
    df = usable.assign(side=usable[["width", "height"]].max(axis=1))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.histplot(df, x="side", hue="family", hue_order=[f for f in _FAMILY_ORDER if f in set(df["family"])],
                 multiple="dodge", discrete=df["side"].nunique() < 20, shrink=0.8, ax=ax)
    ax.set_xlabel("longest side (px)")
    ax.set_title("Image sizes per class")
    fig.tight_layout()
    return fig


def sample_grid(index: DatasetIndex, per_generator: int = 6, seed: int = 0, thumb: int = 64) -> plt.Figure:
    """A grid of random sample images, one row per generator/source."""
    usable = index.usable
    groups = sorted(usable.groupby(["family", "generator"]),
                    key=lambda kv: (_FAMILY_ORDER.index(kv[0][0]), kv[0][1]))
    n_rows, n_cols = max(1, len(groups)), max(1, per_generator)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.2 * n_cols + 1.2, 1.2 * n_rows), squeeze=False)
    rng = np.random.default_rng(seed)
    for r, ((fam, gen), g) in enumerate(groups):
        pick = g.iloc[rng.permutation(len(g))[:n_cols]]
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(pick):
                try:
                    img = load_rgb(index.abspath(pick.iloc[c]["path"]))
                    img.thumbnail((thumb, thumb))
                    ax.imshow(img)
                except ImageError:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=6)
        axes[r, 0].text(-0.1, 0.5, f"{fam}/{gen}", transform=axes[r, 0].transAxes, ha="right", va="center",
                        fontsize=7)
    fig.subplots_adjust(left=0.2, wspace=0.05, hspace=0.05)
    return fig


def spectra_grid(spectra: dict[str, np.ndarray], titles: dict[str, str] | None = None, cols: int = 5) -> plt.Figure:
    """Mean log power spectra of the high-pass residual, one panel per generator/source (the fingerprints)."""
    names = list(spectra)
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), squeeze=False)
    lo = min(float(np.percentile(s, 2)) for s in spectra.values())
    hi = max(float(np.percentile(s, 99.5)) for s in spectra.values())
    for ax, name in zip(axes.flat, names):
        ax.imshow(spectra[name], cmap="magma", vmin=lo, vmax=hi)
        ax.set_title((titles or {}).get(name, name), fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Mean log power spectrum of the high-pass residual", fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(logs: dict[str, pd.DataFrame], title: str = "Validation loss per epoch") -> plt.Figure:
    """Validation loss against epoch, one line per model (`logs`: name -> fit history)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, h in logs.items():
        if len(h):
            ax.plot(h["epoch"], h["val_loss"], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _panels(n: int, cols: int, width: float, height: float) -> tuple[plt.Figure, list]:
    """A figure with a grid of `n` panels (`cols` per row, each width x height inches); unused ones hidden."""
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def pictures(items: list[tuple[str, np.ndarray]], cols: int, title: str) -> plt.Figure:
    """Images in a grid: (title, array) with RGB arrays in [0, 1] shown as they are, 2-D ones in magma."""
    fig, axes = _panels(len(items), cols, 1.9, 2.0)
    for ax, (name, img) in zip(axes, items):
        ax.imshow(np.clip(img, 0.0, 1.0), cmap=None if img.ndim == 3 else "magma", interpolation="nearest")
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_matrices(items: list[tuple[str, np.ndarray, list[str]]], cols: int = 4) -> plt.Figure:
    """Row-normalised confusion matrices (`items`: title, matrix, class names)."""
    fig, axes = _panels(len(items), cols, 2.6, 2.5)
    for ax, (title, cm, names) in zip(axes, items):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        sns.heatmap(norm, annot=cm, fmt="d", cbar=False, cmap="Blues", vmin=0, vmax=1, ax=ax,
                    xticklabels=names, yticklabels=names, annot_kws={"fontsize": 7})
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    fig.tight_layout()
    return fig


def quality_curves(rob: pd.DataFrame) -> plt.Figure:
    """Accuracy against JPEG quality factor, one line per backbone and kind, 3-class and binary side by side."""
    order = list(CONDITIONS)
    df = rob[rob["condition"].isin(order)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, task in zip(axes, ("multiclass", "binary")):
        for (backbone, kind), g in df[df["task"] == task].groupby(["backbone", "kind"], sort=False):
            g = g.set_index("condition").reindex(order)
            ax.plot(order, g["accuracy"], marker="o", label=f"{backbone} / {kind}")
            if g["paper_accuracy"].astype(str).str.len().gt(0).all():
                ax.plot(order, pd.to_numeric(g["paper_accuracy"]), ls="--", color="grey", label=f"paper {backbone}")
        ax.set_title("3-class" if task == "multiclass" else "binary (fake positive)")
        ax.set_xlabel("JPEG quality")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[1].legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def accuracy_heatmap(table: pd.DataFrame, index: list[str], title: str) -> plt.Figure:
    """Heatmap of a wide table of accuracies (%): rows labelled by the `index` columns, one column per
    remaining numeric column."""
    df = table.set_index(index).select_dtypes("number")
    df.index = [" / ".join(str(v) for v in (i if isinstance(i, tuple) else (i,))) for i in df.index]
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(df.columns), 0.8 + 0.32 * len(df)))
    sns.heatmap(df, annot=True, fmt=".1f", cmap="RdYlGn", vmin=40, vmax=100, cbar=False, ax=ax,
                annot_kws={"fontsize": 7})
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("")
    fig.tight_layout()
    return fig


def roc_curves(per_image: pd.DataFrame, groups: dict[str, list[str]]) -> plt.Figure:
    """ROC curves (fake positive) of every detector, one panel per group of roles (each with the reals);
    `per_image` has detector, role, fake, p_fake."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4), squeeze=False)
    for ax, (title, roles) in zip(axes[0], groups.items()):
        for det, g in per_image.groupby("detector", sort=False):
            part = g[g["role"].isin(roles + ["real"])]
            if part["fake"].nunique() < 2:
                continue
            fpr, tpr, _ = roc_curve(part["fake"], part["p_fake"])
            ax.plot(fpr, tpr, label=f"{det} ({roc_auc_score(part['fake'], part['p_fake']):.2f})")
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("false positive rate (real called fake)")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def pca_scatter(panels: list[tuple[str, np.ndarray, np.ndarray]], names: tuple[str, str] = ("real", "fake"),
                cols: int = 2) -> plt.Figure:
    """2-D PCA of feature sets (`panels`: title, features (N, D), binary labels (N,)), one panel each."""
    from sklearn.decomposition import PCA

    fig, axes = _panels(len(panels), cols, 3.6, 3.2)
    for ax, (title, x, y) in zip(axes, panels):
        z = PCA(n_components=2, random_state=0).fit_transform(x - x.mean(0))
        for c, name in enumerate(names):
            ax.scatter(z[y == c, 0], z[y == c, 1], s=4, alpha=0.5, label=name)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(fontsize=6, markerscale=3)
    fig.tight_layout()
    return fig
