"""The paper's claims as table rows: each verdict follows the numbers it is given, either way."""

import pandas as pd

from dfxlib import verdicts


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


def test_generalization_compares_table4_means_per_condition():
    wide = pd.DataFrame([
        {"condition": "RAW", "group": "DeepFeatureX Net", "model": "B", "mean": 70.0},
        {"condition": "RAW", "group": "Baselines", "model": "B", "mean": 65.0},
        {"condition": "RAW", "group": "Linear probe", "model": "B", "mean": 72.0},
        {"condition": "paper", "group": "Baselines", "model": "B", "mean": 99.0}])
    v = verdicts.generalization(wide).set_index("reference")
    assert v.loc["the plain classifier", "holds"] and not v.loc["the linear probe", "holds"]
    assert (v["condition"] == "RAW, mean of the test sets").all()  # the paper's row is not ours


def test_seen_unseen_holds_within_the_seen_interval():
    long = pd.DataFrame([
        {"condition": "RAW", "group": "G", "model": "M", "set": "seen", "accuracy": 90.0,
         "accuracy_ci95": "[86.5, 93.0]"},
        {"condition": "RAW", "group": "G", "model": "M", "set": "T_G/D^i", "accuracy": 87.0, "accuracy_ci95": ""},
        {"condition": "RAW", "group": "G", "model": "M", "set": "T_G/D^o", "accuracy": 60.0, "accuracy_ci95": ""}])
    v = verdicts.seen_unseen(long, "seen", ("T_G/D^i", "T_G/D^o")).set_index("value_of")
    assert v.loc["accuracy on T_G/D^i", "holds"] and not v.loc["accuracy on T_G/D^o", "holds"]
    assert "falls below" in v.loc["accuracy on T_G/D^o", "statement"]
    assert "86.5" in v.loc["accuracy on T_G/D^o", "reference"]


def test_markdown_marks_each_verdict():
    v = verdicts.baselines(rob({"unbalanced": 80.0, "plain": 75.0, "linear probe": 90.0}))
    md = verdicts.markdown(v).splitlines()
    assert md[0].startswith("- ✓") and md[1].startswith("- ✗")
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


def test_the_noise_claim_needs_intervals_apart():
    def det(ssp: float, ssp_ci: str, other: float, other_ci: str) -> pd.DataFrame:
        return pd.DataFrame([{"detector": "Detectors: SSP (simplest patch + SRM)", "unseen balanced_accuracy": ssp,
                              "unseen balanced_accuracy_ci95": ssp_ci},
                             {"detector": "Detectors: SimpleCNN", "unseen balanced_accuracy": other,
                              "unseen balanced_accuracy_ci95": other_ci}])
    clear = verdicts.noise(det(80.0, "[75.0, 85.0]", 60.0, "[55.0, 65.0]"))
    assert clear["holds"].item() and "yes" in clear["statement"].item()
    close = verdicts.noise(det(62.0, "[55.0, 70.0]", 60.0, "[55.0, 65.0]"))
    assert not close["holds"].item() and "not a clear yes" in close["statement"].item()
    below = verdicts.noise(det(50.0, "[45.0, 55.0]", 60.0, "[55.0, 65.0]"))
    assert not below["holds"].item() and "? no." in below["statement"].item()
    assert below["reference"].item() == "the best other detector (Detectors: SimpleCNN)"
    assert verdicts.noise(det(50.0, "[45.0, 55.0]", 60.0, "[55.0, 65.0]").iloc[1:]).empty  # no SSP row
