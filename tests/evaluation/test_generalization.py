"""Generalization test sets, detectors on a folder in the wild, and the format-bias report."""

import shutil

import numpy as np
import pandas as pd
import pytest

import dfxlib
from dfxlib.data.index import CLASSES
from dfxlib.evaluation import generalization as gz
from dfxlib.evaluation.scoring import Detector
from fixture import reference_layout


def pools() -> tuple[pd.DataFrame, pd.DataFrame]:
    gens = [("gan", "g_in", "inner", 30), ("gan", "g_out1", "unseen", 30), ("gan", "g_out2", "unseen", 7),
            ("dm", "d_in", "inner", 30), ("dm", "d_out", "unseen", 30)]
    fakes = pd.DataFrame([{"path": f"{f}/{g}/{i}.png", "family": f, "generator": g, "role": r,
                           "source": "held-out generator"} for f, g, r, n in gens for i in range(n)])
    reals = pd.DataFrame([{"path": f"real/{s}/{i}.png", "family": "real", "generator": s}
                          for s, n in (("r1", 40), ("r2", 5)) for i in range(n)])
    return fakes, reals


def test_nine_sets_balanced_and_equal_per_generator():
    fakes, reals = pools()
    sets = gz.make_tsets(fakes, reals, n_fakes=20, seed=0)
    assert list(sets) == ["T_G^i", "T_G^o", "T_G^i/o", "T_D^i", "T_D^o", "T_D^i/o", "T_G/D^i", "T_G/D^o",
                          "T_G/D^i/o"]
    for name, df in sets.items():
        fake, real = df[df.family != "real"], df[df.family == "real"]
        assert len(fake) == len(real) > 0, name
        counts = fake.groupby("generator").size()
        assert counts.nunique() == 1, (name, counts.to_dict())  # fakes divided equally
        assert df["path"].is_unique
        assert set(df["label"]) <= {CLASSES.index(c) for c in CLASSES}
    assert set(sets["T_G^i"]["generator"]) - {"r1", "r2"} == {"g_in"}
    assert set(sets["T_D^o"]["generator"]) - {"r1", "r2"} == {"d_out"}
    assert set(sets["T_G/D^i/o"]["generator"]) - {"r1", "r2"} == {"g_in", "g_out1", "g_out2", "d_in", "d_out"}
    # the smallest generator (7 images) bounds an equal division: 2 generators x 7
    assert len(sets["T_G^o"][sets["T_G^o"].family != "real"]) == 14
    # reals come from both sources, the small one used up first: 10 + 10 would need 10 of r2, which has 5
    r = sets["T_G^i"][sets["T_G^i"].family == "real"].groupby("generator").size()
    assert r.to_dict() == {"r1": 15, "r2": 5}
    again = gz.make_tsets(fakes, reals, n_fakes=20, seed=0)
    assert all(sets[k]["path"].tolist() == again[k]["path"].tolist() for k in sets)
    # reals are not reused while unused ones remain (45 reals: 20 for T_G^i, then the 25 others), then reused
    # and counted as such
    real_paths = [set(sets[k].loc[sets[k].family == "real", "path"]) for k in ("T_G^i", "T_G^o")]
    assert not real_paths[0] & real_paths[1]
    assert not sets["T_G^i"]["reused"].any() and not sets["T_G^o"]["reused"].any()
    table = gz.tsets_table(sets).set_index("set")
    assert table.loc["T_G^i", "reals shared with earlier sets"] == 0
    assert table.loc["T_G/D^i/o", "reals shared with earlier sets"] > 0


def test_every_footnote_says_what_its_set_holds():
    fakes, reals = pools()
    table = gz.tsets_table(gz.make_tsets(fakes, reals, n_fakes=20, seed=0))
    notes = gz.sources_note(table).split(". T_")
    assert len(notes) == 9 and len(set(notes)) == 9  # nine sets, nine different descriptions
    t = table.set_index("set")
    assert t.loc["T_G^o", "generators"] == "g_out1 (unseen, 7), g_out2 (unseen, 7)"
    assert t.loc["T_G^i", "real sources"] == "r1 (15), r2 (5)" and (t["held out"] == "yes").all()
    first = gz.sources_note(table).split("T_G^o:")[0]
    assert "20 fakes of g_in (inner, 20)" in first and "20 reals of r1 (15), r2 (5)" in first


def test_sets_without_generators_are_empty_and_reals_bound_size():
    fakes, reals = pools()
    sets = gz.make_tsets(fakes[fakes.family == "gan"], reals.head(6), n_fakes=100, seed=1)
    assert sets["T_D^i"].empty and sets["T_D^o"].empty
    assert len(sets["T_G^i"]) == 12  # 6 fakes, 6 reals
    table = gz.tsets_table(sets)
    assert table.set_index("set").loc["T_D^o", "fakes"] == 0
    assert table.set_index("set").loc["T_G^i/o", "generators"] == "g_in (inner, 2), g_out1 (unseen, 2), g_out2 (unseen, 2)"


def test_user_data_never_calls_a_seen_generator_a_generalization_set(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "holdout_generators": ["gan_b"]})
    index = run.index()
    split = run.split(index)
    fakes, reals = gz.tset_pools(run, index, split)
    # no inner generators named: no generator some model trained on stands in for them; the T^i sets are empty
    assert set(fakes["role"]) == {"unseen"} and set(fakes["generator"]) == {"gan_b"}
    assert set(fakes["split"]) == {"holdout"} and set(reals["split"]) <= {"test", "holdout"}
    sets = gz.make_tsets(fakes, reals, 100, 0)
    assert sets["T_G^i"].empty and sets["T_G/D^i"].empty and len(sets["T_G^o"])
    # a paper-style tree with nothing held out: no set at all, and the plan says so before the run
    bare = dfxlib.start("smoke", run_dir=str(tmp_path / "r3"), data_root=str(fixture_root),
                        overrides={"progress": False})
    f3, r3 = gz.tset_pools(bare, index, bare.split(index))
    none = gz.make_tsets(f3, r3, 100, 0)
    assert f3.empty and not any(len(df) for df in none.values())
    # notebook 05 still runs: Table 4 holds the paper's rows alone, and no claim is made about a missing set
    long = gz.evaluate_tsets(bare, bare.images(index), none, [constant(0.8)], jpeg_quality=0)
    assert long.empty and {"set", "accuracy", "outcomes", "paper_accuracy"} <= set(long.columns)
    assert set(gz.table4(long)["condition"]) == {"paper only (not retrained)"}
    from dfxlib.workflow.plan import make_plan, summary
    plan = make_plan(bare)
    assert plan.warnings and "no held-out test sets" in plan.warnings[0] and "holdout_generators" in plan.warnings[0]
    assert "warning: Table 4 will have no held-out test sets" in summary(plan)
    assert not make_plan(run).warnings

    run2 = dfxlib.start("smoke", run_dir=str(tmp_path / "r2"), data_root=str(fixture_root),
                        overrides={"progress": False, "holdout_generators": ["gan_b"], "inner_generators": ["dm_b"]})
    fakes2, _ = gz.tset_pools(run2, index, run2.split(index))
    assert set(fakes2.loc[fakes2.role == "inner", "generator"]) == {"dm_b"}
    assert set(fakes2["split"]) == {"holdout"}  # never trained on


def constant(p_fake: float) -> Detector:
    """A detector that says p(fake) for every image (p in the dm column)."""
    def predict(store, rels, variant, fn):
        return np.tile([p_fake, 0.0, 1.0 - p_fake], (len(rels), 1))
    return Detector(group="Test", name=f"const{p_fake}", predict=predict, models=[])


def test_wild_evaluation_per_group_and_format_bias(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), overrides={"progress": False, "bootstrap": 50})

    def by_size(store, rels, variant, fn):  # "fake" when the re-encoded file differs: sees the condition
        return np.array([[0.9, 0.0, 0.1] if (variant != "raw") == ("real" in r) else [0.1, 0.0, 0.9] for r in rels])
    dets = [constant(0.8), Detector(group="Test", name="flip", predict=by_size, models=[])]
    per, bad = gz.evaluate_wild(run, fixture_root, dets, reencode=80)
    n = 60
    assert len(per) == n * 2 * 2 and bad.empty
    assert set(per["condition"]) == {"RAW", "QF80"}
    s = gz.wild_summary(per, n_boot=50, seed=0).set_index(["model", "condition"])
    assert s.loc[("const0.8", "RAW"), "balanced_accuracy"] == 50.0
    assert s.loc[("const0.8", "RAW"), "recall_fake"] == 100.0
    assert s.loc[("flip", "RAW"), "accuracy"] == 100.0
    assert s.loc[("flip", "QF80"), "accuracy"] == 0.0
    groups = gz.wild_groups(per).set_index("generator")
    assert groups.loc["real_a", "Test const0.8 (RAW)"] == 0.0 and groups.loc["real_a", "n"] == 10
    fb = gz.format_bias(per).set_index("detector")
    assert fb.loc["Test flip", "predictions flipped %"] == 100.0
    assert fb.loc["Test const0.8", "predictions flipped %"] == 0.0
    # every fixture file is PNG: format alone cannot tell real from fake here
    assert fb.loc["file format alone (not JPEG = fake)", "balanced_accuracy (RAW)"] == 50.0


def test_wild_evaluation_takes_a_seeded_sample_per_group(tmp_path, fixture_root):
    """`wild_per_group`: at most that many images of each generator and real source, the same ones for the
    same seed (notebooks 05 and 06 see the same images), others for another; the plan counts what is read."""
    from dfxlib.workflow.plan import _wild_images

    paths = {}
    for seed in (0, 0, 1):
        run = dfxlib.start("smoke", run_dir=str(tmp_path / f"r{seed}"), overrides={"progress": False, "seed": seed})
        per, _ = gz.evaluate_wild(run, fixture_root, [constant(0.8)], reencode=0, per_group=3)
        assert per.groupby("generator").size().to_dict() == {g: 3 for g in set(per["generator"])}
        assert per["generator"].nunique() == 6
        paths.setdefault(seed, []).append(list(per["path"]))
    assert paths[0][0] == paths[0][1] and paths[0][0] != paths[1][0]
    assert _wild_images(fixture_root, 3) == 18 and _wild_images(fixture_root) == 60


def test_wild_sample_keeps_a_real_source_and_a_generator_of_one_name_apart(tmp_path, fixture_root):
    """A real source folder named like a generator (real/gan_a beside gan_generated/gan_a) gets its own quota."""
    root = tmp_path / "wild"
    shutil.copytree(fixture_root, root)
    (root / "real" / "real_a").rename(root / "real" / "gan_a")
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), overrides={"progress": False})
    per, _ = gz.evaluate_wild(run, root, [constant(0.8)], reencode=0, per_group=3)
    assert per.groupby(["family", "generator"]).size().to_dict() == {
        (f, g): 3 for f, g in [("dm", "dm_a"), ("dm", "dm_b"), ("gan", "gan_a"),
                               ("gan", "gan_b"), ("real", "gan_a"), ("real", "real_b")]}


def test_wild_evaluation_names_a_missing_folder(tmp_path):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), overrides={"progress": False})
    with pytest.raises(Exception, match="nowhere"):
        gz.evaluate_wild(run, tmp_path / "nowhere", [constant(0.5)], reencode=0)


def test_memoized_predictions_run_once_per_dataset_variant_and_image():
    from types import SimpleNamespace

    from dfxlib.evaluation.scoring import memoized

    calls: list[tuple[str, tuple[str, ...]]] = []

    def predict(store, rels, variant, fn):
        calls.append((variant, tuple(rels)))
        return np.array([[len(r) + (variant == "jpeg90"), 0.0, float(store.key == "b")] for r in rels])

    a, b = SimpleNamespace(key="a"), SimpleNamespace(key="b")
    m = memoized(predict)
    first = m(a, ["x", "yy"], "raw", None)
    again = m(a, ["yy", "zzz", "x", "zzz"], "raw", None)
    assert calls == [("raw", ("x", "yy")), ("raw", ("zzz",))]  # only the new image, once
    assert np.array_equal(again, np.array([[2, 0, 0], [3, 0, 0], [1, 0, 0], [3, 0, 0]]))
    assert np.array_equal(first, again[[2, 0]])
    assert m(a, ["x"], "jpeg90", None)[0, 0] == 2  # another variant is another prediction
    assert m(b, ["x"], "raw", None)[0, 2] == 1.0  # another dataset too
    assert len(calls) == 4 and m(a, [], "raw", None).shape == (0, 3)


# ------------------------------------------------------------------------ external sets (generalization_root)
def test_reference_layout_fills_all_nine_sets_from_the_external_images(tmp_path, fixture_root):
    ext = tmp_path / "external"
    counts = reference_layout(fixture_root, ext)
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "bootstrap": 20, "generalization_root": str(ext)})
    index = run.index()
    store = run.images(index)
    tstore, sets = gz.tsets(run, index, run.split(index), store)
    assert tstore.root == ext.resolve() and tstore.key != store.key
    assert list(sets) == [name for name, _, _ in gz.TSETS]
    table = gz.tsets_table(sets).set_index("set")
    for name, df in sets.items():  # every file of every folder, as found
        assert len(df) == counts[name], name
        assert (df["path"].str.split("/").str[0] == {v: k for k, v in gz.REFERENCE_SETS.items()}[name]).all()
        assert table.loc[name, "fakes"] == table.loc[name, "reals"] == counts[name] // 2
        assert table.loc[name, "fake source"] == table.loc[name, "real source"] == f"external ({ext.resolve()})"
    # the external images here were made by the very generators the run trains on: named, and flagged
    assert table.loc["T_G^o", "generators"] == "gan_b (seen, 4)" and (table["held out"] == "no").all()
    assert table.loc["T_G/D^i/o", "generators"] == ", ".join(f"{g} (seen, 4)" for g in ("dm_a", "dm_b", "gan_a", "gan_b"))
    assert set(sets["T_G/D^o"]["label"]) == {-1, CLASSES.index("real")}  # 'all' sets: family not known, binary

    def by_folder(store, rels, variant, fn):  # right on every image it can see
        return np.array([[0.0, 0.9, 0.1] if "/1_fake/" in r else [0.0, 0.1, 0.9] for r in rels])
    dets = [Detector(group="Test", name="oracle", predict=by_folder, models=[]), constant(0.8)]
    long = gz.evaluate_tsets(run, tstore, sets, dets, jpeg_quality=0)
    wide = gz.table4(long).set_index(["condition", "model"])
    assert list(wide.columns[1:10]) == list(sets) and not wide.iloc[:, 1:10].isna().any().any()
    assert (wide.loc[("RAW", "oracle")].iloc[1:11] == 100.0).all()
    assert (wide.loc[("RAW", "const0.8")].iloc[1:10] == 50.0).all()  # every fake, no real: half right
    assert dict(long.groupby("set")["n"].first()) == counts
    note = gz.sources_note(gz.tsets_table(sets))
    assert note.count(f"(external ({ext.resolve()}));") == 18  # each set names the source of its fakes and of its reals
    assert note.count("NOT a held-out set") == 9
    other = gz.mark_trained(sets["T_G^o"].drop(columns="role"), {"stylegan2"})  # a run trained on others
    assert set(other.loc[other.family != "real", "role"]) == {"external"}


def test_a_dataset_of_unseen_generators_as_external_sets(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "generalization_root": str(fixture_root), "tset_fakes": 8,
                                  "inner_generators": ["gan_a", "dm_a"]})
    index = run.index()
    _, sets = gz.tsets(run, index, run.split(index), run.images(index))
    gens = {k: set(df.loc[df.family != "real", "generator"]) for k, df in sets.items()}
    assert gens["T_G^i"] == {"gan_a"} and gens["T_D^o"] == {"dm_b"} and gens["T_G/D^i/o"] == {"gan_a", "gan_b",
                                                                                                "dm_a", "dm_b"}
    assert all(len(df) == 16 for df in sets.values())  # 8 fakes, 8 reals each


def test_external_sets_refuse_what_they_cannot_use(tmp_path, fixture_root):
    from dfxlib.data.index import DataError

    ext = tmp_path / "ext"
    reference_layout(fixture_root, ext)
    (ext / "extra" / "0_real").mkdir(parents=True)
    (ext / "extra" / "0_real" / "x.png").write_bytes((next((ext / "all" / "0_real").iterdir())).read_bytes())
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "generalization_root": str(ext)})
    with pytest.raises(DataError, match=r"ext: folders extra are not test sets \(expected inner_gan"):
        gz.external_sets(run, run.index(ext))
    unknown = tmp_path / "unknown"
    for cls in ("0_real", "1_fake"):
        (unknown / "somegen" / cls).mkdir(parents=True)
        (unknown / "somegen" / cls / "x.png").write_bytes((ext / "extra" / "0_real" / "x.png").read_bytes())
    with pytest.raises(DataError, match="unknown: the family .* of somegen is not known"):
        gz.external_sets(run, run.index(unknown))
    missing = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                           overrides={"progress": False, "generalization_root": str(tmp_path / "nowhere")})
    index = missing.index()
    with pytest.raises(DataError, match="nowhere"):
        gz.tsets(missing, index, missing.split(index), missing.images(index))


# ----------------------------------------------------------------------------------------- train_generators
def test_train_generators_hold_out_every_other_generator(tmp_path, fixture_root):
    from dfxlib.config import ConfigError

    def run_with(**over):
        return dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                            overrides={"progress": False, "rebuild_split": True, **over})
    run = run_with(train_generators=["gan_a", "dm_a"])
    index = run.index()
    roles = run.generator_roles(index).set_index("generator")["role"].to_dict()
    assert roles == {"dm_a": "seen", "dm_b": "unseen", "gan_a": "seen", "gan_b": "unseen", "real_a": "seen",
                     "real_b": "seen"}
    split = run.split(index).table
    assert set(split.loc[split.generator.isin(["gan_b", "dm_b"]), "split"]) == {"holdout"}
    trained = set(split.loc[split.split.isin(["base", "fusion"]), "generator"])
    assert trained == {"gan_a", "dm_a", "real_a", "real_b"}
    fakes, _ = gz.tset_pools(run, index, run.split(index))
    assert set(fakes.loc[fakes.role == "unseen", "generator"]) == {"gan_b", "dm_b"}
    # naming a real source restricts the reals too
    roles = run_with(train_generators=["gan_a", "dm_a", "real_b"]).generator_roles(index)
    assert set(roles.loc[roles.role == "unseen", "generator"]) == {"gan_b", "dm_b", "real_a"}
    with pytest.raises(ConfigError, match="'train_generators': gan_c not among the generators of .*gan_a"):
        run_with(train_generators=["gan_a", "gan_c"]).generator_roles(index)
    with pytest.raises(ConfigError, match="leave no dm generator to train on"):
        run_with(train_generators=["gan_a"]).generator_roles(index)
    with pytest.raises(ConfigError, match="'holdout_generators': BigGan not among"):
        run_with(holdout_generators=["BigGan"]).generator_roles(index)
