"""The ledger of differences from the paper (`evaluation.differences`): it cannot drift from the paper profile,
its pages are generated from it, and every run's REPORT.md carries the rows of its profile."""

import dataclasses
import json
import typing

import pytest

from dfxlib.config import PROFILES, Config, project_root, resolve
from dfxlib.evaluation import differences as dif
from dfxlib.evaluation.tables import build_report


def paper(**changes):
    return resolve("paper", {"data_root": "/data/deepfeaturex", **changes})


def test_every_paper_setting_is_in_the_ledger_with_its_value():
    assert set(PROFILES["paper"]) <= set(dif.PAPER_SETTINGS), "a paper-profile setting the ledger does not record"
    assert dif.drift(paper()) == []


@pytest.mark.parametrize("change", [{"lr": 1e-3}, {"manipulations": "blur3,rot45"}, {"batch_size": 64},
                                    {"detector_epochs": 10}])
def test_a_paper_setting_changed_alone_is_caught(change, monkeypatch):
    """Changing the paper profile (here through its settings) without the ledger's entry fails the check."""
    cfg = paper(**change)
    assert [line.split(":")[0] for line in dif.drift(cfg)] == list(change)
    monkeypatch.setitem(PROFILES, "paper", {**PROFILES["paper"], "head_lr": 1e-3})  # the profile itself
    assert [line.split(":")[0] for line in dif.drift(paper())] == ["head_lr"]


def test_the_settings_the_rows_name_exist_and_every_row_is_filled():
    known = set(typing.get_type_hints(Config))
    for d in dif.DIFFERENCES:
        assert set(d.settings) <= known, d.topic
        assert all(getattr(d, f.name) for f in dataclasses.fields(d) if f.name not in ("small", "settings")), d.topic
    assert len({d.topic for d in dif.DIFFERENCES}) == len(dif.DIFFERENCES)


def test_docs_and_readme_are_generated_from_the_ledger():
    root = project_root()
    assert (root / "docs" / "differences.md").read_text() == dif.page(), "run `make docs`"
    readme = (root / "README.md").read_text()
    assert f"{dif.README_START}\n{dif.summary()}{dif.README_END}" in readme, "run `make docs`"
    for d in dif.DIFFERENCES:
        assert d.topic in readme


@pytest.mark.parametrize("profile", ["paper", "mini"])
def test_a_report_carries_the_rows_of_its_profile(profile, tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"profile": profile}))
    text = build_report(tmp_path).read_text()
    assert f"## Differences from the paper ({profile} profile)" in text
    blur = next(d for d in dif.DIFFERENCES if d.topic == "Robustness blur")
    assert (blur.dfx if profile == "paper" else blur.small).split(" (")[0] in text
    other = "paper profile" if profile != "paper" else "built-in profiles"
    assert f"dfx, {other}" not in text
