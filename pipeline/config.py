"""Pipeline configuration: one YAML file, documented defaults, strict keys.

Every key has a default below; a user's YAML overrides some of them. An
unknown key or a value of the wrong type is rejected with its dotted path, so
a typo never silently falls back to a default.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import yaml

from musicrec.models.features import AudioFeatureParams

DEFAULTS: dict[str, Any] = {
    # Seeds data splits' tie-breaks, weight initialisation and shuffling.
    "seed": 0,
    # Pass-through Apache Beam flags, e.g. ["--runner=FlinkRunner", ...].
    "beam_args": [],
    "audio": {
        # Log-mel front end; shared by ingestion, training and the clients.
        "features": AudioFeatureParams().to_dict(),
        "eval_fraction": 0.1,
        "test_fraction": 0.1,
        "num_shards": 1,
    },
    "playlogs": {
        # "auto" picks the reader from the file name: .csv, .tsv, StreamingHistory*.json.
        "format": "auto",
        "session_gap_seconds": 1800,
        "min_session_length": 2,
        "eval_fraction": 0.1,
        "test_fraction": 0.1,
        "vocab_min_count": 1,
        "num_shards": 1,
    },
    "genre_model": {
        # Keys of models.genre.model.GenreHParams; empty means its defaults.
        "hparams": {},
        # Blessing: track accuracy must beat chance by this factor.
        "min_accuracy_over_chance": 1.5,
    },
    "next_track_model": {
        # Keys of models.next_track.model.NextTrackHParams.
        "hparams": {},
        # Blessing: HR@20 must be at least the popularity baseline's.
        "must_beat_popularity": True,
    },
}

# Sections whose inner keys belong to another module, which validates them.
_OPEN_SECTIONS = {("genre_model", "hparams"), ("next_track_model", "hparams")}


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names its path."""


def _merge(defaults: Any, override: Any, path: tuple[str, ...]) -> Any:
    if isinstance(defaults, dict):
        if not isinstance(override, Mapping):
            raise ConfigError(f"{'.'.join(path) or '<root>'}: expected a mapping, "
                              f"got {type(override).__name__}")
        if path in _OPEN_SECTIONS:
            return {**defaults, **override}
        merged = copy.deepcopy(defaults)
        for key, value in override.items():
            if key not in defaults:
                known = ", ".join(sorted(defaults))
                raise ConfigError(f"{'.'.join(path + (str(key),))}: unknown key (known: {known})")
            merged[key] = _merge(defaults[key], value, path + (key,))
        return merged
    if defaults is None or override is None:
        return override
    if isinstance(defaults, bool) != isinstance(override, bool):
        raise ConfigError(f"{'.'.join(path)}: expected {type(defaults).__name__}, got {override!r}")
    if isinstance(defaults, (int, float)) and isinstance(override, (int, float)):
        return type(defaults)(override) if isinstance(defaults, float) else override
    if not isinstance(override, type(defaults)):
        raise ConfigError(f"{'.'.join(path)}: expected {type(defaults).__name__}, got {override!r}")
    return override


def make_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Returns the defaults with ``overrides`` merged in and validated."""
    config = _merge(DEFAULTS, dict(overrides or {}), ())
    try:
        AudioFeatureParams.from_dict(config["audio"]["features"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"audio.features: {exc}") from exc
    for section in ("audio", "playlogs"):
        fractions = config[section]["eval_fraction"] + config[section]["test_fraction"]
        if not 0 <= fractions < 1:
            raise ConfigError(f"{section}: eval_fraction + test_fraction must be in [0, 1)")
    return config


def load_config(path: str | None) -> dict[str, Any]:
    """Reads a YAML config (``yaml.safe_load``) over the defaults; ``None`` gives the defaults."""
    if path is None:
        return make_config()
    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    return make_config(loaded or {})


def feature_params(config: Mapping[str, Any]) -> AudioFeatureParams:
    return AudioFeatureParams.from_dict(config["audio"]["features"])


def dump_config(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)
