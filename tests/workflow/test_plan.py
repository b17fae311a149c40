"""`dfx plan`: the units of work a run implies, their image passes, GPU time and disk; `dfx run` refuses a run
the disk cannot hold."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from fixture import make_paper_tree

from dfxlib.config import resolve
from dfxlib.models.backbones import PAPER_BACKBONES
from dfxlib.workflow import plan as pl
from dfxlib.workflow.cli import main

SCALE = 0.05  # of the paper's 72,334 images: benchmarks/bench_plan.py plans the full-size tree


@pytest.fixture(scope="module")
def paper_tree(tmp_path_factory) -> Path:
    return make_paper_tree(tmp_path_factory.mktemp("paper") / "data", scale=SCALE)


@pytest.fixture(scope="module")
def paper_plan(paper_tree, tmp_path_factory) -> pl.Plan:
    cfg = resolve("paper", {"data_root": str(paper_tree), "run_dir": str(tmp_path_factory.mktemp("p") / "run"),
                            "progress": False})
    _, plan = pl.plan_for(cfg)
    return plan


def test_paper_plan_lists_every_unit_and_writes_nothing(paper_plan, paper_tree):
    t = pl.table(paper_plan)
    counts = t.groupby("stage").size().to_dict()
    assert counts["base"] == 14 * 2 * 3 and counts["head"] == 14 * 2 and counts["plain"] == 14
    assert counts["features"] == counts["probe"] == 14 and counts["detector"] == 4
    cfg = paper_plan.config
    assert counts["dif"] == 15 * (1 + len(cfg.dif_budgets))  # one per seen generator and budget
    assert set(t.loc[t["stage"] == "features", "unit"]) == {f"features/{b}" for b in PAPER_BACKBONES}
    assert not t["done"].any() and (t["train images"] >= 0).all()
    # an unbalanced base model: every epoch over its training part, as training draws it
    dm = t.set_index("unit").loc["base/densenet121/unbalanced/dm"]
    assert dm["train images"] % cfg.base_epochs == 0 and dm["train images"] > 0
    n = sum(1 for p in paper_tree.rglob("*.png"))
    assert paper_plan.disk["uint8 store"] == n * 3 * 256 * 256
    assert not paper_plan.run_dir.exists()  # a plan of user data writes nothing


def test_the_plan_counts_the_notebooks_that_read_each_perturbed_set(tmp_path, monkeypatch):
    """Without a cache of perturbed features, each notebook that reads a set computes it again: the plan counts
    those notebooks from their code (04 and 06 read the test set under JPEG, 04 the manipulations, 05 and 06
    Table 4's JPEG sets), and follows a notebook that stops reading one."""
    from dfxlib.workflow import notebooks

    pl.readers.cache_clear()
    assert pl.readers() == {"jpeg": 2, "manipulation": 1, "tset": 2}
    books = tmp_path / "notebooks"
    books.mkdir()
    for p in notebooks.select():
        shutil.copy(p, books / p.name)
    six = books / "06_detectors.ipynb"
    six.write_text(six.read_text().replace("gz.evaluate_tsets(", "gz.evaluate_sets("))
    monkeypatch.setattr(notebooks, "notebooks_dir", lambda: books)
    pl.readers.cache_clear()
    try:
        assert pl.readers() == {"jpeg": 2, "manipulation": 1, "tset": 1}
    finally:
        pl.readers.cache_clear()


def test_a_plan_that_does_not_fit_says_which_settings_make_it_fit(paper_plan):
    tight = dataclasses.replace(paper_plan, free=int(paper_plan.needed * 0.4))
    assert not tight.fits
    text = pl.summary(tight)
    assert "DOES NOT FIT" in text and "cache_perturbed_features=false" in text
    # the settings it names, applied, give the plan it promised
    first = tight.savings[0]
    assert first[0].startswith("cache_perturbed_features=false") and first[1] > 0
    cfg = dataclasses.replace(paper_plan.config, cache_perturbed_features=False)
    _, smaller = pl.plan_for(cfg)
    assert sum(paper_plan.disk.values()) - sum(smaller.disk.values()) == first[1]
    assert smaller.disk["features"] < paper_plan.disk["features"] / 3  # perturbed features dominate
    # what is not kept is computed again by each notebook that reads it: more forward passes, not fewer
    passes = lambda plan: sum(u.forward for u in plan.units if u.stage == "features")  # noqa: E731
    assert passes(smaller) > passes(paper_plan)


def test_gpu_time_from_a_throughput_file(paper_plan, tmp_path):
    rates = [{"backbone": b, "images_per_s": {"base": 500.0, "siamese": 400.0, "features": 2000.0, "head": 1e5}}
             for b in PAPER_BACKBONES]
    path = tmp_path / "h200.json"
    path.write_text(json.dumps(rates))
    got = pl.rates_from_file(path)
    t = pl.table(paper_plan, got).set_index("unit")
    u = next(u for u in paper_plan.units if u.name == "base/resnet50/siamese/gan")
    assert t.loc["base/resnet50/siamese/gan", "hours"] == round((u.train / 400 + u.forward / 2000) / 3600, 2)
    assert t.loc[t["stage"] == "dif", "hours"].isna().all()  # its U-Net has no figures
    assert "time left:" in pl.summary(paper_plan, got, "test rates")


def test_smoke_plan_matches_what_the_smoke_run_wrote(smoke_run):
    """The plan's feature rows are the rows the smoke run cached; its weights, the best weights it kept."""
    cfg = resolve("smoke", {"run_dir": str(smoke_run), "progress": False})
    _, plan = pl.plan_for(cfg)
    rows = sum(len(json.loads(p.read_text())) for p in (smoke_run / "cache" / "features").glob("*.json"))
    assert sum(u.forward for u in plan.units if u.stage == "features") == rows
    best = sum(p.stat().st_size for p in (smoke_run / "checkpoints").rglob("best.safetensors"))
    assert abs(plan.disk["checkpoints"] - best) < 0.03 * best
    assert all(u.done for u in plan.units), [u.name for u in plan.units if not u.done]
    assert not list((smoke_run / "checkpoints").rglob("last_state.pt"))  # finished models keep best weights only


def test_dfx_plan_calibrates_and_dfx_run_refuses_what_does_not_fit(fixture_root, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    args = ["--profile", "smoke", "-p", f"data_root={fixture_root}", "-p", f"run_dir={run_dir}", "-p",
            "backbones=test_resnet", "-p", "progress=false"]
    assert main(["plan", *args, "--calibrate", "--batch-size", "2", "--csv", str(tmp_path / "plan.csv")]) == 0
    out = capsys.readouterr().out
    assert "time left:" in out and "rates measured here (auto, batch 2)" in out and "fits" in out
    t = pd.read_csv(tmp_path / "plan.csv")
    assert t.loc[t["stage"] == "base", "hours"].notna().all()
    monkeypatch.setattr(pl, "_free", lambda _: 1000)  # a nearly full disk
    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert "refused, the disk cannot hold this run (nothing was written)" in err and "DOES NOT FIT" in err
    assert not run_dir.exists()
    assert main(["plan", *args]) == 1  # and the plan says so by its exit code
