"""Generalization (the paper's Section 5.2 and Table 4) and the evaluation in the wild.

- Nine test sets T_{G,D,G/D}^{i,o,i/o}: fakes of GAN and/or DM generators that are `inner` (a seen
  architecture with other initial conditions) and/or `unseen`, divided equally among the generators of the set,
  with as many real images (equally from the real sources) from the test split. Roles come from
  `Run.generator_roles`. A generator some model trained on never fills a set: without inner generators (user
  data that names none) the T^i sets are empty and left out, and Table 4 says what to set. Reals are drawn per
  set without reuse while unused ones remain. With `generalization_root`, the sets come from
  outside the dataset, as the paper built them: the reference's named folders (`inner_gan/0_real`, ...) used
  as found, or any dataset whose generators are all unseen, sampled like the run's own.
- Every model is a `dfxlib.evaluation.scoring.Detector`: complete models, the baselines of `dfxlib.models.baselines` (plain
  classifiers, linear probes) and the compared detectors.
- Wild: any folder in the paper's layout, per generator and real source, balanced accuracy and AUC, and the
  same after re-encoding every image with one JPEG quality (what changes is format bias).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from dfxlib.data import perturb
from dfxlib.data.batches import ImageStore
from dfxlib.data.index import CLASS_INDEX, CLASSES, DataError, DatasetIndex
from dfxlib.data.split import Split, sample_groups
from dfxlib.evaluation import paper
from dfxlib.evaluation.metrics import (balanced_accuracy, correct, evaluate, fake_score, fmt_ci, outcomes, pct,
                                       score_metrics, to_binary)
from dfxlib.evaluation.scoring import GROUPS, Detector
from dfxlib.models.features import features_many
from dfxlib.run import Run

#: (name, fake families, roles) of the paper's nine test sets, in Table 4's order
TSETS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = tuple(
    (f"T_{f}^{r}", fams, roles)
    for f, fams in (("G", ("gan",)), ("D", ("dm",)), ("G/D", ("gan", "dm")))
    for r, roles in (("i", ("inner",)), ("o", ("unseen",)), ("i/o", ("inner", "unseen"))))


# ------------------------------------------------------------------------------------------- test sets
def equal_sample(df: pd.DataFrame, by: str, n: int, seed: int) -> pd.DataFrame:
    """`n` rows taken in turn from every value of `by` (each group shuffled with `seed`): as equal as the
    group sizes allow; a small group's shortfall is made up by the others."""
    groups = [g.sample(frac=1.0, random_state=seed) for _, g in df.groupby(by, sort=True)]
    taken = [g.iloc[i] for i in range(max((len(g) for g in groups), default=0)) for g in groups if i < len(g)]
    return pd.DataFrame(taken[:n]).reset_index(drop=True)


def tset_pools(run: Run, index, split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Candidate fakes (with their role) and reals of the test sets: fakes of `inner` and `unseen`
    generators (never trained on: the holdout split), reals of the test and holdout splits. A generator that
    was trained on never fills a set: without inner generators the T^i sets are empty, and left out."""
    rows = split.table.assign(role=lambda d: run.roles_of(index, d))
    fakes = rows[(rows["family"] != "real") & rows["role"].isin(["inner", "unseen"])
                 & (rows["split"] == "holdout")].assign(source="held-out generator")
    reals = rows[(rows["family"] == "real") & rows["split"].isin(["test", "holdout"])]
    reals = reals.assign(source=reals["split"].map({"test": "test split", "holdout": "held-out real source"}))
    return fakes.reset_index(drop=True), reals.reset_index(drop=True)


#: what to set so that Table 4 has the sets it lacks (notebook 05 and `dfx plan` say it)
MISSING_SETS = ("Table 4 needs generators no model trained on: set `generalization_root` to the paper's external "
                "test sets (or any dataset of unseen generators), or hold generators out of training with "
                "`holdout_generators` (unseen, the T^o sets), `inner_generators` (a seen architecture trained "
                "again, the T^i sets) or `train_generators` (train on these only).")


#: the reference's generalization folders (testing_generalization.py) -> dfx's test-set names
REFERENCE_SETS: dict[str, str] = {"inner_gan": "T_G^i", "outer_gan": "T_G^o", "io_gan": "T_G^i/o",
                                  "inner_dm": "T_D^i", "outer_dm": "T_D^o", "io_dm": "T_D^i/o",
                                  "inner_all": "T_G/D^i", "outer_all": "T_G/D^o", "all": "T_G/D^i/o"}


def external_sets(run: Run, index: DatasetIndex) -> dict[str, pd.DataFrame]:
    """The nine test sets from the external folder of `index` (`generalization_root`). Named folders
    (REFERENCE_SETS, each with 0_real/ and 1_fake/, a generator's sub-folder optional): every image used as
    found, as the reference does (not balanced). Any other layout: a dataset never trained on, its generators
    `unseen` unless named in `inner_generators`, sampled into the sets like the run's own (`tset_fakes`).
    DataError names the folder when it cannot make the sets."""
    root, usable = index.root, index.usable
    if usable.empty:
        raise DataError(f"{root}: no usable images for the generalization test sets")
    tops = set(usable["path"].str.split("/").str[0])
    named = tops & set(REFERENCE_SETS)
    if index.layout == "binary" and named:
        if tops - named:
            raise DataError(f"{root}: folders {', '.join(sorted(tops - named))} are not test sets (expected "
                            f"{', '.join(REFERENCE_SETS)}, each with 0_real/ and 1_fake/)")
        return _named_sets(root, usable)
    families = set(usable["family"])
    if "fake" in families:
        unknown = sorted(usable.loc[usable["family"] == "fake", "generator"].unique())
        raise DataError(f"{root}: the family (GAN or DM) of {', '.join(unknown)} is not known; use the paper "
                        "layout (dm_generated/, gan_generated/, real/) or a manifest with a family column")
    if "real" not in families:
        raise DataError(f"{root}: no real images for the generalization test sets")
    rows = usable.assign(source=f"external ({root})")
    fakes = rows[rows["family"] != "real"]
    fakes = fakes.assign(role=np.where(fakes["generator"].isin(run.config.inner_generators), "inner", "unseen"))
    return make_tsets(fakes, rows[rows["family"] == "real"], run.config.tset_fakes, run.config.seed)


def _named_sets(root: Path, usable: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The reference's named folders as test sets: family from the set's name (`all`: GAN or DM, unknown),
    generator or real source from the sub-folder under 1_fake/ or 0_real/ when there is one."""
    parts = usable["path"].str.split("/")
    df = usable.assign(set=parts.str[0], source=f"external ({root})",
                       generator=[p[2] if len(p) > 3 else p[0] for p in parts])
    out = {}
    for folder, name in REFERENCE_SETS.items():
        part = df[df["set"] == folder]
        fam = folder.rsplit("_", 1)[-1]
        fam = fam if fam in ("gan", "dm") else "fake"
        part = part.assign(family=part["family"].where(part["family"] == "real", fam))
        out[name] = part.assign(label=part["family"].map({**CLASS_INDEX, "fake": -1})).sort_values("path") \
            .reset_index(drop=True)
    return out


def tsets(run: Run, index: DatasetIndex, split: Split, store: ImageStore) -> tuple[ImageStore, dict[str, pd.DataFrame]]:
    """The generalization test sets of this run and the store that holds their images: from
    `generalization_root` when set (`external_sets`), else from the run's own held-out generators."""
    ext = run.generalization_root()
    if ext is None:
        fakes, reals = tset_pools(run, index, split)
        return store, make_tsets(fakes, reals, run.config.tset_fakes, run.config.seed)
    ext_index = run.index(ext)
    roles = run.generator_roles(index)
    trained = set(roles.loc[(roles["role"] == "seen") & (roles["family"] != "real"), "generator"].str.lower())
    return run.images(ext_index), {name: mark_trained(df, trained) for name, df in external_sets(run, ext_index).items()}


def mark_trained(df: pd.DataFrame, trained: set[str]) -> pd.DataFrame:
    """External test-set rows with the role of each fake: `seen` when a generator of that name (any case) was
    trained on in this run (the sets table then says the set is NOT held out), else its role or `external`."""
    fake = df["family"] != "real"
    role = df["role"] if "role" in df else pd.Series("external", index=df.index)
    return df.assign(role=role.where(~(fake & df["generator"].str.lower().isin(trained)), "seen").where(fake, ""))


def make_tsets(fakes: pd.DataFrame, reals: pd.DataFrame, n_fakes: int, seed: int) -> dict[str, pd.DataFrame]:
    """The nine test sets (name -> rows with path, family, generator, role, label). Each has n fakes divided
    equally among its generators and n reals equally from the real sources, n = min(n_fakes, fakes
    available, reals available); a set without generators is empty. Reals are drawn without reuse across the
    sets while unused ones remain (the paper drew 2,000 per set), then from those already drawn: column
    `reused` marks a real image that an earlier set also holds."""
    out = {}
    used: set[str] = set()
    for name, fams, roles in TSETS:
        pool = fakes[fakes["family"].isin(fams) & fakes["role"].isin(roles)]
        gens = pool["generator"].nunique()
        if gens == 0:
            out[name] = pool.assign(label=pd.Series(dtype=int), reused=pd.Series(dtype=bool))
            continue
        per_gen = min(n_fakes // gens, int(pool.groupby("generator").size().min()), len(reals) // gens)
        n = per_gen * gens
        fresh = reals[~reals["path"].isin(used)]
        picked = equal_sample(fresh, "generator", n, seed)
        if len(picked) < n:
            again = equal_sample(reals[reals["path"].isin(used)], "generator", n - len(picked), seed)
            picked = pd.concat([picked.assign(reused=False), again.assign(reused=True)])
        else:
            picked = picked.assign(reused=False)
        used |= set(picked["path"])
        part = pd.concat([equal_sample(pool, "generator", n, seed).assign(reused=False), picked])
        out[name] = part.assign(label=part["family"].map(CLASS_INDEX)).sort_values("path").reset_index(drop=True)
    return out


def tsets_table(sets: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """What each test set holds: its fake generators with role and count, its real sources with count, where
    each comes from, whether it is a true held-out set (no fake of a generator any model trained on) and how
    many of its reals an earlier set also holds."""
    rows = []
    for name, df in sets.items():
        fake, real = df[df["family"] != "real"], df[df["family"] == "real"]
        source = (df["source"] if "source" in df else pd.Series("", index=df.index)).fillna("")
        role = (fake["role"] if "role" in fake else pd.Series("external", index=fake.index)).fillna("external")
        gens = ", ".join(f"{g} ({r}, {n})" for (g, r), n in fake.assign(role=role).groupby(["generator", "role"])
                         .size().items())
        reused = int(real["reused"].sum()) if "reused" in real else 0
        rows.append({"set": name, "fakes": len(fake), "reals": len(real), "generators": gens,
                     "real sources": _counts(real), "held out": "yes" if len(fake) and not (role == "seen").any()
                     else "no" if len(fake) else "",
                     "reals shared with earlier sets": reused,
                     "fake source": ", ".join(sorted(set(source[fake.index]) - {""})),
                     "real source": ", ".join(sorted(set(source[real.index]) - {""}))})
    return pd.DataFrame(rows)


def _counts(df: pd.DataFrame) -> str:
    return ", ".join(f"{g} ({n})" for g, n in df.groupby("generator").size().items())


def sources_note(table: pd.DataFrame) -> str:
    """One footnote per non-empty test set (rows of `tsets_table`): its generators with role and count, its real
    sources with count, whether it is a true held-out set, and the reals it shares with earlier sets."""
    notes = []
    for _, r in table.iterrows():
        if not (r["fakes"] or r["reals"]):
            continue
        shared = f", {r['reals shared with earlier sets']} of them also in an earlier set" \
            if r["reals shared with earlier sets"] else ""
        held = {"yes": "a true held-out set", "no": "NOT a held-out set"}.get(r["held out"], "")
        notes.append(f"{r['set']}: {r['fakes']} fakes of {r['generators']} ({r['fake source']}); {r['reals']} reals "
                     f"of {r['real sources']} ({r['real source']}{shared}){'; ' + held if held else ''}.")
    return " ".join(notes)


# --------------------------------------------------------------------------------------------- table 4
def conditions(jpeg_quality: int) -> list[tuple[str, str]]:
    """(condition label, perturbation variant): RAW, and JPEG at `jpeg_quality` (QF<q>) when it is not 0."""
    variants = ["raw"] + ([f"jpeg{jpeg_quality}"] if jpeg_quality else [])
    return [(perturb.condition(v), v) for v in variants]


def evaluate_tsets(run: Run, store: ImageStore, sets: dict[str, pd.DataFrame], detectors: Sequence[Detector],
                   jpeg_quality: int) -> pd.DataFrame:
    """Binary accuracy (%) with 95% bootstrap intervals, balanced accuracy and AUC of every detector on every
    non-empty test set, RAW and (optionally) JPEG; the paper's Table 4 value beside ours."""
    return evaluate_sets(run, store, sets, detectors, conditions(jpeg_quality), paper_values=True)


def evaluate_sets(run: Run, store: ImageStore, sets: dict[str, pd.DataFrame], detectors: Sequence[Detector],
                  variants: Sequence[tuple[str, str]], paper_values: bool = False) -> pd.DataFrame:
    """Binary metrics of every detector on every non-empty set (rows with path and 3-class label) under each
    (condition label, perturbation variant): accuracy with its 95% interval, balanced accuracy, AUC."""
    cfg = run.config
    rels = sorted(set().union(*(set(df["path"]) for df in sets.values())))
    rows = []
    for cond, variant in variants:
        fn = None if variant == "raw" else perturb.get(variant)
        features_many(run, store, [m for d in detectors for m in d.models], rels, variant, fn)
        for det in detectors:
            probs = dict(zip(rels, det.predict(store, rels, variant, fn))) if rels else {}
            for name, df in sets.items():
                if df.empty:
                    continue
                p_all = np.stack([probs[p] for p in df["path"]])
                r = evaluate(df["label"].to_numpy(), p_all, binary=True, n_boot=cfg.bootstrap, seed=cfg.seed)
                row = {"group": det.group, "model": det.name, "set": name, "condition": cond,
                       "accuracy": pct(r["accuracy"]), "accuracy_ci95": fmt_ci(r["accuracy_ci"]),
                       "balanced_accuracy": pct(r["balanced_accuracy"]), "auc": pct(r["auc"]), "n": r["n"],
                       "outcomes": outcomes(correct(df["label"].to_numpy(), p_all, binary=True))}
                if paper_values:
                    row["paper_accuracy"] = paper.table4(det.paper_row, name) if det.paper_row else ""
                rows.append(row)
    columns = ["group", "model", "set", "condition", "accuracy", "accuracy_ci95", "balanced_accuracy", "auc", "n",
               "outcomes"] + (["paper_accuracy"] if paper_values else [])
    return pd.DataFrame(rows, columns=columns)  # the columns even with no set to score (Table 4 then says so)


def table4(long: pd.DataFrame) -> pd.DataFrame:
    """Table 4's shape: one row per condition and detector, one column per test set (accuracy %), and their
    mean over the sets present. Then the paper's rows (its test sets were JPEG, quality not stated): its value
    for each model here that it trained the same way (condition `paper`); DeepFeatureX-SN's published average
    (beside the SN rows; backbone not stated); and the rows dfx cannot retrain (`paper.PAPER_ONLY`, condition
    `paper only (not retrained)`), never beside a retrained model."""
    sets = [s for s, _, _ in TSETS if s in set(long["set"])]

    def wide(df: pd.DataFrame, value: str) -> pd.DataFrame:
        w = df.pivot_table(index=["condition", "group", "model"], columns="set", values=value, sort=False)
        w = w.reindex(columns=sets)
        w["mean"] = w.mean(axis=1).round(2)
        return w.reset_index()
    parts = [wide(long, "accuracy")]
    ref = long[long["paper_accuracy"].astype(str) != ""].assign(
        condition="paper", paper_accuracy=lambda d: pd.to_numeric(d["paper_accuracy"]))
    if len(ref):
        parts.append(wide(ref.drop_duplicates(["group", "model", "set"]), "paper_accuracy"))
    extra = []
    if (long["group"] == GROUPS["siamese"]).any():
        extra.append({"condition": "paper", "group": GROUPS["siamese"], "model": "published (backbone not stated)",
                      "mean": paper.SN_GENERALIZATION})
    for name in paper.PAPER_ONLY:
        vals = {s: paper.table4(name, s) for s in sets}
        extra.append({"condition": "paper only (not retrained)", "group": "Detectors", "model": name, **vals,
                      "mean": round(float(np.mean(list(vals.values()))), 2) if vals else np.nan})
    return pd.concat(parts + [pd.DataFrame(extra)], ignore_index=True)


# ------------------------------------------------------------------------------------------------- wild
#: what the wild tables' conditions mean (their notes)
WILD_NOTES = ("Evaluation only: nothing was trained or tuned on these images. Condition RAW: the files as found; "
              "QF<q>: every image re-encoded as JPEG at quality q (`wild_reencode`).")


def evaluate_wild(run: Run, root: Path, detectors: Sequence[Detector], reencode: int,
                  per_group: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image class probabilities, fake probability and prediction of every detector on the folder `root`
    (any layout the index reads), as found and (when `reencode` is not 0) after re-encoding every image as JPEG
    at that quality; with `per_group`, on at most that many images of each generator and real source (seeded
    by the run's seed). Returns the per-image table and the index's unusable files (path, error)."""
    index = run.index(root)
    usable = index.usable.sort_values("path").reset_index(drop=True)  # the sample does not hang on listing order
    if per_group:
        usable = sample_groups(usable, ["family", "generator"], per_group, run.config.seed).reset_index(drop=True)
    store = run.images(index, keep=True)
    rels = list(usable["path"])
    y = (usable["family"] != "real").to_numpy().astype(int)
    out = []
    for cond, variant in conditions(reencode):
        fn = None if variant == "raw" else perturb.get(variant)
        features_many(run, store, [m for d in detectors for m in d.models], rels, variant, fn)
        for det in detectors:
            probs = det.predict(store, rels, variant, fn)
            pred = to_binary(probs.argmax(1))
            out.append(usable[["path", "family", "generator", "format"]].assign(
                group=det.group, model=det.name, condition=cond, fake=y,
                **{f"p_{c}": probs[:, k] for k, c in enumerate(CLASSES)},
                p_fake=fake_score(probs), pred_fake=pred, correct=(pred == y).astype(int)))
    return pd.concat(out, ignore_index=True), index.bad[["path", "error"]]


def wild_summary(per_image: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """Per detector and condition: accuracy, balanced accuracy with a 95% bootstrap interval, AUC (fake
    positive), recall on fakes and on reals (%)."""
    rows = []
    for (group, model, cond), g in per_image.groupby(["group", "model", "condition"], sort=False):
        probs = g[[f"p_{c}" for c in CLASSES]].to_numpy()
        y3 = np.where(g["fake"].to_numpy() == 1, CLASS_INDEX["gan"], CLASS_INDEX["real"])  # binary: any fake index
        r = evaluate(y3, probs, binary=True, n_boot=n_boot, seed=seed)
        rows.append({"group": group, "model": model, "condition": cond, "n": r["n"], "accuracy": pct(r["accuracy"]),
                     "balanced_accuracy": pct(r["balanced_accuracy"]),
                     "balanced_accuracy_ci95": fmt_ci(r["balanced_accuracy_ci"]), "auc": pct(r["auc"]),
                     "recall_fake": pct(r["recall_fake"]), "recall_real": pct(r["recall_real"])})
    return pd.DataFrame(rows)


def wild_groups(per_image: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) per generator and real source (rows) for each detector and condition (columns)."""
    df = per_image.assign(column=per_image["group"] + " " + per_image["model"] + " (" + per_image["condition"] + ")")
    acc = df.pivot_table(index=["family", "generator"], columns="column", values="correct", aggfunc="mean",
                         sort=False) * 100
    n = per_image.drop_duplicates("path").groupby(["family", "generator"]).size().rename("n")
    return acc.round(2).join(n).reset_index()


def format_bias(per_image: pd.DataFrame) -> pd.DataFrame:
    """What re-encoding changes, per detector: balanced accuracy and AUC as found and re-encoded, the share of
    predictions that flip, and the mean fake probability of PNG and of JPEG files in each condition. A
    'file format alone' row predicts fake for every non-JPEG file: how far format by itself goes."""
    conds = list(dict.fromkeys(per_image["condition"]))
    rows = []
    for (group, model), g in per_image.groupby(["group", "model"], sort=False):
        row: dict = {"detector": f"{group} {model}"}
        preds = {}
        for cond in conds:
            c = g[g["condition"] == cond].set_index("path")
            preds[cond] = c["pred_fake"]
            row[f"balanced_accuracy ({cond})"] = pct(balanced_accuracy(c["fake"], c["pred_fake"]))
            row[f"auc ({cond})"] = pct(score_metrics(c["fake"].to_numpy(), c["p_fake"].to_numpy(), 0)["auc"])
            for fmt, part in c.groupby(c["format"].where(c["format"] == "JPEG", "not JPEG")):
                row[f"mean p_fake {fmt} ({cond})"] = round(float(part["p_fake"].mean()), 3)
        if len(conds) == 2:
            a, b = preds[conds[0]], preds[conds[1]].reindex(preds[conds[0]].index)
            row["predictions flipped %"] = pct(float((a != b).mean()))
        rows.append(row)
    first = per_image.drop_duplicates("path")
    guess = (first["format"] != "JPEG").astype(int)
    rows.append({"detector": "file format alone (not JPEG = fake)",
                 f"balanced_accuracy ({conds[0]})": pct(balanced_accuracy(first["fake"], guess))})
    return pd.DataFrame(rows)
