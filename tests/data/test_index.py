import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dfxlib.data.index import CLASS_INDEX, CLASSES, DataError, build_index, detect_layout


def test_class_order_is_fixed():
    assert CLASSES == ("dm", "gan", "real")
    assert CLASS_INDEX == {"dm": 0, "gan": 1, "real": 2}


def test_paper_layout(fixture_root):
    idx = build_index(fixture_root, progress=False)
    assert idx.layout == "paper"
    t = idx.table
    assert len(t) == 60 and (t["error"] == "").all()
    assert dict(t.groupby("family").size()) == {"dm": 20, "gan": 20, "real": 20}
    assert set(t["generator"]) == {"dm_a", "dm_b", "gan_a", "gan_b", "real_a", "real_b"}
    assert (t["label"] == t["family"].map(CLASS_INDEX)).all()
    row = t.iloc[0]
    assert (row["width"], row["height"], row["format"], row["mode"]) == (32, 32, "PNG", "RGB")
    assert len(row["sha256"]) == 64 and row["bytes"] > 0
    assert not idx.problems


def _img(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


def test_binary_layout_flat_and_per_generator(tmp_path):
    _img(tmp_path / "flat/0_real/a.png", 1)
    _img(tmp_path / "flat/1_fake/b.png", 2)
    idx = build_index(tmp_path / "flat", progress=False)
    assert idx.layout == "binary"
    assert sorted(idx.table["family"]) == ["fake", "real"]
    assert idx.table.set_index("family").loc["fake", "label"] == -1

    _img(tmp_path / "gens/stylegan2/0_real/a.png", 3)
    _img(tmp_path / "gens/stylegan2/1_fake/b.png", 4)
    _img(tmp_path / "gens/glide/1_fake/c.png", 5)
    _img(tmp_path / "gens/mystery/1_fake/d.png", 6)
    t = build_index(tmp_path / "gens", progress=False).table.set_index("path")
    assert t.loc["stylegan2/1_fake/b.png", "family"] == "gan"
    assert t.loc["glide/1_fake/c.png", "family"] == "dm"
    assert t.loc["mystery/1_fake/d.png", "family"] == "fake"
    assert t.loc["stylegan2/0_real/a.png", "family"] == "real"
    fam = build_index(tmp_path / "gens", families={"mystery": "gan"}, progress=False).table
    assert fam.set_index("path").loc["mystery/1_fake/d.png", "family"] == "gan"


def test_manifest_layout(tmp_path):
    _img(tmp_path / "imgs/x.png", 1)
    _img(tmp_path / "imgs/y.png", 2)
    pd.DataFrame({"path": ["imgs/x.png", "imgs/y.png", "imgs/missing.png", "imgs/x.png"],
                  "family": ["gan", "real", "dm", "alien"], "generator": ["g", "r", "d", "g"]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    idx = build_index(tmp_path / "m.csv", progress=False)
    assert idx.layout == "manifest"
    t = idx.table
    assert list(t["family"][:2]) == ["gan", "real"]
    assert t.loc[2, "error"] == "missing file"
    assert "line 5" in t.loc[3, "error"] and "alien" in t.loc[3, "error"]
    assert len(idx.usable) == 2


def test_manifest_without_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(DataError, match="m.csv.*family"):
        build_index(tmp_path / "m.csv", progress=False)


def test_missing_root_and_unknown_layout(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_index(tmp_path / "nope", progress=False)
    (tmp_path / "random").mkdir()
    with pytest.raises(DataError, match="no known layout"):
        detect_layout(tmp_path / "random")


def test_empty_class_is_reported(tmp_path, fixture_root):
    root = tmp_path / "d"
    shutil.copytree(fixture_root, root)
    shutil.rmtree(root / "gan_generated")
    (root / "gan_generated").mkdir()
    idx = build_index(root, progress=False)
    assert any("class gan has no usable images" in p and "gan_generated" in p for p in idx.problems)


def test_cache_is_reused_and_invalidated(tmp_path, fixture_root, monkeypatch):
    root = tmp_path / "d"
    shutil.copytree(fixture_root, root)
    cache = tmp_path / "cache.csv"
    first = build_index(root, cache=cache, progress=False).table
    calls = []
    import dfxlib.data.index as mod
    real = mod.inspect_file
    monkeypatch.setattr(mod, "inspect_file", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = build_index(root, cache=cache, progress=False).table
    pd.testing.assert_frame_equal(first, again)
    assert calls == []
    changed = root / "real/real_a/real_a_00000.png"
    _img(changed, 99)
    os.utime(changed, ns=(1, 1))
    third = build_index(root, cache=cache, progress=False).table
    assert [p.name for p in calls] == [changed.name]
    assert third.set_index("path").loc["real/real_a/real_a_00000.png", "sha256"] != \
        first.set_index("path").loc["real/real_a/real_a_00000.png", "sha256"]


def test_damaged_cache_is_rebuilt(tmp_path, fixture_root):
    cache = tmp_path / "cache.csv"
    cache.write_text("garbage\x00,\n\"unterminated")
    idx = build_index(fixture_root, cache=cache, progress=False)
    assert len(idx.usable) == 60


def test_manifest_refuses_other_labels_conflicts_and_paths_outside_its_folder(tmp_path):
    _img(tmp_path / "data/imgs/x.png", 1)
    _img(tmp_path / "data/imgs/y.png", 2)
    _img(tmp_path / "data/imgs/z.png", 3)
    _img(tmp_path / "secret.png", 4)  # a real image outside the manifest's folder
    rows = [("imgs/x.png", "FAKE"), ("imgs/y.png", "dm"), ("imgs/y.png", "gan"), ("imgs/z.png", "real"),
            ("imgs/z.png", "real"), ("../secret.png", "real"), (str(tmp_path / "secret.png"), "real"),
            ("imgs/../../secret.png", "gan")]
    pd.DataFrame({"path": [p for p, _ in rows], "family": [f for _, f in rows], "generator": "g"}
                 ).to_csv(tmp_path / "data/m.csv", index=False)
    t = build_index(tmp_path / "data/m.csv", progress=False).table
    err = list(t["error"])
    assert "unknown family 'FAKE'" in err[0] and (t["label"] >= 0).sum() == len(t) - 1
    assert "conflicting labels: dm (line 3) and gan (line 4)" in err[1] and err[1] == err[2]
    assert err[3] == "" and "listed twice (first on line 5)" in err[4]  # the same label twice: used once
    for i in (5, 6, 7):
        assert "outside the manifest's folder" in err[i]
        assert t.loc[i, "sha256"] == "" and t.loc[i, "bytes"] == 0 and not t.loc[i, "readable"]  # never read
    assert t[t["error"] == ""]["path"].tolist() == ["imgs/z.png"]


def test_a_manifest_row_cannot_leave_its_folder_through_a_link(tmp_path):
    """#32 item 12: a row `link/secret.png` with `link -> ..` was read and its sha256 written to the index."""
    _img(tmp_path / "data/imgs/x.png", 1)
    _img(tmp_path / "secret.png", 4)
    (tmp_path / "data/link").symlink_to(tmp_path)
    (tmp_path / "data/imgs/inner").symlink_to(tmp_path / "data/imgs")  # a link that stays inside is fine
    (tmp_path / "data/m.csv").write_text("path,family,generator\nlink/secret.png,real,r\nimgs/x.png,dm,d\n"
                                         "imgs/inner/x.png,gan,g\n")
    t = build_index(tmp_path / "data/m.csv", progress=False).table
    assert "outside the manifest's folder (through a link)" in t.loc[0, "error"]
    assert t.loc[0, "sha256"] == "" and not t.loc[0, "readable"]  # never read, never called readable
    assert t.loc[1, "error"] == "" and t.loc[2, "error"] == "" and t.loc[2, "sha256"] == t.loc[1, "sha256"]


def test_an_empty_manifest_is_named(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.csv: the manifest is empty \(it needs a header line"):
        build_index(tmp_path / "empty.csv", progress=False)
