"""MiniDFX: structure, roles, determinism, caching, the world runs share, and bad cache folders (on a tiny recipe)."""

import hashlib
import shutil
import socket
from pathlib import Path

import pandas as pd
import pytest

from dfxlib.data import minidfx
from dfxlib.data.audit import audit
from dfxlib.data.index import build_index
from dfxlib.data.spectra import check_sanity
from dfxlib.data.split import make_split

TINY = minidfx.Recipe(per_generator=8, size=32, seed=0, train_steps=10)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    real_connect = socket.socket.connect

    def no_network(*args, **kwargs):
        raise AssertionError("MiniDFX tried to reach the network")

    socket.socket.connect = no_network  # the build must use only what is installed
    try:
        return minidfx.build(tmp_path_factory.mktemp("worlds"), TINY, progress=False)
    finally:
        socket.socket.connect = real_connect


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_structure_families_and_sources(world):
    idx = build_index(world, progress=False)
    assert idx.layout == "paper" and len(idx.bad) == 0
    meta = minidfx.metadata(world)
    assert len(meta) == len(idx.usable) == TINY.per_generator * (len(minidfx.GENERATORS) + len(minidfx.PHOTOS))
    assert meta[meta.family == "gan"]["arch"].nunique() >= 4
    assert meta[meta.family == "dm"]["arch"].nunique() >= 4
    assert meta[meta.family == "real"]["generator"].nunique() >= 3
    u = idx.usable
    assert set(u["format"]) == {"PNG"} and set(u["mode"]) == {"RGB"}
    assert set(u["width"]) == set(u["height"]) == {TINY.size}
    assert not audit(idx).confounds["confounded"].any()


def test_every_family_has_unseen_and_inner_instances():
    gens = minidfx.generators_table()
    for fam in ("gan", "dm"):
        g = gens[gens.family == fam]
        assert "unseen" in set(g.role)
        inner = g[g.role == "inner"]
        assert len(inner) >= 1
        # an inner generator is a seen architecture with another seed
        assert set(inner.arch) <= set(g[g.role == "seen"].arch)
        assert not set(g[g.role == "unseen"].arch) & set(g[g.role == "seen"].arch)


def test_regions_never_straddle_splits(world):
    idx = build_index(world, progress=False)
    meta = minidfx.metadata(world).set_index("path")
    u = idx.usable
    holdout = [g.name for g in minidfx.GENERATORS if g.role != "seen"]
    s = make_split(u, 0, holdout=holdout, groups=u["path"].map(meta["group"]))
    s = s.assign(group=s["path"].map(meta["group"]))
    trained = s[s["split"] != "holdout"]
    assert (trained.groupby("group")["split"].nunique() == 1).all()
    assert set(s.loc[s["generator"].isin(holdout), "split"]) == {"holdout"}


def test_build_is_deterministic_and_cached(world, tmp_path):
    again = minidfx.build(tmp_path, TINY, progress=False)
    assert again.name == world.name  # same recipe, same key
    assert _hashes(again) == _hashes(world)
    marker = again / minidfx.COMPLETE
    stamp = marker.stat().st_mtime_ns
    assert minidfx.build(tmp_path, TINY, progress=False) == again
    assert marker.stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_new_seed_or_recipe_changes_the_key():
    keys = {TINY.key(), minidfx.Recipe(8, 32, 1, 10).key(), minidfx.Recipe(8, 32, 0, 11).key(),
            minidfx.Recipe(9, 32, 0, 10).key(), minidfx.Recipe(8, 32, 0, 10, version="other").key()}
    assert len(keys) == 5


def test_interrupted_build_is_rebuilt(world, tmp_path):
    broken = tmp_path / world.name
    broken.mkdir()
    (broken / "real").mkdir()
    (broken / minidfx.METADATA).write_text("path\n")  # metadata but no completion marker
    logs = []
    rebuilt = minidfx.build(tmp_path, TINY, progress=False, log=logs.append)
    assert rebuilt == broken and minidfx.is_complete(rebuilt)
    assert any("incomplete" in m for m in logs)
    assert _hashes(rebuilt) == _hashes(world)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".building")]


def test_unwritable_cache_folder_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(minidfx.MiniDFXError, match="a_file.*not writable"):
        minidfx.build(blocker / "cache", TINY, progress=False)


def test_a_build_finished_meanwhile_by_another_process_is_used(world, tmp_path, monkeypatch):
    """Two runs building one recipe into the shared folder at once: the second's rename finds the first's world."""
    real_replace = minidfx.os.replace

    def racing(src, dst):
        shutil.copytree(world, dst)  # the other process renames its world into place first
        return real_replace(src, dst)
    monkeypatch.setattr(minidfx.os, "replace", racing)
    logs = []
    got = minidfx.build(tmp_path, TINY, progress=False, log=logs.append)
    assert minidfx.is_complete(got) and _hashes(got) == _hashes(world)
    assert any("built meanwhile by another process" in m for m in logs)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".building")]


def _tiny_run(folder: Path):
    from dfxlib.config import resolve
    from dfxlib.run import Run

    over = {"builtin_per_generator": TINY.per_generator, "builtin_size": TINY.size,
            "builtin_train_steps": TINY.train_steps, "builtin_seed": TINY.seed, "progress": False}
    return Run(config=resolve("smoke", over), dir=folder)


def test_run_folders_share_one_world_per_recipe(world, tmp_path, monkeypatch, capsys):
    """A fresh run folder reuses the world an earlier run built (`shared_folder()`, under $DFX_CACHE); a run folder
    with a world of its own keeps using it; without a writable shared folder a run builds its own, and says so."""
    monkeypatch.setenv("DFX_CACHE", str(tmp_path / "cache"))
    shared = minidfx.shared_folder() / world.name
    shutil.copytree(world, shared)  # as if an earlier run had built it
    a, b = _tiny_run(tmp_path / "a"), _tiny_run(tmp_path / "b")
    assert a.data_root() == b.data_root() == shared
    assert not list(a.cache.glob("minidfx-*")) and not list(b.cache.glob("minidfx-*"))
    own = _tiny_run(tmp_path / "own")
    shutil.copytree(world, own.cache / world.name)  # built into its folder before worlds were shared
    assert own.data_root() == own.cache / world.name
    monkeypatch.setenv("DFX_CACHE", str(tmp_path / "a_file"))
    (tmp_path / "a_file").write_text("not a folder")
    alone = _tiny_run(tmp_path / "alone")
    assert alone.data_root() == alone.cache / world.name and _hashes(alone.cache / world.name) == _hashes(world)
    err = capsys.readouterr().err
    assert "a_file" in err and "not writable" in err and "its folder instead" in err


def test_a_seed_folder_with_its_own_world_lends_it_to_the_next_seeds(world, tmp_path):
    """`dfx run --seeds` where the first seed built its world in its own folder: the others get it hard-linked."""
    from dfxlib.workflow.notebooks import share_worlds

    first, second = tmp_path / "seed-0", tmp_path / "seed-1"
    shutil.copytree(world, first / "cache" / world.name)
    assert share_worlds(first, second) == [second / "cache" / world.name]
    linked = second / "cache" / world.name / minidfx.METADATA
    assert linked.stat().st_ino == (first / "cache" / world.name / minidfx.METADATA).stat().st_ino
    assert share_worlds(first, second) == []  # already there: nothing linked twice


def test_check_sanity_flags_broken_worlds():
    ok = pd.DataFrame([{"baseline": "colour statistics", "task": "t", "balanced_accuracy": 0.40, "chance": 1 / 3},
                       {"baseline": "residual spectrum", "task": "t", "balanced_accuracy": 0.90, "chance": 1 / 3}])
    assert check_sanity(ok) == []
    bad = ok.assign(balanced_accuracy=[0.9, 0.4])
    msgs = check_sanity(bad)
    assert len(msgs) == 2 and "colour" in msgs[0] and "no fingerprint" in msgs[1]


def test_the_world_is_drawn_from_builtin_seed_not_from_the_training_seed(tmp_path):
    from dfxlib.config import resolve
    from dfxlib.run import Run

    recipe = lambda **kw: Run(config=resolve("smoke", kw), dir=tmp_path).recipe()  # noqa: E731
    assert recipe(seed=0) == recipe(seed=7)  # dfx run --seeds repeats the trained part on one world
    assert recipe(builtin_seed=1).key() != recipe().key() and recipe(builtin_seed=1).seed == 1
