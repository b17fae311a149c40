"""Metrics: one label convention (fake positive), float32 scores kept apart, vectorised bootstrap, AUC, AP and
balanced accuracy against scikit-learn."""

import numpy as np
import pytest

from dfxlib.evaluation.metrics import evaluate


def test_metrics_collapse_to_binary_with_fake_positive():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    m = evaluate(y, probs, binary=True, n_boot=50)
    assert m["class_names"] == ["real", "fake"]
    assert m["accuracy"] == 0.5  # dm ok, gan called real, real ok, real called dm
    assert m["recall_fake"] == 0.5 and m["precision_fake"] == 0.5
    assert m["auc"] == pytest.approx(0.75)
    lo, hi = m["accuracy_ci"]
    assert lo <= m["accuracy"] <= hi
    m3 = evaluate(y, probs, binary=False, n_boot=10)
    assert m3["confusion"].shape == (3, 3) and m3["accuracy"] == 0.5


def test_fake_score_keeps_float32_probabilities_apart():
    """1 - p(real) in float32 would merge scores one float32 step apart near 0.3 (half of these 50), and two
    tables that score the same predictions from differently typed copies would give different AUCs."""
    from dfxlib.evaluation.metrics import fake_score

    p_real = np.float32(0.3) + np.arange(50, dtype=np.float32) * np.float32(3e-8)
    probs = np.c_[np.zeros(50, np.float32), 1 - p_real, p_real]
    assert len(np.unique(p_real)) == 50 and len(np.unique(np.float32(1) - p_real)) < 50
    assert len(np.unique(fake_score(probs))) == 50
    assert np.array_equal(fake_score(probs), fake_score(probs.astype(np.float64)))


def test_vectorised_bootstrap_matches_sklearn_per_resample():
    from sklearn.metrics import accuracy_score, f1_score

    from dfxlib.evaluation.metrics import _confusions, _scores

    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    idx = rng.integers(0, 50, (20, 50))
    idx[0] = np.where(t == 0)[0][0]  # a degenerate resample: one image, classes missing
    conf = _confusions(t, p, 3, idx)
    for b in range(20):
        tt, pp = t[idx[b]], p[idx[b]]
        assert _scores(conf, "accuracy")[b] == pytest.approx(accuracy_score(tt, pp))
        assert _scores(conf, "f1_macro")[b] == pytest.approx(f1_score(tt, pp, average="macro", zero_division=0))
    tb, pb = (t > 0).astype(int), (p > 0).astype(int)
    cb = _confusions(tb, pb, 2, idx)
    for b in range(20):
        assert _scores(cb, "f1_pos")[b] == pytest.approx(f1_score(tb[idx[b]], pb[idx[b]], zero_division=0))
    for b in range(20):
        assert _scores(conf, "balanced_accuracy")[b] == pytest.approx(
            np.mean([np.mean(p[idx[b]][t[idx[b]] == c] == c) for c in np.unique(t[idx[b]])]))


@pytest.mark.parametrize("binary", [False, True])
def test_evaluate_point_values_match_sklearn(binary):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, precision_recall_fscore_support

    from dfxlib.evaluation.metrics import to_binary

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 80)
    probs = rng.dirichlet(np.ones(3), 80)
    probs[y == 1] *= [0.2, 1.0, 0.2]  # some signal, and class 0 under-predicted
    m = evaluate(y, probs, binary=binary, n_boot=20)
    t, p = (to_binary(y), to_binary(probs.argmax(1))) if binary else (y, probs.argmax(1))
    assert m["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(t, p))
    f1 = f1_score(t, p, zero_division=0) if binary else f1_score(t, p, average="macro", zero_division=0)
    assert m["f1"] == pytest.approx(f1)
    pr, rc, f1s, _ = precision_recall_fscore_support(t, p, labels=list(range(len(m["class_names"]))),
                                                     zero_division=0)
    for i, name in enumerate(m["class_names"]):
        assert (m[f"precision_{name}"], m[f"recall_{name}"], m[f"f1_{name}"]) == pytest.approx((pr[i], rc[i], f1s[i]))
    for key in ("accuracy", "f1", "balanced_accuracy"):
        lo, hi = m[f"{key}_ci"]
        assert lo <= m[key] <= hi and hi - lo < 0.5


def test_vectorised_auc_and_ap_match_sklearn_with_ties_and_resamples():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from dfxlib.evaluation.metrics import _auc_ap, _resamples, score_metrics

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    score = np.round(rng.random(120) + 0.3 * y, 1)  # coarse scores: many ties
    idx = _resamples(120, 15, 2)
    counts = np.stack([np.bincount(r, minlength=120) for r in idx]).astype(float)
    auc, ap = _auc_ap(y, score, counts)
    for b, r in enumerate(idx):
        assert auc[b] == pytest.approx(roc_auc_score(y[r], score[r]))
        assert ap[b] == pytest.approx(average_precision_score(y[r], score[r]))
    one = np.zeros((1, 120))
    one[0, y == 1] = 1.0  # a resample holding one class only
    assert np.isnan(_auc_ap(y, score, one)[0][0])
    m = score_metrics(y, score, 300, 0)
    assert m["auc"] == pytest.approx(roc_auc_score(y, score))
    assert m["ap"] == pytest.approx(average_precision_score(y, score))
    assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1] and m["ap_ci"][0] <= m["ap"] <= m["ap_ci"][1]


def test_balanced_accuracy_and_the_binary_columns_match_sklearn():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from dfxlib.evaluation.metrics import balanced_accuracy, binary_scores

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 90)
    score = rng.random(90) + 0.4 * y
    pred = (score > 0.7).astype(int)
    assert balanced_accuracy(y, pred) == pytest.approx(balanced_accuracy_score(y, pred))
    three, guess = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    assert balanced_accuracy(three, guess) == pytest.approx(balanced_accuracy_score(three, guess))
    row = binary_scores(y, score, pred, 200, 0)
    assert list(row) == ["balanced_accuracy", "balanced_accuracy_ci95", "auc", "auc_ci95", "ap", "ap_ci95"]
    assert row["balanced_accuracy"] == round(100 * balanced_accuracy_score(y, pred), 2)
    assert row["auc"] == round(100 * roc_auc_score(y, score), 2)
    lo, hi = (float(v) for v in row["auc_ci95"].strip("[]").split(","))
    assert lo <= row["auc"] <= hi


def test_a_docs_page_takes_its_tables_from_a_run_and_refuses_one_it_lacks(tmp_path):
    import pandas as pd

    from dfxlib.evaluation.tables import refresh_sections, write_table

    run, seeds = tmp_path / "run", tmp_path / "seeds"
    for folder in (run, seeds):
        (folder / "tables").mkdir(parents=True)
    write_table(pd.DataFrame({"a": [1]}), "t1", run / "tables", title="First")
    write_table(pd.DataFrame({"b": [2]}), "t2", seeds / "tables", title="Over seeds")
    page = tmp_path / "latest.md"
    page.write_text("# Latest\n\nProse the run does not write.\n\n## First\n\nold\n\n## Over seeds\n\nold\n")
    assert refresh_sections(page, run, seeds) == 2
    text = page.read_text()
    assert text.startswith("# Latest\n\nProse the run does not write.\n\n## First\n\n| a |") and "old" not in text
    assert "## Over seeds\n\n| b |\n|---|\n| 2 |" in text
    page.write_text(text + "\n## Missing\n\nold\n")
    with pytest.raises(ValueError, match="no table titled 'Missing'"):
        refresh_sections(page, run, seeds)
    assert page.read_text().endswith("## Missing\n\nold\n")  # nothing written
