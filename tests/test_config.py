import json

import pytest

from dfxlib.config import PROFILES, Config, ConfigError, load, resolve


def test_profiles_resolve_and_differ():
    smoke, mini = resolve("smoke"), resolve("mini")
    assert smoke.profile == "smoke" and mini.profile == "mini"
    assert smoke.builtin_per_generator < mini.builtin_per_generator
    assert set(PROFILES) == {"smoke", "mini", "paper"}


def test_default_profile_is_mini():
    assert resolve().profile == "mini" == Config().profile


@pytest.mark.parametrize("bad, key", [({"sede": 1}, "sede"), ({"seed": "abc"}, "seed"),
                                      ({"index_check": "quick"}, "index_check"),
                                      ({"split_base": 0.5}, "split_base"), ({"max_pixels": 0}, "max_pixels"),
                                      ({"rebuild_split": "maybe"}, "rebuild_split"),
                                      # values that used to be accepted and fail later, or silently
                                      ({"lr": "nan"}, "'lr': must be a finite"), ({"lr": float("inf")}, "'lr'"),
                                      ({"weight_decay": "nan"}, "'weight_decay'"), ({"seed": -1}, "'seed'"),
                                      ({"seed": 10**23}, "'seed'"), ({"device": "tpu"}, "'device'"),
                                      ({"input_size": 100000}, "'input_size'"),
                                      ({"head_patience": -2}, "'head_patience': epochs >= 0, or -1")])
def test_bad_settings_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key):
        resolve("mini", bad)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="profile"):
        resolve("huge")


def test_paper_profile_needs_data():
    with pytest.raises(ConfigError, match="data_root"):
        resolve("paper")
    assert resolve("paper", {"data_root": "/data/dfx"}).data_root == "/data/dfx"


def test_strings_from_the_command_line_are_coerced():
    cfg = resolve("mini", {"seed": "7", "split_base": "0.5", "split_fusion": "0.3", "rebuild_split": "true",
                           "holdout_generators": "a, b"})
    assert (cfg.seed, cfg.split_base, cfg.rebuild_split, cfg.holdout_generators) == (7, 0.5, True, ("a", "b"))


def test_config_json_round_trip(tmp_path):
    cfg = resolve("smoke", {"seed": 3, "holdout_generators": ["x"]})
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert load(p) == cfg
    assert json.loads(cfg.to_json())["seed"] == 3


def test_load_rejects_non_config(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="config.json"):
        load(p)


def test_an_absent_gpu_is_refused_before_anything_runs(tmp_path):
    import torch

    from dfxlib.workflow.notebooks import run_notebooks

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: cuda:0 is not absent here")
    with pytest.raises(ConfigError, match="'device': cuda:0 is not available"):
        run_notebooks("smoke", {"run_dir": str(tmp_path / "r"), "device": "cuda:0"}, log=lambda *_: None)
    assert not (tmp_path / "r").exists()


def test_settings_say_their_value_the_profiles_and_what_they_mean():
    import dataclasses

    from dfxlib.config import Config, ConfigError, describe, resolve, setting_docs

    assert set(setting_docs()) == {f.name for f in dataclasses.fields(Config)} and all(setting_docs().values())
    rows = {r["setting"]: r for r in describe(resolve("smoke", {"base_epochs": 3}), ["base_epochs", "backbones",
                                                                                      "split_test"])}
    assert rows["base_epochs"]["value"] == "3" and rows["base_epochs"]["smoke profile"] == "1"
    assert rows["base_epochs"]["changed"] == "yes" and rows["backbones"]["changed"] == ""
    assert rows["backbones"]["value"] == "efficientnet_lite0" and rows["split_test"]["smoke profile"] == "0.2"
    assert "unbalanced base model" in rows["base_epochs"]["meaning"]
    with pytest.raises(ConfigError, match="unknown setting.*'epochs'"):
        describe(resolve("smoke"), ["epochs"])
