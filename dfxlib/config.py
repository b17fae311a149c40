"""Settings: one typed, validated `Config`, three profiles, saved with every run as `config.json`.

A profile (`smoke`, `mini`, `paper`) picks a coherent set of values; any single value can be overridden
by name. Unknown keys and bad values raise `ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the key."""


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Change values with `resolve(profile, overrides)`, never by editing."""

    profile: str = "mini"
    #: dataset folder (paper layout, binary layout or a CSV manifest); "" = the profile's built-in data
    data_root: str = ""
    #: where outputs go; "" = runs/<profile> under the project root
    run_dir: str = ""
    seed: int = 0
    #: built-in MiniDFX world (used when data_root is ""): images per generator and per real source
    builtin_per_generator: int = 200
    #: built-in MiniDFX world: image side in pixels
    builtin_size: int = 64
    #: built-in MiniDFX world: training steps of each generator
    builtin_train_steps: int = 600
    split_base: float = 0.4
    split_fusion: float = 0.4
    split_test: float = 0.2
    #: generators kept out of every training split ("unseen"); for user data, name them here
    holdout_generators: tuple[str, ...] = ()
    #: rebuild the persisted split even if it was made with another seed or dataset
    rebuild_split: bool = False
    #: "full" decodes every image while indexing (finds truncated files); "header" reads headers only
    index_check: str = "full"
    #: images with more pixels are refused as decompression bombs
    max_pixels: int = 89_478_485
    #: number of sample images per generator in audit figures
    audit_samples: int = 6
    #: bootstrap resamples for confidence intervals
    bootstrap: int = 1000
    #: show progress bars (they are hidden anyway when not interactive)
    progress: bool = True

    def to_json(self) -> str:
        """Serialise with sorted keys (tuples become lists)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


PROFILES: dict[str, dict[str, Any]] = {
    # seconds per notebook: tests and CI
    "smoke": dict(builtin_per_generator=16, builtin_size=32, builtin_train_steps=60, audit_samples=3,
                  bootstrap=100),
    # the default: the embedded world, whole suite in minutes on a 2-core CPU
    "mini": dict(),
    # the paper's settings on a user's copy of the real dataset (data_root must be given)
    "paper": dict(index_check="full", bootstrap=1000),
}

_CHOICES: dict[str, tuple[str, ...]] = {"index_check": ("full", "header"), "profile": tuple(PROFILES)}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn `value` (a literal or a command-line string) into `typ`, or raise ConfigError."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"setting {key!r}: expected a list of names, got {value!r}")
        return tuple(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"setting {key!r}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"setting {key!r}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"setting {key!r}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"setting {key!r}: expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, (str, os.PathLike)):
            return str(value)
        raise ConfigError(f"setting {key!r}: expected a string, got {value!r}")
    raise ConfigError(f"setting {key!r}: unsupported type {typ!r}")  # pragma: no cover


def _validate(cfg: Config) -> None:
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"setting {key!r}: must be one of {', '.join(choices)}, got {getattr(cfg, key)!r}")
    for key in ("split_base", "split_fusion", "split_test"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"setting {key!r}: must be between 0 and 1, got {getattr(cfg, key)}")
    total = cfg.split_base + cfg.split_fusion + cfg.split_test
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"settings 'split_base', 'split_fusion', 'split_test' must sum to 1, got {total:g}")
    for key in ("builtin_per_generator", "builtin_train_steps", "max_pixels", "bootstrap"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"setting {key!r}: must be at least 1, got {getattr(cfg, key)}")
    if cfg.builtin_size < 32:
        raise ConfigError(f"setting 'builtin_size': must be at least 32, got {cfg.builtin_size}")
    if cfg.audit_samples < 0:
        raise ConfigError(f"setting 'audit_samples': must be >= 0, got {cfg.audit_samples}")
    if cfg.profile == "paper" and not cfg.data_root:
        raise ConfigError("setting 'data_root': the paper profile needs your copy of the dataset (data_root=...)")


def resolve(profile: str = "mini", overrides: Mapping[str, Any] | None = None, **more: Any) -> Config:
    """Build the Config of `profile` with `overrides` (and keyword overrides) applied and validated.

    Values may be proper literals (from a notebook) or strings (from `dfx run -p key=value`).
    """
    if profile not in PROFILES:
        raise ConfigError(f"setting 'profile': must be one of {', '.join(PROFILES)}, got {profile!r}")
    types = typing.get_type_hints(Config)
    values: dict[str, Any] = {"profile": profile, **PROFILES[profile]}
    for key, value in {**dict(overrides or {}), **more}.items():
        if key not in types:
            raise ConfigError(f"unknown setting {key!r}; known settings: {', '.join(sorted(types))}")
        if key == "profile" and value != profile:
            raise ConfigError("setting 'profile': choose the profile with the profile argument, not an override")
        values[key] = _coerce(key, value, types[key])
    cfg = Config(**values)
    _validate(cfg)
    return cfg


def load(path: str | Path) -> Config:
    """Read a saved `config.json` (validated like any override)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict) or "profile" not in data:
        raise ConfigError(f"{path}: not a dfx config (no 'profile' key)")
    profile = data.pop("profile")
    return resolve(profile, data)


def project_root(start: Path | None = None) -> Path:
    """The folder holding `notebooks/` and `pyproject.toml` above `start` (default: cwd), else cwd."""
    here = (start or Path.cwd()).resolve()
    for cand in (here, *here.parents):
        if (cand / "pyproject.toml").is_file() and (cand / "notebooks").is_dir():
            return cand
    return here


def runs_root() -> Path:
    """Where runs go: $DFX_RUNS if set, else `runs/` in the project root."""
    env = os.environ.get("DFX_RUNS")
    return Path(env).resolve() if env else project_root() / "runs"


def run_dir_of(cfg: Config) -> Path:
    """The run folder of `cfg` (absolute)."""
    return Path(cfg.run_dir).resolve() if cfg.run_dir else runs_root() / cfg.profile

