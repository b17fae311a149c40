"""The split (the paper's "guidance file"): base models 40% / fusion 40% / test 20%.

Seeded, stratified by (family, generator), grouped so that identical content (same sha256) never lands in
two splits. Generators marked as held out ("unseen") go to the `holdout` split and are never trained on.
The split is persisted (`split.csv` + `split.json`) and reused; a different seed, different fractions or a
changed dataset is refused with a clear message unless the caller asks to rebuild.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from dfxlib.config import Config, ConfigError
from dfxlib.data.index import CLASS_INDEX, CLASSES, DatasetIndex
from dfxlib.evaluation.tables import atomic_write_text

SPLITS: tuple[str, ...] = ("base", "fusion", "test", "holdout")
#: what a generator (or real source) is to the models: trained on, a seen architecture with other initial
#: conditions (Table 4's "inner"), or never seen
ROLES: tuple[str, ...] = ("seen", "inner", "unseen")


class SplitMismatchError(Exception):
    """The persisted split does not belong to this dataset or these settings."""


@dataclass
class Split:
    """A persisted split: `table` has columns path, family, generator, split; lookups are dict lookups."""

    table: pd.DataFrame
    meta: dict

    def __post_init__(self) -> None:
        self._by_path: dict[str, str] = dict(zip(self.table["path"], self.table["split"]))

    def of(self, path: str) -> str:
        """The split of a relative path; KeyError names the path if it is not in the split."""
        try:
            return self._by_path[path]
        except KeyError:
            raise KeyError(f"{path}: not in the split (was the dataset changed after the split was made?)") from None

    def rows(self, name: str) -> pd.DataFrame:
        """The rows of one split."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return self.table[self.table["split"] == name].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """Image counts per family, generator and split (one column per split, plus the share in base)."""
        counts = (self.table.groupby(["family", "generator", "split"]).size()
                  .unstack("split", fill_value=0).reindex(columns=list(SPLITS), fill_value=0))
        counts["total"] = counts.sum(axis=1)
        return counts.reset_index()


def sample_groups(df: pd.DataFrame, by: str | list[str], n: int | Callable[[int], int], seed: int) -> pd.DataFrame:
    """A seeded sample of `n` rows (or `n(group size)`) from every value of `by` (a column, or columns taken
    together), rows kept in `df`'s order and index."""
    picked = []
    for _, g in df.groupby(by, sort=True):
        k = n(len(g)) if callable(n) else n
        picked.extend(g.sample(n=min(k, len(g)), random_state=seed).index)
    return df.loc[sorted(picked, key=df.index.get_loc)]


def fingerprint(usable: pd.DataFrame) -> str:
    """A hash of the dataset's usable (path, content) pairs."""
    h = hashlib.sha256()
    for p, s in sorted(zip(usable["path"], usable["sha256"])):
        h.update(f"{p}\t{s}\n".encode())
    return h.hexdigest()


def make_split(usable: pd.DataFrame, seed: int, fractions: Sequence[float] = (0.4, 0.4, 0.2),
               holdout: Sequence[str] = (), groups: pd.Series | None = None) -> pd.DataFrame:
    """Assign every usable image to base / fusion / test (or holdout); returns path, family, generator, split.

    Images of held-out generators go to `holdout`, and so does any other copy of their content. The rest is
    cut into groups that never straddle two splits: `groups` (aligned with `usable`, e.g. the photo region an
    image was made from) where given, else identical content (sha256). Groups are dealt in seeded order, each
    to the split that keeps the shares of every (family, generator) stratum it touches closest to target.
    """
    df = usable[["path", "family", "generator", "sha256"]].copy()
    df["group"] = groups.to_numpy() if groups is not None else df["sha256"].to_numpy()
    df = df.sort_values("path").reset_index(drop=True)
    held = df["generator"].isin(set(holdout))
    held |= df["sha256"].isin(set(df.loc[held, "sha256"]))
    split = pd.Series("holdout", index=df.index, dtype=object)
    rest = df[~held]
    stratum = rest["family"] + "/" + rest["generator"]
    counts = pd.crosstab(rest["group"], stratum)  # groups x strata
    keys = counts.index.to_numpy()
    c = counts.to_numpy(dtype=float)
    target = np.outer(c.sum(axis=0), np.asarray(fractions, dtype=float))  # strata x 3
    have = np.zeros_like(target)
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    names = SPLITS[:3]
    for g in rng.permutation(len(keys)):
        row = c[g][:, None]
        # the split whose strata move least away from their shares (for a group in one stratum: the split
        # furthest below its share)
        cost = ((have + row - target) ** 2 - (have - target) ** 2).sum(axis=0)
        k = int(np.argmin(cost))
        assign[keys[g]] = names[k]
        have[:, k] += c[g]
    split[~held] = rest["group"].map(assign)
    df["split"] = split
    return df[["path", "family", "generator", "split"]]


def load_or_make_split(usable: pd.DataFrame, folder: str | Path, seed: int,
                       fractions: Sequence[float] = (0.4, 0.4, 0.2), holdout: Sequence[str] = (),
                       rebuild: bool = False, groups: pd.Series | None = None, write: bool = True) -> Split:
    """Reuse `folder/split.csv` if it was made from this dataset with these settings, else make it (and save
    it, unless `write` is false: what the split would be, for a plan).

    A persisted split that does not match raises SplitMismatchError (nothing is overwritten) unless
    `rebuild` is true.
    """
    folder = Path(folder)
    csv_path, meta_path = folder / "split.csv", folder / "split.json"
    meta = {"seed": int(seed), "fractions": [float(f) for f in fractions], "holdout": sorted(holdout),
            "fingerprint": fingerprint(usable), "n_images": int(len(usable))}
    if csv_path.exists() and not rebuild:
        try:
            old = json.loads(meta_path.read_text())
            table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        except (OSError, json.JSONDecodeError, pd.errors.ParserError) as exc:
            raise SplitMismatchError(
                f"{folder}: the persisted split cannot be read ({exc}); pass rebuild_split=true to make a new one"
            ) from exc
        diffs = [f"{k}: saved {old.get(k)!r}, now {meta[k]!r}" for k in ("seed", "fractions", "holdout")
                 if old.get(k) != meta[k]]
        if old.get("fingerprint") != meta["fingerprint"]:
            saved, now = set(table["path"]), set(usable["path"])
            diffs.append(f"dataset changed: {len(now - saved)} image(s) added, {len(saved - now)} removed, "
                         f"{old.get('n_images')} -> {meta['n_images']} usable images (or content changed)")
        if diffs:
            raise SplitMismatchError(
                f"{csv_path} was made for other settings or data ({'; '.join(diffs)}). Models trained on it "
                "would leak test images if the split changed silently. Pass rebuild_split=true "
                "(dfx run -p rebuild_split=true) to rebuild it and retrain, or use another run_dir.")
        return Split(table=table, meta=old)
    table = make_split(usable, seed, fractions, holdout, groups)
    if write:
        atomic_write_text(csv_path, table.to_csv(index=False))
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return Split(table=table, meta=meta)


def train_val(df: pd.DataFrame, frac: float, seed: int, by: str = "target") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `df` into training and validation parts, stratified by `by`, seeded."""
    val = sample_groups(df, by, lambda k: max(1, int(round(k * frac))) if k > 1 else 0, seed)
    train = df.drop(index=val.index)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def split_id(split: Split) -> str:
    """A short hash of the split's settings and data: a model trained on another split is not reused."""
    return hashlib.sha256(json.dumps(split.meta, sort_keys=True).encode()).hexdigest()[:12]


def test_sets(split: Split, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The balanced 3-class test set (same count per class) and the balanced binary one (as many fakes,
    drawn from dm and gan, as reals), both from the test split, seeded."""
    test = split.rows("test").assign(label=lambda d: d["family"].map(CLASS_INDEX))
    multi = sample_groups(test, "label", int(test.groupby("label").size().min()), seed).reset_index(drop=True)
    real = test[test["family"] == "real"]
    fake = test[test["family"] != "real"]
    k = min(len(real), len(fake))
    binary = pd.concat([real.sample(n=k, random_state=seed), fake.sample(n=k, random_state=seed)])
    return multi, binary.sort_values("path").reset_index(drop=True)


def generator_roles(index: DatasetIndex, cfg: Config, marks: pd.Series | None = None) -> pd.DataFrame:
    """family, generator, role (`ROLES`) for every generator/source of `index`. `marks` (generator -> role) are
    the dataset's own (MiniDFX marks its held-out generators); otherwise every generator is `seen`, then
    `holdout_generators` are `unseen` and `inner_generators` `inner`; with `train_generators`, every fake
    generator it does not name is `unseen` (and every real source it does not name, when it names one). A name
    that is not in the dataset, or a class left with nothing to train on, raises ConfigError."""
    gens = index.usable[["family", "generator"]].drop_duplicates().sort_values(["family", "generator"])
    gens["role"] = gens["generator"].map(marks).fillna("seen") if marks is not None else "seen"
    known = set(gens["generator"])
    checked = [("train_generators", cfg.train_generators), ("holdout_generators", cfg.holdout_generators)]
    if not cfg.generalization_root:  # else inner generators may be the external sets' own
        checked.append(("inner_generators", cfg.inner_generators))
    for key, names in checked:
        missing = sorted(set(names) - known)
        if missing:
            raise ConfigError(f"setting {key!r}: {', '.join(missing)} not among the generators of {index.root} "
                              f"({', '.join(sorted(known))})")
    if cfg.train_generators:
        named = gens["generator"].isin(cfg.train_generators)
        real = gens["family"] == "real"
        restrict = ~real | (real & named).any()
        gens.loc[restrict & ~named & (gens["role"] == "seen"), "role"] = "unseen"
    gens.loc[gens["generator"].isin(cfg.inner_generators), "role"] = "inner"
    gens.loc[gens["generator"].isin(cfg.holdout_generators), "role"] = "unseen"
    if cfg.train_generators or cfg.holdout_generators:
        seen = set(gens.loc[gens["role"] == "seen", "family"])
        left = [f for f in CLASSES if f in set(gens["family"]) and f not in seen]
        if left:
            raise ConfigError(f"settings 'train_generators' / 'holdout_generators' leave no {', '.join(left)} "
                              f"generator to train on (seen: {', '.join(gens.loc[gens['role'] == 'seen', 'generator'])})")
    return gens.reset_index(drop=True)


def roles_of(roles: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """The role of each row of `rows` (from `generator_roles`), by its family and generator together: one name
    may be a generator of two families (a real source and a fake generator both called "biggan", or none)."""
    keys = pd.MultiIndex.from_frame(rows[["family", "generator"]])
    by = roles.set_index(["family", "generator"])["role"]
    return pd.Series(by.reindex(keys).fillna("seen").to_numpy(), index=rows.index)
