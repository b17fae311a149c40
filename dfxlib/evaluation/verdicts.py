"""The paper's claims tested on the numbers a run computed, one table row per claim and subject.

Each row names the claim, the subject (backbone, model) and condition, the value under test and what it is
compared with, their difference, whether the claim holds, and a sentence built from those numbers. Notebooks
save these tables and print the sentences: what the text says about a result is always what the run measured.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from dfxlib.config import BASE_KINDS, BASELINE_KINDS
from dfxlib.evaluation.metrics import difference_ci, generator_spread, read_outcomes
from dfxlib.evaluation.scoring import GROUPS
from dfxlib.models.backbones import display_name

#: how a statement names each kind of model
NAMES: dict[str, str] = {"unbalanced": "DeepFeatureX Net", "siamese": "DeepFeatureX-SN",
                         "plain": "the plain classifier", "linear probe": "the linear probe"}

#: the four verdicts: the claim holds, does not hold, the difference's 95% interval contains 0, or a model it
#: compares learned nothing / was cut short (or the set it needs does not exist)
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "too close to call", "not testable")
MARKS: dict[str, str] = {"holds": "✓", "does not hold": "✗", "too close to call": "≈", "not testable": "–"}

COLUMNS = ["claim", "subject", "condition", "value_of", "value", "reference", "reference_value", "difference",
           "difference_ci95", "verdict", "holds", "statement"]

#: why a claim about a model cannot be decided, keyed by (kind, display name): `evaluation.untestable`
Untestable = Mapping[tuple[str, str], str]


def _row(claim: str, subject: str, condition: str, value_of: str, value: float, reference: str, ref: float,
         holds: bool | None = None, statement: str = "", ci: tuple[float, float] | None = None,
         untestable: str = "", ci_over: str = "") -> dict:
    """One claim: `holds` (default value > ref) decides it unless the difference's interval `ci` (points)
    contains 0 (too close to call) or `untestable` gives a reason (not testable). `ci_over` says what the
    interval resamples when it is not the test images alone."""
    diff = value - ref
    if untestable:
        verdict = "not testable"
    elif ci is not None and ci[0] <= 0 <= ci[1]:
        verdict = "too close to call"
    else:
        verdict = "holds" if (value > ref if holds is None else holds) else "does not hold"
    ci_text = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci is not None else ""
    if not statement:
        verb = {"holds": "beats", "does not hold": "does NOT beat"}.get(verdict, "against")
        statement = f"{subject}, {condition}: {value_of} ({value:.2f}) {verb} {reference} ({ref:.2f}), {diff:+.2f} points"
        statement += f" (95% interval of the difference{ci_over} {ci_text})." if ci is not None else "."
    if verdict == "too close to call":
        statement += " Too close to call: the interval of the difference contains 0."
    elif verdict == "not testable":
        statement += f" Not testable: {untestable}."
    return {"claim": claim, "subject": subject, "condition": condition, "value_of": value_of, "value": value,
            "reference": reference, "reference_value": ref, "difference": round(diff, 2), "difference_ci95": ci_text,
            "verdict": verdict, "holds": verdict == "holds", "statement": statement}


def table(rows: list[dict]) -> pd.DataFrame:
    """Rows of `_row` as a table with the columns in order (an empty table when there is nothing to test)."""
    return pd.DataFrame(rows, columns=COLUMNS)


def _paired(a: object, b: object, n_boot: int, seed: int) -> tuple[float, float] | None:
    """The paired bootstrap interval of two `outcomes` strings (the same images), or None without them."""
    if not isinstance(a, str) or not isinstance(b, str) or not a or len(a) != len(b):
        return None
    return difference_ci([(read_outcomes(a), read_outcomes(b))], paired=True, n=n_boot, seed=seed)


def _why(untestable: Untestable, *keys: tuple[str, str]) -> str:
    return "; ".join(f"{NAMES.get(k[0], k[0])} {k[1]}: {untestable[k]}" for k in keys if k in untestable)


def fusion(ablation: pd.DataFrame, untestable: Untestable | None = None, n_boot: int = 1000,
           seed: int = 0) -> pd.DataFrame:
    """Does fusing the three base models beat each base model used alone? From notebook 03's ablation table
    (backbone, kind, features, accuracy %, outcomes): the complete model against the best single base model,
    with the paired bootstrap interval of the difference on the same test images."""
    rows = []
    for (backbone, kind), g in ablation.groupby(["backbone", "kind"], sort=False):
        full = g[g["features"].str.contains("complete")]
        single = g[~g["features"].str.contains("complete")]
        if full.empty or single.empty:
            continue
        best = single.loc[single["accuracy"].idxmax()]
        ci = _paired(full["outcomes"].iloc[0], best["outcomes"], n_boot, seed) if "outcomes" in g else None
        rows.append(_row("fusion beats every base model alone", f"{backbone}, {NAMES.get(kind, kind)}",
                         "RAW, 3-class", "the complete model", float(full["accuracy"].iloc[0]),
                         f"the best single one ({best['features']})", float(best["accuracy"]), ci=ci,
                         untestable=_why(untestable, (kind, display_name(backbone))) if untestable else ""))
    return table(rows)


def _pairs(rob: pd.DataFrame, kinds: tuple[str, ...], refs: tuple[str, ...], claim: str, untestable: Untestable,
           n_boot: int, seed: int) -> list[dict]:
    rows = []
    for (cond, task, backbone), g in rob.groupby(["condition", "task", "backbone"], sort=False):
        by_kind = g.set_index("kind")
        for kind in kinds:
            for ref in refs:
                if kind in by_kind.index and ref in by_kind.index and kind != ref:
                    a, b = by_kind.loc[kind], by_kind.loc[ref]
                    ci = _paired(a.get("outcomes"), b.get("outcomes"), n_boot, seed)
                    rows.append(_row(claim.format(ref=NAMES[ref]), backbone, f"{cond}, {task}", NAMES[kind],
                                     float(a["accuracy"]), NAMES[ref], float(b["accuracy"]), ci=ci,
                                     untestable=_why(untestable, (kind, backbone), (ref, backbone))))
    return rows


def baselines(rob: pd.DataFrame, untestable: Untestable | None = None, n_boot: int = 1000,
              seed: int = 0) -> pd.DataFrame:
    """Does DeepFeatureX (Net and -SN) beat the plain classifier and the linear probe of the same backbone?
    From a Tables 2-3 table (`evaluation.robustness`: backbone, kind, condition, task, accuracy %, outcomes),
    every condition and task it holds, each difference with its paired bootstrap interval."""
    return table(_pairs(rob, BASE_KINDS, BASELINE_KINDS, "DeepFeatureX beats {ref}", untestable or {},
                        n_boot, seed))


def kinds(rob: pd.DataFrame, untestable: Untestable | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Do unbalanced base models (DeepFeatureX Net) beat Siamese ones (DeepFeatureX-SN)? Same input."""
    return table(_pairs(rob, ("unbalanced",), ("siamese",), "unbalanced base models beat Siamese ones",
                        untestable or {}, n_boot, seed))


_KIND_OF_GROUP = {v: k for k, v in GROUPS.items()}


def _by_generator(a: pd.DataFrame, b: pd.DataFrame, sets: Mapping[str, pd.DataFrame], names: list[str]
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Per image of the sets `names` (each image once): the difference of two models' outcomes (a, b: rows by
    set), its unit (the fake's generator, "" for a real image), and each unit's weight in the mean over the sets
    (a set's accuracy weighs its generators by their share of its images)."""
    diff: dict[str, float] = {}
    unit: dict[str, str] = {}
    weight: dict[str, float] = {}
    for name in names:
        df = sets[name]
        units = df["generator"].where(df["family"] != "real", "").astype(str)
        for u, share in units.value_counts(normalize=True).items():
            weight[u] = weight.get(u, 0.0) + share / len(names)
        d = read_outcomes(a.loc[name, "outcomes"]).astype(float) - read_outcomes(b.loc[name, "outcomes"])
        diff.update(zip(df["path"], d))
        unit.update(zip(df["path"], units))
    paths = list(diff)
    return np.array([diff[p] for p in paths]), np.array([unit[p] for p in paths]), weight


def generalization(long: pd.DataFrame, sets: Mapping[str, pd.DataFrame], untestable: Untestable | None = None
                   ) -> pd.DataFrame:
    """Does DeepFeatureX generalize better than the baselines? From Table 4's cells (`generalization.
    evaluate_tsets`: group, model, set, condition, accuracy %, outcomes) and the `sets` themselves (name -> rows
    with path, family, generator, in the order of the outcomes): per condition and backbone, each complete
    model's mean accuracy over the test sets against the plain classifier's and the linear probe's, on the sets
    both were scored on. The claim is about generators never trained on, and a run holds only a few of them: the
    difference's interval (`metrics.generator_spread`) takes the held-out generators as its unit (Student's t
    over their mean differences, with the real images' own spread)."""
    rows = []
    untestable = untestable or {}
    for (cond, model), g in long.groupby(["condition", "model"], sort=False):
        for kind in BASE_KINDS:
            for ref in BASELINE_KINDS:
                a = g[g["group"] == GROUPS[kind]].set_index("set")
                b = g[g["group"] == GROUPS[ref]].set_index("set")
                names = [s for s in a.index if s in b.index]
                if not names:
                    continue
                value, ref_value = (round(float(a.loc[names, "accuracy"].mean()), 2),
                                    round(float(b.loc[names, "accuracy"].mean()), 2))
                ci, over = None, ""
                if "outcomes" in g:
                    diff, unit, weight = _by_generator(a, b, sets, names)
                    lo, hi = generator_spread(diff, unit, weight)
                    ci = (value - ref_value + lo, value - ref_value + hi)
                    n_gen = sum(1 for u in weight if u)
                    over = (f" over the {n_gen} held-out generators" if n_gen > 1
                            else " over the held-out generator's images" if n_gen else "")
                rows.append(_row(f"DeepFeatureX generalizes better than {NAMES[ref]}", model,
                                 f"{cond}, mean of {len(names)} test sets", NAMES[kind], value, NAMES[ref],
                                 ref_value, ci=ci, ci_over=over,
                                 untestable=_why(untestable, (kind, model), (ref, model))))
    return table(rows)


def seen_unseen(long: pd.DataFrame, seen: str, unseen: tuple[str, ...], untestable: Untestable | None = None,
                n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Does accuracy hold on generators never trained on? From a long table of binary accuracies
    (`generalization.evaluate_sets`: group, model, set, condition, accuracy, outcomes): per model and
    condition, each set of `unseen` against the set `seen`, with the bootstrap interval of the difference (the
    sets hold other images: each is resampled on its own). It does not hold when accuracy falls significantly
    on the unseen set; a difference whose interval contains 0 is too close to call."""
    rows = []
    untestable = untestable or {}
    for (cond, group, model), g in long.groupby(["condition", "group", "model"], sort=False):
        by_set = g.set_index("set")
        if seen not in by_set.index:
            continue
        ref = float(by_set.loc[seen, "accuracy"])
        for name in unseen:
            if name not in by_set.index:
                continue
            value = float(by_set.loc[name, "accuracy"])
            ci = (difference_ci([(read_outcomes(by_set.loc[name, "outcomes"]),
                                  read_outcomes(by_set.loc[seen, "outcomes"]))], paired=False, n=n_boot, seed=seed)
                  if "outcomes" in by_set else None)
            verdict = "stays at or above" if value >= ref else "falls below"
            text = (f"{model} ({group}), {cond}: accuracy on {name} ({value:.2f}) {verdict} its accuracy on {seen} "
                    f"({ref:.2f}), {value - ref:+.2f} points"
                    + (f" (95% interval of the difference [{ci[0]:+.2f}, {ci[1]:+.2f}])." if ci else "."))
            rows.append(_row("accuracy holds on generators never trained on", f"{model} ({group})", cond,
                             f"accuracy on {name}", value, f"accuracy on {seen}", ref, holds=value >= ref,
                             statement=text, ci=ci,
                             untestable=_why(untestable, (_KIND_OF_GROUP.get(group, group), model))))
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


def _balanced_by_generator(per_image: pd.DataFrame, a: str, b: str, roles: tuple[str, ...]
                           ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Per image of `roles` and every real one: detector a's correctness minus b's, its unit (the fake's
    generator, "" for a real image) and each unit's weight in the balanced accuracy (half to the fakes, shared by
    their images; half to the reals), so that the weighted mean is a's balanced accuracy minus b's."""
    part = per_image[per_image["role"].isin([*roles, "real"])]
    ra, rb = (part[part["detector"] == d].set_index("path") for d in (a, b))
    rb = rb.loc[ra.index]
    diff = (ra["pred_fake"] == ra["fake"]).to_numpy(float) - (rb["pred_fake"] == rb["fake"]).to_numpy(float)
    fake = ra["fake"].to_numpy() == 1
    unit = np.where(fake, ra["generator"].astype(str).to_numpy(), "")
    weight = {str(g): 0.5 * n / fake.sum() for g, n in zip(*np.unique(unit[fake], return_counts=True))}
    return diff, unit, {**weight, "": 0.5}


def noise(detectors_table: pd.DataFrame, per_image: pd.DataFrame, untestable: Mapping[str, str] | None = None,
          noise_name: str = "SSP") -> pd.DataFrame:
    """The comparative study's conclusion: does the noise-based detector (SSP: SRM noise residuals of the
    simplest patch) generalize better? From notebook 06's table (`detectors.comparison_table`) and its images
    (`detectors.compare`): its balanced accuracy on unseen generators (inner + unseen) against the best other
    detector's, with the interval of the difference on the same images, the held-out generators as its unit
    (`metrics.generator_spread`, as for `generalization`). `untestable`: reasons keyed by the table's detector
    names (`scoring.untestable_labels`)."""
    col = "unseen balanced_accuracy"
    mine = detectors_table[detectors_table["detector"].str.contains(noise_name, regex=False)]
    others = detectors_table.drop(index=mine.index)
    if mine.empty or others.empty:
        return table([])
    m, best = mine.iloc[0], others.loc[others[col].idxmax()]
    diff, unit, weight = _balanced_by_generator(per_image, m["detector"], best["detector"], ("inner", "unseen"))
    lo, hi = generator_spread(diff, unit, weight)
    gap = float(m[col]) - float(best[col])
    n_gen = sum(1 for u in weight if u)
    why = "; ".join(f"{d}: {untestable[d]}" for d in (m["detector"], best["detector"]) if d in (untestable or {}))
    return table([_row("the noise-based detector generalizes better", str(m["detector"]),
                       "unseen generators (inner + unseen)", "balanced accuracy", float(m[col]),
                       f"the best other detector ({best['detector']})", float(best[col]), ci=(gap + lo, gap + hi),
                       ci_over=f" over the {n_gen} held-out generators" if n_gen > 1 else "", untestable=why)])


#: what identifies one claim across seeds (a fusion claim's best single base model may differ: its name is dropped)
CLAIM_KEY: tuple[str, ...] = ("claim", "subject", "condition", "value_of", "reference")


def claim_rows(v: pd.DataFrame) -> pd.DataFrame:
    """A run's verdict rows with one row per claim (`CLAIM_KEY`), as seeds are compared: the reference's
    parenthesis (a fusion claim's best single base model, which may differ between seeds) dropped, and a claim
    stated by two notebooks from the same numbers (03 and 04 share the RAW claims) kept once."""
    return (v.assign(reference=v["reference"].astype(str).str.replace(r" \(.*\)$", "", regex=True))
            .drop_duplicates(list(CLAIM_KEY)))


def over_seeds(by_seed: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim over the verdict tables of several seeds (seed -> rows of `table`): the mean and spread
    (sample sd) of its difference over the seeds where it is testable, the 95% interval of that mean over the
    seeds and the verdict it gives (`seed_interval`: the spread of training runs, which one seed's interval over
    test images cannot show), how many seeds give each verdict, each seed's verdict, and whether the seeds
    contradict each other (one `holds` where another `does not hold`; moving through `too close to call` or `not
    testable` is not a contradiction). A claim stated by two notebooks from the same numbers counts once."""
    parts = [claim_rows(v).assign(seed=s) for s, v in by_seed.items() if len(v)]
    if not parts:
        return pd.DataFrame(columns=[*CLAIM_KEY, "seeds", "difference_mean", "difference_sd",
                                     "difference_ci95_over_seeds", "over_seeds", *VERDICTS, "by_seed", "seeds_agree"])
    rows = []
    for key, g in pd.concat(parts, ignore_index=True).groupby(list(CLAIM_KEY), sort=False):
        counts = g["verdict"].value_counts()
        held, failed = g.loc[g["verdict"] == "holds", "seed"], g.loc[g["verdict"] == "does not hold", "seed"]
        agree = "yes" if held.empty or failed.empty else (
            f"NO: holds on seed {', '.join(map(str, held))}, does not hold on seed {', '.join(map(str, failed))}")
        tested = g.loc[g["verdict"] != "not testable"]  # a model that learned nothing says nothing
        lo, hi = seed_interval(tested["difference"].to_numpy(dtype=float))
        rows.append({**dict(zip(CLAIM_KEY, key)), "seeds": len(g),
                     "difference_mean": round(float(tested["difference"].mean()), 2) if len(tested) else float("nan"),
                     "difference_sd": round(float(tested["difference"].std(ddof=1)), 2) if len(tested) > 1
                     else float("nan"),
                     "difference_ci95_over_seeds": f"[{lo:+.2f}, {hi:+.2f}]" if np.isfinite(lo) else "",
                     "over_seeds": _seeds_verdict(tested, lo, hi),
                     **{v: int(counts.get(v, 0)) for v in VERDICTS},
                     "by_seed": "; ".join(f"{s}: {v}" for s, v in zip(g["seed"], g["verdict"])), "seeds_agree": agree})
    return pd.DataFrame(rows)


def seed_interval(diffs: np.ndarray) -> tuple[float, float]:
    """The 95% interval of the mean of a claim's differences over seeds (Student's t on the seeds: what a new
    training run may give, which one seed's test-image bootstrap cannot see); nan with fewer than two seeds."""
    if len(diffs) < 2:
        return float("nan"), float("nan")
    from scipy.stats import t

    half = float(t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
    return float(diffs.mean()) - half, float(diffs.mean()) + half


def _seeds_verdict(tested: pd.DataFrame, lo: float, hi: float) -> str:
    """A claim's verdict over seeds: too close to call when its interval over seeds contains 0, else holds or
    does not hold on the side the seeds' own verdicts give a positive difference (a larger value is the claim's
    side unless a seed said otherwise); not testable with fewer than two testable seeds. A claim whose difference
    and verdict are the same on every seed (the audit's: no training touches it) keeps its seeds' verdict, which
    its own rule or test-image interval decided: there is no spread over training runs to read."""
    if not np.isfinite(lo):
        return "not testable"
    if tested["difference"].nunique() == 1 and tested["verdict"].nunique() == 1:
        return str(tested["verdict"].iloc[0])
    if lo <= 0 <= hi:
        return "too close to call"
    decided = tested[tested["verdict"].isin(["holds", "does not hold"])]
    positive_holds = True
    if len(decided):
        first = decided.iloc[0]
        positive_holds = (first["difference"] > 0) == (first["verdict"] == "holds")
    return "holds" if (lo > 0) == positive_holds else "does not hold"


def untestable_note(untestable: Untestable) -> str:
    """Markdown: each model no claim can be decided about, and why (`evaluation.untestable`), or that every
    compared model learned and converged."""
    return "\n".join(f"- **{NAMES.get(k, k)} {n}: not testable**: {why}" for (k, n), why in untestable.items()) \
        or "Every model compared here learned (above chance on the test split) and converged."


def markdown(verdicts: pd.DataFrame) -> str:
    """The statements as a Markdown list, each marked by its verdict: ✓ holds, ✗ does not hold, ≈ too close to
    call, – not testable."""
    if verdicts.empty:
        return "_Nothing to test: the run has no pair of models this claim compares._"
    return "\n".join(f"- {MARKS[v]} **{v}**: {s}" for v, s in zip(verdicts["verdict"], verdicts["statement"]))
