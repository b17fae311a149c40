"""The paper's claims as table rows: each verdict follows the numbers it is given, either way."""

import numpy as np
import pandas as pd
import pytest

from dfxlib.evaluation import metrics, verdicts


def rob(values: dict[str, float], condition: str = "RAW", task: str = "multiclass") -> pd.DataFrame:
    return pd.DataFrame([{"backbone": "B", "kind": k, "condition": condition, "task": task, "accuracy": v}
                         for k, v in values.items()])


def test_fusion_holds_only_above_the_best_single_base_model():
    ablation = pd.DataFrame([
        {"backbone": "B", "kind": "unbalanced", "features": "DM + GAN + REAL (complete)", "accuracy": 90.0},
        {"backbone": "B", "kind": "unbalanced", "features": "DM base model alone", "accuracy": 70.0},
        {"backbone": "B", "kind": "unbalanced", "features": "REAL base model alone", "accuracy": 85.5},
        {"backbone": "B", "kind": "siamese", "features": "DM + GAN + REAL (complete)", "accuracy": 60.0},
        {"backbone": "B", "kind": "siamese", "features": "GAN base model alone", "accuracy": 61.0}])
    v = verdicts.fusion(ablation).set_index("subject")
    assert v.loc["B, DeepFeatureX Net", "holds"] and v.loc["B, DeepFeatureX Net", "difference"] == 4.5
    assert "REAL base model alone" in v.loc["B, DeepFeatureX Net", "reference"]
    assert not v.loc["B, DeepFeatureX-SN", "holds"]
    assert "does NOT beat" in v.loc["B, DeepFeatureX-SN", "statement"] and "(60.00)" in v.loc[
        "B, DeepFeatureX-SN", "statement"]


def test_baselines_and_kinds_compare_rows_of_the_same_backbone_condition_and_task():
    table = pd.concat([rob({"unbalanced": 80.0, "siamese": 70.0, "plain": 75.0, "linear probe": 82.0}),
                       rob({"unbalanced": 60.0, "siamese": 65.0, "plain": 55.0, "linear probe": 50.0}, "QF50")])
    v = verdicts.baselines(table)
    assert len(v) == 8  # 2 kinds x 2 baselines x 2 conditions
    got = {(r.condition, r.value_of, r.reference): r.holds for r in v.itertuples()}
    assert got[("RAW, multiclass", "DeepFeatureX Net", "the plain classifier")] is True
    assert got[("RAW, multiclass", "DeepFeatureX Net", "the linear probe")] is False
    assert got[("QF50, multiclass", "DeepFeatureX-SN", "the linear probe")] is True
    k = verdicts.kinds(table).set_index("condition")["holds"]
    assert k["RAW, multiclass"] and not k["QF50, multiclass"]
    assert verdicts.kinds(rob({"unbalanced": 80.0})).empty  # nothing to compare with


def test_a_tie_does_not_count_as_beating():
    v = verdicts.baselines(rob({"unbalanced": 50.0, "plain": 50.0}))
    assert list(v["holds"]) == [False] and "+0.00 points" in v["statement"].iloc[0]


def bits(right: int, n: int = 200) -> str:
    """Per-image outcomes: the first `right` of `n` images right."""
    return "1" * right + "0" * (n - right)


def generalization_sets(right: dict[str, dict[str, int]], n: int = 20):
    """Table 4 cells of several models (group -> generator -> how many of its n fakes the model gets right) on
    one set per generator (n fakes of it and n shared reals every model gets right), and the sets themselves."""
    cells, sets = [], {}
    for i, gen in enumerate(next(iter(right.values()))):
        paths = [f"real/{k}.png" for k in range(n)] + [f"{gen}/{k}.png" for k in range(n)]
        sets[f"S{i}"] = pd.DataFrame({"path": paths, "family": ["real"] * n + ["gan"] * n,
                                      "generator": ["photos"] * n + [gen] * n})
        for group, by_gen in right.items():
            o = "1" * n + "1" * by_gen[gen] + "0" * (n - by_gen[gen])
            cells.append({"condition": "RAW", "group": group, "model": "B", "set": f"S{i}",
                          "accuracy": 100 * o.count("1") / len(o), "outcomes": o})
    return pd.DataFrame(cells), sets


def test_generalization_compares_the_mean_over_the_sets_both_were_scored_on():
    long, sets = generalization_sets({"DeepFeatureX Net": {f"g{k}": 15 for k in range(4)},
                                      "Baselines": {f"g{k}": 5 for k in range(4)},
                                      "Linear probe": {f"g{k}": 15 for k in range(4)}})
    long = long[~((long["group"] == "Linear probe") & (long["set"] == "S3"))]  # the probe was not scored on S3
    v = verdicts.generalization(long, sets).set_index("reference")
    assert v.loc["the plain classifier", "verdict"] == "holds" and v.loc["the plain classifier", "value"] == 87.5
    assert v.loc["the plain classifier", "condition"] == "RAW, mean of 4 test sets"
    assert v.loc["the linear probe", "verdict"] == "too close to call"  # 87.5 against 87.5
    assert v.loc["the linear probe", "condition"] == "RAW, mean of 3 test sets"


def test_a_generalization_difference_one_generator_carries_is_too_close_to_call():
    # Net right on every fake of generator g0, the plain classifier on none; both alike on the other three
    long, sets = generalization_sets({"DeepFeatureX Net": {"g0": 20, "g1": 10, "g2": 10, "g3": 10},
                                      "Baselines": {"g0": 0, "g1": 10, "g2": 10, "g3": 10}})
    net, plain = (long[long["group"] == g].set_index("set")["outcomes"] for g in ("DeepFeatureX Net", "Baselines"))
    by_images = metrics.difference_ci([(metrics.read_outcomes(net[s]), metrics.read_outcomes(plain[s]))
                                       for s in sets], paired=True)
    assert by_images[0] > 0  # the images alone, as if they were all the claim is about: decided
    v = verdicts.generalization(long, sets).iloc[0]
    lo, hi = (float(x) for x in v["difference_ci95"].strip("[]").split(","))
    assert lo <= 0 < 12.5 < hi and v["verdict"] == "too close to call"  # one generator in four carries it
    assert v["difference"] == 12.5 and "over the 4 held-out generators" in v["statement"]
    # about the same gain on every generator holds: another generator would likely show it too
    long, sets = generalization_sets({"DeepFeatureX Net": {"g0": 15, "g1": 16, "g2": 14, "g3": 15},
                                      "Baselines": {f"g{k}": 5 for k in range(4)}})
    v = verdicts.generalization(long, sets).iloc[0]
    assert v["verdict"] == "holds" and v["difference"] == 25.0 and 0 < float(v["difference_ci95"][1:].split(",")[0]) < 25


def test_generator_spread_takes_the_held_out_generators_as_its_unit():
    from scipy.stats import t

    diff = np.r_[np.ones(10), np.zeros(30), np.zeros(10)]
    unit = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 10 + ["d"] * 10 + [""] * 10)
    weight = {"a": 0.125, "b": 0.125, "c": 0.125, "d": 0.125, "": 0.5}  # the value: 12.5 points
    lo, hi = metrics.generator_spread(diff, unit, weight)
    # generator means 1, 0, 0, 0 (sample sd 0.5), four slots of weight 1/8, reals all alike: t with 3 df
    half = 100 * t.ppf(0.975, 3) * np.sqrt(4 * 0.125 ** 2 * 0.25)
    assert lo == pytest.approx(-half) and hi == pytest.approx(half) and half > 12.5
    # the reals' own spread widens it and lifts its degrees of freedom above the generators' 3
    reals = np.r_[np.ones(5), -np.ones(5)]
    lo2, hi2 = metrics.generator_spread(np.r_[diff[:40], reals], unit, weight)
    assert hi2 > hi and hi2 < 100 * t.ppf(0.975, 3) * np.sqrt(4 * 0.125 ** 2 * 0.25 + 0.25 * reals.var(ddof=1) / 10)
    # one generator: its images are the unit (here they all agree, so nothing moves)
    assert metrics.generator_spread(diff[:10], unit[:10], {"a": 1.0}) == (0.0, 0.0)
    lo, hi = metrics.generator_spread(reals, np.array(["a"] * 10), {"a": 1.0})
    assert hi == pytest.approx(100 * t.ppf(0.975, 9) * reals.std(ddof=1) / np.sqrt(10))


def test_a_difference_inside_its_paired_interval_is_too_close_to_call():
    # 3 images apart out of 200, in both directions on other images: the paired interval contains 0
    a = "1" * 150 + "0" * 50
    b = "1" * 147 + "0" * 50 + "111"
    table = pd.DataFrame([{"backbone": "B", "kind": "unbalanced", "condition": "RAW", "task": "binary",
                           "accuracy": 75.0, "outcomes": a},
                          {"backbone": "B", "kind": "plain", "condition": "RAW", "task": "binary",
                           "accuracy": 75.0, "outcomes": b}])
    table.loc[0, "accuracy"] = 75.5  # what a rounding or another draw could give: still not a finding
    v = verdicts.baselines(table).iloc[0]
    lo, hi = (float(x) for x in v["difference_ci95"].strip("[]").split(","))
    assert lo <= 0 <= hi and v["verdict"] == "too close to call" and not v["holds"]
    assert "Too close to call" in v["statement"]
    # far apart on the same images: decided
    table.loc[1, "outcomes"] = bits(100)
    table.loc[1, "accuracy"] = 50.0
    assert verdicts.baselines(table).iloc[0]["verdict"] == "holds"


def test_a_claim_about_a_model_that_learned_nothing_is_not_testable():
    table = rob({"siamese": 33.33, "plain": 80.0})
    v = verdicts.baselines(table, {("siamese", "B"): "at chance on the test split"}).iloc[0]
    assert v["verdict"] == "not testable" and not v["holds"] and "at chance" in v["statement"]
    note = verdicts.untestable_note({("siamese", "B"): "at chance on the test split"})
    assert note == "- **DeepFeatureX-SN B: not testable**: at chance on the test split"
    assert verdicts.untestable_note({}).startswith("Every model compared here learned")


def test_seen_unseen_fails_only_on_a_drop_beyond_its_interval():
    long = pd.DataFrame([
        {"condition": "RAW", "group": "G", "model": "M", "set": "seen", "accuracy": 90.0, "outcomes": bits(180)},
        {"condition": "RAW", "group": "G", "model": "M", "set": "T_G/D^i", "accuracy": 88.0, "outcomes": bits(176)},
        {"condition": "RAW", "group": "G", "model": "M", "set": "T_G/D^o", "accuracy": 60.0, "outcomes": bits(120)}])
    v = verdicts.seen_unseen(long, "seen", ("T_G/D^i", "T_G/D^o")).set_index("value_of")
    assert v.loc["accuracy on T_G/D^i", "verdict"] == "too close to call"
    assert v.loc["accuracy on T_G/D^o", "verdict"] == "does not hold"
    assert "falls below" in v.loc["accuracy on T_G/D^o", "statement"]


def test_markdown_marks_each_verdict():
    v = verdicts.baselines(rob({"unbalanced": 80.0, "plain": 75.0, "linear probe": 90.0}))
    md = verdicts.markdown(v).splitlines()
    assert md[0].startswith("- ✓ **holds**") and md[1].startswith("- ✗ **does not hold**")
    assert verdicts.markdown(verdicts.table([])).startswith("_Nothing to test")


def test_a_base_model_must_beat_always_answering_its_main_class():
    rows = [{"backbone": "B", "kind": "unbalanced", "main": "dm", "f1": 0.5, "main_share": 1 / 3},  # 2p/(1+p) = 0.5
            {"backbone": "B", "kind": "siamese", "main": "real", "f1": 0.9, "main_share": 1 / 3}]
    v = verdicts.base_models(rows)
    assert list(v["holds"]) == [False, True] and list(v["reference_value"]) == [50.0, 50.0]
    assert list(v["value"]) == [50.0, 90.0] and "DM base model" in v["subject"].iloc[0]


def test_an_attribute_that_separates_the_classes_is_a_failed_claim():
    conf = pd.DataFrame([{"attribute": "format", "task": "real vs fake", "rule_balanced_accuracy": 0.95,
                          "chance": 0.5, "confounded": True},
                         {"attribute": "size", "task": "real vs fake", "rule_balanced_accuracy": 0.52,
                          "chance": 0.5, "confounded": False}])
    v = verdicts.confounds(conf).set_index("subject")
    assert not v.loc["format", "holds"] and v.loc["size", "holds"]
    assert "95.00%" in v.loc["format", "statement"] and "shortcut" in v.loc["format", "statement"]


def noise_images(right: dict[str, dict[str, int]], n: int = 20, reals_right: int = 36) -> pd.DataFrame:
    """notebook 06's per-image rows (`detectors.compare`): per detector, how many of the n fakes of each held-out
    generator it calls fake (`right`), n fakes of a seen generator all right, 40 reals of which `reals_right`."""
    rows = []
    for det, by_gen in right.items():
        for gen, k in [("seen_gan", n), *by_gen.items()]:
            role = "seen" if gen == "seen_gan" else "unseen"
            rows += [{"path": f"{gen}/{i}.png", "family": "gan", "generator": gen, "role": role, "detector": det,
                      "fake": 1, "pred_fake": int(i < k), "p_fake": 0.9 if i < k else 0.1} for i in range(n)]
        rows += [{"path": f"real/{i}.png", "family": "real", "generator": "photos", "role": "real", "detector": det,
                  "fake": 0, "pred_fake": int(i >= reals_right), "p_fake": 0.9 if i >= reals_right else 0.1}
                 for i in range(40)]
    return pd.DataFrame(rows)


def test_the_noise_claim_takes_the_held_out_generators_as_its_unit():
    from dfxlib.detectors.compare import comparison_table

    ssp, cnn = "Detectors: SSP (simplest patch + SRM)", "Detectors: SimpleCNN"

    def claim(right: dict[str, dict[str, int]], untestable: dict | None = None) -> pd.Series:
        per_image = noise_images(right)
        return verdicts.noise(comparison_table(per_image, 50, 0), per_image, untestable).iloc[0]
    # better on every held-out generator by about as much: holds
    v = claim({ssp: {"g0": 18, "g1": 19, "g2": 20, "g3": 17}, cnn: {f"g{k}": 10 for k in range(4)}})
    assert v["verdict"] == "holds" and v["difference"] == 21.25  # half of 42.5 points on the fakes, reals alike
    assert "over the 4 held-out generators" in v["statement"] and v["reference"] == f"the best other detector ({cnn})"
    # better on one generator only: too close to call, though the images alone would decide it
    v = claim({ssp: {"g0": 20, "g1": 10, "g2": 10, "g3": 10}, cnn: {f"g{k}": 10 for k in range(4)}})
    assert v["verdict"] == "too close to call" and v["difference"] == 6.25
    # behind on every one: does not hold
    v = claim({ssp: {f"g{k}": 5 + k % 2 for k in range(4)}, cnn: {f"g{k}": 15 for k in range(4)}})
    assert v["verdict"] == "does not hold" and v["difference"] < 0
    # a detector it rests on cut short: not testable, and the reason is said
    v = claim({ssp: {f"g{k}": 18 + k % 2 for k in range(4)}, cnn: {f"g{k}": 10 for k in range(4)}},
              {ssp: "cut short, still improving when its epochs ran out (detectors/ssp)"})
    assert v["verdict"] == "not testable" and "detectors/ssp" in v["statement"]
    assert verdicts.noise(comparison_table(noise_images({cnn: {"g0": 10}}), 50, 0),
                          noise_images({cnn: {"g0": 10}})).empty  # no SSP row


def test_a_paired_interval_is_narrower_than_an_unpaired_one_on_the_same_images():
    from dfxlib.evaluation.metrics import difference_ci

    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.8
    b = a.copy()
    b[rng.choice(300, 12, replace=False)] ^= True  # two models that agree on 288 of 300 images
    paired, unpaired = difference_ci([(a, b)], True, 500, 0), difference_ci([(a, b)], False, 500, 0)
    assert paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 2  # what they share cancels
    with pytest.raises(ValueError, match="different lengths"):
        difference_ci([(a, b[:10])], True, 10, 0)


def test_over_seeds_counts_verdicts_and_finds_a_contradiction():
    def seed(verdict_fusion: str, diff: float, best: str) -> pd.DataFrame:
        rows = [verdicts._row("fusion beats every base model alone", "B, DeepFeatureX Net", "RAW, 3-class",
                              "the complete model", 90.0 + diff, f"the best single one ({best} base model alone)", 90.0,
                              ci={"holds": (0.5, 3.0), "does not hold": (-3.0, -0.5)}.get(verdict_fusion, (-1.0, 1.0))),
                verdicts._row("DeepFeatureX beats the plain classifier", "B", "RAW, binary", "DeepFeatureX Net", 80.0,
                              "the plain classifier", 70.0, ci=(5.0, 15.0))]
        return verdicts.table(rows)
    twice = pd.concat([seed("holds", 2.0, "DM")] * 2, ignore_index=True)  # notebooks 03 and 04 both state it
    summary = verdicts.over_seeds({0: twice, 1: seed("too close", 0.2, "GAN"),
                                   2: seed("does not hold", -2.0, "DM")}).set_index("claim")
    fusion = summary.loc["fusion beats every base model alone"]
    assert fusion["seeds"] == 3 and fusion["reference"] == "the best single one"  # one claim whatever base model won
    assert (fusion["holds"], fusion["does not hold"], fusion["too close to call"]) == (1, 1, 1)
    assert fusion["difference_mean"] == 0.07 and fusion["seeds_agree"].startswith("NO: holds on seed 0")
    assert fusion["by_seed"] == "0: holds; 1: too close to call; 2: does not hold"
    plain = summary.loc["DeepFeatureX beats the plain classifier"]
    assert plain["holds"] == 3 and plain["seeds_agree"] == "yes" and plain["difference_sd"] == 0.0
    assert verdicts.over_seeds({0: verdicts.table([])}).empty


def test_untestable_names_a_model_at_chance_and_one_cut_short(tmp_path):
    import json

    from dfxlib.evaluation.scoring import Detector, untestable
    from dfxlib.models.train import FINISHED

    short, done = tmp_path / "fits" / "cut-short", tmp_path / "fits" / "converged"
    for folder, (last, best) in ((short, (6, 6)), (done, (9, 6))):
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text(json.dumps({"epochs": last if folder == short else 20}))
        (folder / FINISHED).write_text(json.dumps({"epoch": last, "best": 0.1, "best_epoch": best}))
    dets = [Detector("DeepFeatureX-SN", "B", None, [], kind="siamese", trained=[short]),
            Detector("Baselines", "B", None, [], kind="plain", trained=[done])]
    rob = pd.DataFrame([
        {"backbone": "B", "kind": "siamese", "condition": "RAW", "task": "multiclass", "accuracy": 34.0,
         "accuracy_ci95": "[28.1, 40.2]"},
        {"backbone": "B", "kind": "plain", "condition": "RAW", "task": "multiclass", "accuracy": 90.0,
         "accuracy_ci95": "[86.0, 93.5]"},
        {"backbone": "B", "kind": "plain", "condition": "QF50", "task": "multiclass", "accuracy": 30.0,
         "accuracy_ci95": "[25.0, 35.0]"}])  # at chance under JPEG only: a finding, not a model that learned nothing
    why = untestable(dets, rob)
    assert set(why) == {("siamese", "B")}
    assert "cut short" in why["siamese", "B"] and "fits/cut-short" in why["siamese", "B"]
    assert "at chance on the test split (multiclass 34.00% [28.1, 40.2])" in why["siamese", "B"]
    from dfxlib.evaluation.scoring import fit_summary
    fits = fit_summary(dets + dets[:1]).set_index("model")  # each fit once
    assert list(fits.index) == [f"{tmp_path.name}/fits/cut-short", f"{tmp_path.name}/fits/converged"]
    assert fits["cut_short"].tolist() == [True, False] and fits["cap"].tolist() == [6, 20]
    assert fits["epochs_run"].tolist() == [6, 9] and fits["best_epoch"].tolist() == [6, 6]


def test_over_seeds_spreads_the_difference_over_testable_seeds_only():
    rows = lambda diff, why="": verdicts.table([verdicts._row("c", "B", "RAW", "X", 50.0 + diff, "Y", 50.0,  # noqa: E731
                                                              ci=(1.0, 2.0), untestable=why)])
    s = verdicts.over_seeds({0: rows(4.0), 1: rows(-17.0, "at chance"), 2: rows(6.0)}).iloc[0]
    assert s["difference_mean"] == 5.0 and s["not testable"] == 1 and s["seeds_agree"] == "yes"


def test_a_verdict_over_seeds_reads_the_spread_of_training_runs():
    """Over seeds, a claim is decided by the interval of its mean difference across the seeds (Student's t):
    three seeds that each decide it by their own test-image interval, but in opposite directions, are too close
    to call over seeds; three that agree within a small spread decide it; fewer than two testable seeds decide
    nothing."""
    from scipy.stats import t

    rows = lambda diff, why="": verdicts.table([verdicts._row("c", "B", "RAW", "X", 50.0 + diff, "Y", 50.0,  # noqa: E731
                                                              ci=(diff - 1.0, diff + 1.0), untestable=why)])
    split = verdicts.over_seeds({0: rows(4.0), 1: rows(-6.0), 2: rows(5.0)}).iloc[0]
    assert split["seeds_agree"].startswith("NO") and split["over_seeds"] == "too close to call"
    half = t.ppf(0.975, 2) * np.std([4.0, -6.0, 5.0], ddof=1) / np.sqrt(3)
    assert split["difference_ci95_over_seeds"] == f"[{1.0 - half:+.2f}, {1.0 + half:+.2f}]"
    assert verdicts.over_seeds({0: rows(-30.0), 1: rows(-33.0), 2: rows(-35.0)}).iloc[0]["over_seeds"] == "does not hold"
    assert verdicts.over_seeds({0: rows(3.0), 1: rows(4.0), 2: rows(3.5)}).iloc[0]["over_seeds"] == "holds"
    one = verdicts.over_seeds({0: rows(3.0), 1: rows(-17.0, "at chance")}).iloc[0]
    assert one["over_seeds"] == "not testable" and one["difference_ci95_over_seeds"] == ""


def test_a_claim_no_training_touches_keeps_its_seeds_verdict():
    """The audit's claims (no file attribute separates the classes) read the same world on every seed: the same
    difference (0: the rule is at chance) and the same verdict each time. Over seeds they keep it; their interval
    [0, 0] reads no spread of training runs. Seeds that give the same difference but other verdicts are left to
    that interval."""
    audit = pd.DataFrame({"attribute": ["format"], "task": ["real vs fake"], "rule_balanced_accuracy": [0.5],
                          "chance": [0.5], "confounded": [False]})
    same = verdicts.over_seeds({s: verdicts.confounds(audit) for s in range(3)}).iloc[0]
    assert same["over_seeds"] == "holds" and same["difference_ci95_over_seeds"] == "[+0.00, +0.00]"
    confounded = verdicts.over_seeds({s: verdicts.confounds(audit.assign(confounded=True)) for s in range(3)})
    assert confounded.iloc[0]["over_seeds"] == "does not hold"
    rows = lambda ci: verdicts.table([verdicts._row("c", "B", "RAW", "X", 50.0, "Y", 50.0, ci=ci)])  # noqa: E731
    mixed = verdicts.over_seeds({0: rows((-1.0, 1.0)), 1: rows(None), 2: rows((-1.0, 1.0))}).iloc[0]
    assert mixed["by_seed"] == "0: too close to call; 1: does not hold; 2: too close to call"
    assert mixed["over_seeds"] == "too close to call"  # the same difference, other verdicts: the interval decides
