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
from musicrec.models.genre.frontends import (DEFAULT_FRONTEND, check_frontend,
                                            frontend_feature_params)

DEFAULTS: dict[str, Any] = {
    # Seeds data splits' tie-breaks, weight initialisation and shuffling.
    "seed": 0,
    # Pass-through Apache Beam flags, e.g. ["--runner=FlinkRunner", ...].
    "beam_args": [],
    "audio": {
        # The audio features are the genre front end's (genre_model.frontend); ingestion and
        # training use them, and the exported model stores them for its clients. With
        # frontend log_mel, keys of models.features.AudioFeatureParams override its defaults
        # (sample_rate 22050, n_fft 2048, hop_length 512, n_mels 64, fmin 20.0, fmax null,
        # segment_seconds 3.0, segment_hop_seconds 3.0, log_floor 1e-6, center false,
        # compression log); musicnn_msd reads fixed features and takes none.
        "features": {},
        "eval_fraction": 0.1,
        "test_fraction": 0.1,
        "num_shards": 1,
        # Store each track's classical-baseline clip vector (22 050 Hz MFCC, centroid,
        # contrast) with its examples, so the evaluator's baseline reads the audio, not the
        # front end's log-mel; about 30 ms of CPU per 30 s track (about doubles the audio
        # ExampleGen's time).
        "baseline_vectors": True,
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
        # Drop plays shorter than skip_threshold_ms (skips) before sessionizing.
        "skip_filter": False,
        "skip_threshold_ms": 30000,
        # Collapse immediate repeats of the same track into one play.
        "collapse_repeats": False,
        # Tracks with fewer plays are dropped before sessions are filtered by length.
        "min_item_support": 1,
        # "per_user" (each user's last fractions of time) or "global" (one cut for everyone).
        "split_mode": "per_user",
        # Write a per-play `skipped` feature list into each session.
        "write_skip_flags": False,
        # Seconds between progress lines of each ingestion worker.
        "progress_seconds": 30.0,
    },
    "genre_model": {
        # "musicnn_msd": a small recurrent clip head over the frozen, pretrained MSD_musicnn
        # network (licence: NOTICE); "log_mel": the from-scratch LSTM/CRNN over log-mel
        # segments (docs/genre.md, "Choosing a front end").
        "frontend": DEFAULT_FRONTEND,
        # musicnn_msd: keys of models.genre.pretrained.PretrainedHParams: recurrent
        # lstm|gru|none, recurrent_units, bidirectional, embedding_dim, dropout,
        # recurrent_path_dropout, learning_rate, weight_decay, clipnorm, epochs,
        # batch_size, early_stopping_patience, class_weights, label_smoothing,
        # crop_min_patches, finetune_penultimate.
        # log_mel: keys of models.genre.hparams.GenreHParams (validated by it when the
        # trainer starts; docs/genre.md lists them); empty means its defaults:
        # architecture lstm|crnn, lstm_units, lstm_layers, bidirectional,
        # crnn_recurrent gru|lstm, conv_filters, embedding_dim, dropout,
        # learning_rate, lr_schedule constant|cosine|plateau, clipnorm,
        # epochs, batch_size, early_stopping_patience, class_weights,
        # time_mask_frames, freq_mask_bands (SpecAugment), std_pooling,
        # input_statistics, spectral_summary, summary_coefficients,
        # summary_band_groups, weight_decay (AdamW), ema_momentum (weight
        # averaging), mixup_alpha (mixup), label_smoothing,
        # recurrent_path_dropout, head_l2, ensemble_members (seed ensemble),
        # ensemble (per-member overrides: LSTM + CRNN in one model),
        # random_gain_db (training-input level augmentation), band_shift_max,
        # tempo_max_fraction (training-input pitch and tempo augmentation).
        "hparams": {},
        # Blessing: track accuracy must beat chance by this factor.
        "min_accuracy_over_chance": 1.5,
        # Blessing against the latest blessed genre model, on the same new
        # test data: the candidate's track accuracy may be at most this much
        # (absolute) below the baseline's.
        "baseline_tolerance": 0.02,
        # Hand the latest blessed genre model (trained on other data) to the
        # trainer to warm-start from.
        "warm_start": True,
    },
    "next_track_model": {
        # Keys of models.next_track.hparams.NextTrackHParams (defaults and meaning:
        # docs/recommender.md), e.g. history_length, rnn, tied_embeddings, softmax.
        "hparams": {},
        # Blessing: on each of baseline_metrics the candidate must reach the best simple
        # baseline's figure (popularity, listener popularity, Markov, sequential rules,
        # personal rules, SKNN, V-SKNN) on the same test cases, less baseline_tolerance_share.
        "must_beat_baselines": True,
        "baseline_metrics": ["hr@20", "mrr@20"],
        "baseline_tolerance_share": 0.0,
        # The evaluator scores a stable sample (by session-id hash) of at most this many test
        # sessions, the same for the candidate, the baselines and the serving model; 0: all.
        # On the Spotify logs 2 000 sessions are 10 000 to 35 000 cases (HR@20's standard error
        # 0.005 to 0.0025).
        "evaluation_max_sessions": 2000,
        # Blessing against the latest blessed next-track model: MRR@20 may be
        # at most this much (absolute) below the baseline's.
        "baseline_tolerance": 0.01,
        # After blessing, refit on every split (train + eval + test) for the epochs the
        # first fit chose, and push that model: it knows the newest plays and tracks.
        "final_fit": True,
        # As for genre; the model code must keep known tracks' ids and
        # embeddings when the vocabulary grows.
        "warm_start": True,
    },
    # Cold start (docs/cold_start.md): with both audio and play logs, append the tracks
    # that have audio but no plays to the next-track model, their weights predicted
    # from the genre model's audio embedding by ridge regression fitted on warm tracks.
    "cold_start": {
        "enabled": False,
        # Held-out plays CSV (session_id,timestamp,track_id,held_out,...) for the
        # cold-start metric in the next-track evaluation; null: no metric.
        "eval_plays": None,
        # Ridge penalties to choose from by leave-one-out error.
        "ridge_alphas": [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0],
        # Scale predicted track vectors to the warm tracks' mean length (ranking is by
        # dot product; ridge's conditional mean is much shorter than any trained vector).
        "warm_norm": True,
    },
    "pusher": {
        # Versions kept per model under <workdir>/serving/<model>/; older ones are deleted.
        "keep_versions": 5,
        # Write assets.extra/tf_serving_warmup_requests so the server warms the model up on load.
        "warmup": True,
    },
    # Batch inference after the pushers (docs/batch.md): the bulk_inferrer runs the model
    # this run pushed (or, when it pushed none, the one serving) over this run's own inputs.
    "bulk_inference": {
        # Any of "tag" (the audio catalogue: genres and embedding per track), "recommend"
        # (every user of the play logs: top-N next tracks), "embeddings" (the next-track
        # model's track-embedding table). [] runs none: each job is a Beam pass over the
        # whole input, tens of seconds and more. A job whose input this run lacks is left out.
        "jobs": [],
        "top_genres": 3,
        "top_n": 10,
        # Tracks never recommended to a user: "history" (all they played), "session", "none".
        "exclude": "history",
        "num_shards": 1,
    },
    # Input spans: folders named span=<id> under an input (e.g. logs/span=2026-11-24/).
    "spans": {
        # "latest" (newest span), "window" (newest `window` spans) or "all".
        "policy": "latest",
        "window": 1,
    },
    # ML Metadata store. Default: SQLite at <workdir>/runs/metadata.sqlite.
    # Shared use: mysql: {host: db.example, port: 3306, database: musicrec_mlmd,
    #                     user: musicrec, password_env: MUSICREC_MLMD_PASSWORD}
    "metadata": {
        "sqlite_path": None,
        "mysql": None,
    },
    # Each run writes <run dir>/report.html.
    "report": True,
}

# Sections whose inner keys belong to another module, which validates them.
_OPEN_SECTIONS = {("genre_model", "hparams"), ("next_track_model", "hparams"),
                  ("audio", "features")}


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


def _check_cold_start_ranks_the_catalogue(hparams: Mapping[str, Any]) -> None:
    """Cold-start tracks are in no listener's history: only the neural scores can rank them."""
    from musicrec.models.next_track.hparams import CATALOGUE_RANKING, NextTrackHParams

    try:
        neural_scores = NextTrackHParams.from_dict(hparams).neural_scores
    except (TypeError, ValueError):
        return  # the trainer reports bad hparams with their names
    if not neural_scores:
        settings = ", ".join(f"{name}: {value!r}" for name, value in CATALOGUE_RANKING.items())
        raise ConfigError(
            "cold_start.enabled: the next-track model must rank the whole catalogue to recommend tracks "
            "nobody has played, and the default scorer ranks only each listener's own tracks and their "
            f"followers; set next_track_model.hparams {{{settings}}} or turn cold_start off")


def make_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Returns the defaults with ``overrides`` merged in and validated."""
    config = _merge(DEFAULTS, dict(overrides or {}), ())
    try:
        check_frontend(config["genre_model"]["frontend"])
    except ValueError as exc:
        raise ConfigError(f"genre_model.frontend: {exc}") from exc
    try:
        feature_params(config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"audio.features: {exc}") from exc
    from musicrec.pipeline.spans import POLICIES

    if config["spans"]["policy"] not in POLICIES:
        raise ConfigError(f"spans.policy: expected one of {', '.join(POLICIES)}, "
                          f"got {config['spans']['policy']!r}")
    if config["spans"]["window"] < 1:
        raise ConfigError("spans.window: must be at least 1")
    for model in ("genre_model", "next_track_model"):
        if config[model]["baseline_tolerance"] < 0:
            raise ConfigError(f"{model}.baseline_tolerance: must not be negative")
    next_track = config["next_track_model"]
    if not isinstance(next_track["evaluation_max_sessions"], int) or next_track["evaluation_max_sessions"] < 0:
        raise ConfigError("next_track_model.evaluation_max_sessions: must be an integer >= 0 (0: all)")
    if not 0 <= next_track["baseline_tolerance_share"] < 1:
        raise ConfigError("next_track_model.baseline_tolerance_share: must be in [0, 1)")
    from musicrec.models.ranking_metrics import RANKED_METRICS

    unknown_metrics = set(next_track["baseline_metrics"]) - set(RANKED_METRICS)
    if unknown_metrics or not next_track["baseline_metrics"]:
        raise ConfigError(f"next_track_model.baseline_metrics: expected names among "
                          f"{list(RANKED_METRICS)}, got {next_track['baseline_metrics']!r}")
    if config["cold_start"]["enabled"]:
        _check_cold_start_ranks_the_catalogue(next_track["hparams"])
    bulk = config["bulk_inference"]
    from musicrec.components.bulk_inference_settings import EXCLUDE_MODES
    from musicrec.components.bulk_inferrer import JOBS

    if set(bulk["jobs"]) - set(JOBS) or len(set(bulk["jobs"])) != len(bulk["jobs"]):
        raise ConfigError(f"bulk_inference.jobs: expected distinct names among {list(JOBS)}, "
                          f"got {bulk['jobs']!r}")
    if bulk["exclude"] not in EXCLUDE_MODES:
        raise ConfigError(f"bulk_inference.exclude: expected one of {list(EXCLUDE_MODES)}, "
                          f"got {bulk['exclude']!r}")
    if bulk["top_genres"] < 1 or bulk["top_n"] < 1 or bulk["num_shards"] < 0:
        raise ConfigError("bulk_inference: top_genres and top_n must be >= 1, num_shards >= 0")
    mysql = config["metadata"]["mysql"]
    if mysql is not None:
        allowed = {"host", "port", "database", "user", "password_env"}
        if not isinstance(mysql, Mapping) or set(mysql) - allowed or not mysql.get("host") \
                or not mysql.get("database"):
            raise ConfigError("metadata.mysql: expected a mapping with host and database and "
                              f"optionally port, user, password_env (known keys: {sorted(allowed)})")
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
    """The audio features of the config's genre front end (``audio.features`` over its defaults)."""
    return frontend_feature_params(config["genre_model"]["frontend"], config["audio"]["features"])


def dump_config(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)
