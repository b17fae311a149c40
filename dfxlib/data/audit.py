"""The dataset audit: the paper's dataset table, class balance, format/size/mode confounds, duplicates and
unusable files. Used by notebook 01 and `dfx audit`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dfxlib.data.index import CLASSES, DatasetIndex
from dfxlib.evaluation import paper
from dfxlib.evaluation.tables import write_table

#: a rule that looks only at one file attribute and beats chance balanced accuracy by this much is a confound
CONFOUND_MARGIN = 0.15
_ORDER = {"dm": 0, "gan": 1, "real": 2, "fake": 3}


def _sizes(df: pd.DataFrame, most: int = 5) -> str:
    counts = (df["width"].astype(str) + "x" + df["height"].astype(str)).value_counts()
    shown = "; ".join(counts.index[:most])
    return shown + (f"; ... ({len(counts) - most} more)" if len(counts) > most else "")


def dataset_table(usable: pd.DataFrame) -> pd.DataFrame:
    """Per family and generator/source: images and distinct sizes, with the paper's figures where names match."""
    ref = {(f, paper.norm_name(g)): (n, s) for f, g, _, n, s in paper.DATASET}
    rows = []
    for (fam, gen), g in sorted(usable.groupby(["family", "generator"]), key=lambda kv: (_ORDER[kv[0][0]], kv[0][1])):
        pn, ps = ref.get((fam, paper.norm_name(gen)), (None, ""))
        rows.append({"family": fam, "generator": gen, "images": len(g), "sizes": _sizes(g),
                     "paper_images": pn if pn is not None else "", "paper_sizes": ps})
    for fam, g in sorted(usable.groupby("family"), key=lambda kv: _ORDER[kv[0]]):
        rows.append({"family": fam, "generator": "(total)", "images": len(g), "sizes": _sizes(g),
                     "paper_images": paper.DATASET_TOTALS.get(fam, ""), "paper_sizes": ""})
    return pd.DataFrame(rows, columns=["family", "generator", "images", "sizes", "paper_images", "paper_sizes"])


def attribute_rule_accuracy(labels: pd.Series, values: pd.Series) -> float:
    """Balanced accuracy of the best rule that predicts the label from one attribute value alone."""
    p = pd.crosstab(values, labels, normalize="columns")  # P(value | class)
    best = p.idxmax(axis=1)  # per value, the class it points to
    return float(sum(p.loc[best[best == c].index, c].sum() for c in p.columns) / len(p.columns))


def confounds(usable: pd.DataFrame) -> pd.DataFrame:
    """For file format, colour mode and size: how well each alone predicts the class (3-class and real/fake)."""
    df = usable.assign(size=usable["width"].astype(str) + "x" + usable["height"].astype(str),
                       binary=usable["family"].map(lambda f: "real" if f == "real" else "fake"))
    rows = []
    tasks = [("real vs fake", df["binary"]), ("dm vs gan vs real", df["family"].where(df["family"].isin(CLASSES)))]
    for attr in ("format", "mode", "size"):
        for task, labels in tasks:
            ok = labels.notna()
            k = labels[ok].nunique()
            if k < 2:
                continue
            acc = attribute_rule_accuracy(labels[ok], df.loc[ok, attr])
            chance = 1.0 / k
            top = (df[ok].groupby(labels[ok])[attr]
                   .agg(lambda s: f"{s.value_counts(normalize=True).iloc[0]:.0%} {s.value_counts().index[0]}"))
            profile = "; ".join(f"{c}: {v}" for c, v in top.items())
            confounded = acc - chance >= CONFOUND_MARGIN
            msg = (f"WARNING: {attr} is confounded with the label ({task}): a rule that reads only the {attr} "
                   f"reaches {acc:.0%} balanced accuracy (chance {chance:.0%}); {profile}. A detector can learn "
                   f"the {attr} instead of the image; re-encode or resize the data the same way for every class."
                   if confounded else "")
            rows.append({"attribute": attr, "task": task, "rule_balanced_accuracy": acc, "chance": chance,
                         "confounded": confounded, "per_class": profile, "warning": msg})
    return pd.DataFrame(rows, columns=["attribute", "task", "rule_balanced_accuracy", "chance", "confounded",
                                       "per_class", "warning"])


def duplicates(usable: pd.DataFrame) -> pd.DataFrame:
    """Groups of files with identical content: how many, in which classes and generators, within or across."""
    rows = []
    for sha, g in usable.groupby("sha256"):
        if len(g) < 2:
            continue
        fams = sorted(set(g["family"]), key=_ORDER.get)
        rows.append({"sha256": sha[:16], "copies": len(g), "families": ", ".join(fams),
                     "generators": ", ".join(sorted(set(g["generator"]))),
                     "kind": "across classes" if len(fams) > 1 else "within class",
                     "paths": "; ".join(sorted(g["path"])[:4]) + (" ..." if len(g) > 4 else "")})
    return pd.DataFrame(rows, columns=["sha256", "copies", "families", "generators", "kind", "paths"])


def breakdown(usable: pd.DataFrame, attr: str) -> pd.DataFrame:
    """Counts of `attr` values (format, mode, ...) per family."""
    t = pd.crosstab(usable["family"], usable[attr])
    t = t.reindex(sorted(t.index, key=_ORDER.get))
    t.columns = [str(c) for c in t.columns]
    return t.reset_index()


@dataclass
class Audit:
    """Everything the audit found; `save()` writes the tables, `warnings` are the sentences to show."""

    dataset: pd.DataFrame
    classes: pd.DataFrame
    formats: pd.DataFrame
    modes: pd.DataFrame
    confounds: pd.DataFrame
    duplicates: pd.DataFrame
    unusable: pd.DataFrame
    converted: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    def save(self, folder: str | Path) -> None:
        """Write every audit table as CSV and Markdown into `folder`."""
        write_table(self.dataset, "dataset", folder, title="Dataset (ours beside the paper's)",
                    notes="paper_images / paper_sizes: the DeepFeatureX-SN dataset table, where names match.")
        for name, df in (("audit_classes", self.classes), ("audit_formats", self.formats),
                         ("audit_modes", self.modes), ("audit_confounds", self.confounds),
                         ("audit_duplicates", self.duplicates), ("audit_unusable", self.unusable),
                         ("audit_converted", self.converted)):
            write_table(df, name, folder)


def audit(index: DatasetIndex) -> Audit:
    """Audit a dataset index."""
    usable = index.usable
    classes = (usable.groupby("family").size().reindex(sorted(usable["family"].unique(), key=_ORDER.get))
               .rename("images").reset_index())
    if len(classes):
        classes["share"] = classes["images"] / classes["images"].sum()
    conf = confounds(usable) if len(usable) else confounds(usable.head(0))
    dup = duplicates(usable)
    bad = index.bad[["path", "family", "generator", "error"]]
    conv = usable.loc[usable["note"] != "", ["path", "family", "generator", "mode", "note"]].reset_index(drop=True)
    warnings = list(index.problems)
    warnings += [w for w in conf["warning"] if w]
    across = int((dup["kind"] == "across classes").sum()) if len(dup) else 0
    if across:
        warnings.append(f"WARNING: {across} group(s) of identical images appear in more than one class")
    if len(bad):
        warnings.append(f"{len(bad)} file(s) cannot be used (see audit_unusable): "
                        + "; ".join(f"{p}: {e}" for p, e in zip(bad["path"][:5], bad["error"][:5]))
                        + (" ..." if len(bad) > 5 else ""))
    if len(conv):
        warnings.append(f"{len(conv)} image(s) are not plain RGB and will be converted (see audit_converted)")
    return Audit(dataset=dataset_table(usable), classes=classes, formats=breakdown(usable, "format"),
                 modes=breakdown(usable, "mode"), confounds=conf, duplicates=dup, unusable=bad, converted=conv,
                 warnings=warnings)
