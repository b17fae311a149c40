"""The paper's claims tested on the numbers a run computed, one table row per claim and subject.

Each row names the claim, the subject (backbone, model) and condition, the value under test and what it is
compared with, their difference, whether the claim holds, and a sentence built from those numbers. Notebooks
save these tables and print the sentences: what the text says about a result is always what the run measured.
"""

from __future__ import annotations

import re

import pandas as pd

from .config import BASE_KINDS
from .evaluation import GROUPS

#: how a statement names each kind of model
NAMES: dict[str, str] = {"unbalanced": "DeepFeatureX Net", "siamese": "DeepFeatureX-SN",
                         "plain": "the plain classifier", "linear probe": "the linear probe"}

COLUMNS = ["claim", "subject", "condition", "value_of", "value", "reference", "reference_value", "difference",
           "holds", "statement"]


def _row(claim: str, subject: str, condition: str, value_of: str, value: float, reference: str, ref: float,
         holds: bool | None = None, statement: str = "") -> dict:
    holds = bool(value > ref) if holds is None else bool(holds)
    statement = statement or (f"{subject}, {condition}: {value_of} ({value:.2f}) "
                              f"{'beats' if holds else 'does NOT beat'} {reference} ({ref:.2f}), "
                              f"{value - ref:+.2f} points.")
    return {"claim": claim, "subject": subject, "condition": condition, "value_of": value_of, "value": value,
            "reference": reference, "reference_value": ref, "difference": round(value - ref, 2), "holds": holds,
            "statement": statement}


def table(rows: list[dict]) -> pd.DataFrame:
    """Rows of `_row` as a table with the columns in order (an empty table when there is nothing to test)."""
    return pd.DataFrame(rows, columns=COLUMNS)


def fusion(ablation: pd.DataFrame) -> pd.DataFrame:
    """Does fusing the three base models beat each base model used alone? From notebook 03's ablation table
    (backbone, kind, features, accuracy %): the complete model against the best single base model."""
    rows = []
    for (backbone, kind), g in ablation.groupby(["backbone", "kind"], sort=False):
        full = g[g["features"].str.contains("complete")]
        single = g[~g["features"].str.contains("complete")]
        if full.empty or single.empty:
            continue
        best = single.loc[single["accuracy"].idxmax()]
        rows.append(_row("fusion beats every base model alone", f"{backbone}, {NAMES.get(kind, kind)}",
                         "RAW, 3-class", "the complete model", float(full["accuracy"].iloc[0]),
                         f"the best single one ({best['features']})", float(best["accuracy"])))
    return table(rows)


def _pairs(rob: pd.DataFrame, kinds: tuple[str, ...], refs: tuple[str, ...], claim: str) -> list[dict]:
    rows = []
    for (cond, task, backbone), g in rob.groupby(["condition", "task", "backbone"], sort=False):
        acc = g.set_index("kind")["accuracy"]
        for kind in kinds:
            for ref in refs:
                if kind in acc and ref in acc and kind != ref:
                    rows.append(_row(claim.format(ref=NAMES[ref]), backbone, f"{cond}, {task}",
                                     NAMES[kind], float(acc[kind]), NAMES[ref], float(acc[ref])))
    return rows


def baselines(rob: pd.DataFrame) -> pd.DataFrame:
    """Does DeepFeatureX (Net and -SN) beat the plain classifier and the linear probe of the same backbone?
    From a Tables 2-3 table (`evaluation.robustness`: backbone, kind, condition, task, accuracy %), every
    condition and task it holds."""
    return table(_pairs(rob, BASE_KINDS, ("plain", "linear probe"),
                        "DeepFeatureX beats {ref}"))


def kinds(rob: pd.DataFrame) -> pd.DataFrame:
    """Do unbalanced base models (DeepFeatureX Net) beat Siamese ones (DeepFeatureX-SN)? Same input."""
    return table(_pairs(rob, ("unbalanced",), ("siamese",), "unbalanced base models beat Siamese ones"))


def generalization(wide: pd.DataFrame) -> pd.DataFrame:
    """Does DeepFeatureX generalize better than the baselines? From Table 4 (`generalization.table4`): per
    condition and backbone, each complete model's mean accuracy over the test sets against the plain
    classifier's and the linear probe's."""
    rows = []
    ours = wide[~wide["condition"].str.startswith("paper")]  # the paper's rows, and those it alone has
    for (cond, model), g in ours.groupby(["condition", "model"], sort=False):
        mean = g.set_index("group")["mean"]
        for kind in BASE_KINDS:
            for ref in ("plain", "linear probe"):
                if GROUPS[kind] in mean and GROUPS[ref] in mean:
                    rows.append(_row(f"DeepFeatureX generalizes better than {NAMES[ref]}", model,
                                     f"{cond}, mean of the test sets", NAMES[kind], float(mean[GROUPS[kind]]),
                                     NAMES[ref], float(mean[GROUPS[ref]])))
    return table(rows)


def _interval(text: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)[:2])
    return lo, hi


def seen_unseen(long: pd.DataFrame, seen: str, unseen: tuple[str, ...]) -> pd.DataFrame:
    """Does accuracy hold on generators never trained on? From a long table of binary accuracies
    (`generalization.evaluate_sets`: group, model, set, condition, accuracy, accuracy_ci95): per model and
    condition, each set of `unseen` against the set `seen`. It holds when the unseen accuracy reaches the
    lower end of the seen accuracy's 95% interval."""
    rows = []
    for (cond, group, model), g in long.groupby(["condition", "group", "model"], sort=False):
        by_set = g.set_index("set")
        if seen not in by_set.index:
            continue
        ref = float(by_set.loc[seen, "accuracy"])
        lo, _ = _interval(str(by_set.loc[seen, "accuracy_ci95"]))
        for name in unseen:
            if name in by_set.index:
                value = float(by_set.loc[name, "accuracy"])
                verdict = "stays within" if value >= lo else "falls below"
                text = (f"{model} ({group}), {cond}: accuracy on {name} ({value:.2f}) {verdict} the 95% interval "
                        f"of its accuracy on {seen} ({ref:.2f}, interval from {lo:.1f}), {value - ref:+.2f} points.")
                rows.append(_row("accuracy holds on generators never trained on", f"{model} ({group})", cond,
                                 f"accuracy on {name}", value, f"accuracy on {seen} (interval from {lo:.1f})", ref,
                                 holds=value >= lo, statement=text))
    return table(rows)


def base_models(rows: list[dict]) -> pd.DataFrame:
    """Does each base model find its main class, beyond always answering it? From notebook 02's evaluation
    (`basemodels.evaluate_base_models`: backbone, kind, main, f1 and main_share as fractions): its F1 on the
    main class against the F1 of a model that answers "main" for every image, 2p / (1 + p) with p the main
    class's share of the test split."""
    out = []
    for r in rows:
        p = float(r["main_share"])
        out.append(_row("a base model finds its main class", f"{r['backbone']}, {NAMES.get(r['kind'], r['kind'])}, "
                        f"{r['main'].upper()} base model", "test split, main class vs others", "F1 of the main class",
                        round(100.0 * float(r["f1"]), 2), "always answering the main class",
                        round(100.0 * 2 * p / (1 + p), 2)))
    return table(out)


def confounds(audit_confounds: pd.DataFrame) -> pd.DataFrame:
    """Does no file attribute alone tell the classes apart? From notebook 01's confound table
    (`audit.confounds`: attribute, task, rule_balanced_accuracy and chance as fractions, confounded): per
    attribute and task, the best rule that reads only the attribute against chance (it holds when the audit
    finds no confound)."""
    out = []
    for r in audit_confounds.itertuples():
        value, ref = round(100.0 * r.rule_balanced_accuracy, 2), round(100.0 * r.chance, 2)
        verdict = "is a shortcut a detector could learn" if r.confounded else "does not separate the classes"
        out.append(_row("no file attribute alone separates the classes", str(r.attribute), str(r.task),
                        f"balanced accuracy of a rule on {r.attribute} alone", value, "chance", ref,
                        holds=not r.confounded,
                        statement=f"{r.attribute} ({r.task}): a rule that reads only the {r.attribute} reaches "
                                  f"{value:.2f}% balanced accuracy against {ref:.2f}% by chance: it {verdict}."))
    return table(out)


def noise(detectors_table: pd.DataFrame, noise_name: str = "SSP") -> pd.DataFrame:
    """The comparative study's conclusion: does the noise-based detector (SSP: SRM noise residuals of the
    simplest patch) generalize better? From notebook 06's table (`detectors.comparison_table`): its balanced
    accuracy on unseen generators against the best other detector's; it holds only beyond both 95% intervals."""
    col, ci = "unseen balanced_accuracy", "unseen balanced_accuracy_ci95"
    mine = detectors_table[detectors_table["detector"].str.contains(noise_name, regex=False)]
    others = detectors_table.drop(index=mine.index)
    if mine.empty or others.empty:
        return table([])
    m, best = mine.iloc[0], others.loc[others[col].idxmax()]
    lo, best_hi = _interval(str(m[ci]))[0], _interval(str(best[ci]))[1]
    above = float(m[col]) > float(best[col])
    verdict = ("yes: better than every other detector, beyond the intervals" if above and lo > best_hi else
               "above every other detector, but within the intervals of the best one (not a clear yes)" if above
               else "no")
    text = (f"Does the noise-based detector generalize better? {verdict}. {m['detector']}: {float(m[col]):.2f} "
            f"{m[ci]} on unseen generators; best other: {best['detector']} {float(best[col]):.2f} {best[ci]}.")
    return table([_row("the noise-based detector generalizes better", str(m["detector"]),
                       "unseen generators (inner + unseen)", "balanced accuracy", float(m[col]),
                       f"the best other detector ({best['detector']})", float(best[col]),
                       holds=above and lo > best_hi, statement=text)])


def markdown(verdicts: pd.DataFrame) -> str:
    """The statements as a Markdown list, those that hold marked ✓ and the others ✗."""
    if verdicts.empty:
        return "_Nothing to test: the run has no pair of models this claim compares._"
    return "\n".join(f"- {'✓' if h else '✗'} {s}" for h, s in zip(verdicts["holds"], verdicts["statement"]))
