import shutil

import pandas as pd
import pytest

from dfxlib.data.index import build_index
from dfxlib.data.split import SplitMismatchError, load_or_make_split, make_split


def _usable(n_per=(50, 30, 7), dup_every=5):
    rows = []
    for gi, n in enumerate(n_per):
        for fam in ("dm", "gan", "real"):
            for i in range(n):
                sha = f"{fam}{gi}-{i // dup_every if i % dup_every == 0 and i else i}"
                rows.append({"path": f"{fam}/g{gi}/{i}.png", "family": fam, "generator": f"{fam}{gi}",
                             "sha256": sha})
    return pd.DataFrame(rows)


def test_deterministic_and_seed_dependent():
    u = _usable()
    a, b, c = make_split(u, 0), make_split(u, 0), make_split(u, 1)
    pd.testing.assert_frame_equal(a, b)
    assert (a["split"] != c["split"]).any()


def test_stratified_per_generator():
    u = _usable()
    s = make_split(u, 3)
    for (_, gen), g in s.groupby(["family", "generator"]):
        n = len(g)
        shares = g["split"].value_counts().reindex(["base", "fusion", "test"], fill_value=0)
        for name, frac in (("base", 0.4), ("fusion", 0.4), ("test", 0.2)):
            assert abs(shares[name] - frac * n) <= 2, (gen, dict(shares), n)


def test_identical_content_never_straddles():
    u = _usable()
    # also a cross-class duplicate
    u.loc[u.index[-1], "sha256"] = u.loc[0, "sha256"]
    s = make_split(u, 0).merge(u[["path", "sha256"]], on="path")
    assert (s.groupby("sha256")["split"].nunique() == 1).all()
    assert u["sha256"].duplicated().any()


def test_holdout_generators_never_train():
    u = _usable()
    s = make_split(u, 0, holdout=["gan1"])
    assert set(s.loc[s["generator"] == "gan1", "split"]) == {"holdout"}
    assert "holdout" not in set(s.loc[s["generator"] != "gan1", "split"])


def test_persisted_split_is_reused_and_refused_when_stale(tmp_path):
    u = _usable()
    first = load_or_make_split(u, tmp_path, seed=0)
    again = load_or_make_split(u, tmp_path, seed=0)
    pd.testing.assert_frame_equal(first.table.astype(str), again.table.astype(str))
    before = (tmp_path / "split.csv").read_text()
    with pytest.raises(SplitMismatchError, match="seed.*rebuild_split"):
        load_or_make_split(u, tmp_path, seed=1)
    with pytest.raises(SplitMismatchError, match="1 image\\(s\\) added"):
        extra = pd.concat([u, pd.DataFrame([{"path": "new.png", "family": "dm", "generator": "dm0",
                                             "sha256": "zzz"}])])
        load_or_make_split(extra, tmp_path, seed=0)
    assert (tmp_path / "split.csv").read_text() == before  # nothing overwritten
    rebuilt = load_or_make_split(u, tmp_path, seed=1, rebuild=True)
    assert rebuilt.meta["seed"] == 1


def test_lookup_by_path(tmp_path):
    u = _usable()
    s = load_or_make_split(u, tmp_path, seed=0)
    path = u["path"].iloc[10]
    assert s.of(path) in ("base", "fusion", "test")
    with pytest.raises(KeyError, match="nope.png"):
        s.of("nope.png")
    assert len(s.rows("test")) == (s.table["split"] == "test").sum()
    summary = s.summary()
    assert summary["total"].sum() == len(u)


def test_split_of_a_real_index(tmp_path, fixture_root):
    root = tmp_path / "d"
    shutil.copytree(fixture_root, root)
    # a byte-identical copy inside another class
    shutil.copy(root / "dm_generated/dm_a/dm_a_00000.png", root / "real/real_a/copy.png")
    idx = build_index(root, progress=False)
    s = load_or_make_split(idx.usable, tmp_path / "run", seed=0)
    assert s.of("dm_generated/dm_a/dm_a_00000.png") == s.of("real/real_a/copy.png")
