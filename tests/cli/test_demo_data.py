"""Tests of the synthetic demo data generator (``musicrec.demo_data``)."""
from __future__ import annotations

import collections
import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re

import numpy as np
import pytest
import soundfile

from musicrec import demo_data, demo_data_audio, demo_data_config, demo_data_listening
from musicrec.models import audio_files, features

SESSION_BREAK_S = 30 * 60


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _file_hashes(root: str) -> dict[str, str]:
    hashes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def _unix(timestamp: str) -> int:
    return int(dt.datetime.strptime(timestamp, demo_data.TIMESTAMP_FORMAT)
               .replace(tzinfo=dt.timezone.utc).timestamp())


def _plays_by_user(plays: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    by_user = collections.defaultdict(list)
    for play in plays:
        by_user[play["user_id"]].append(play)
    return by_user


def _sessions(user_plays: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Splits one user's time-ordered plays on inactivity gaps above 30 minutes."""
    sessions = [[user_plays[0]]]
    for previous, play in zip(user_plays, user_plays[1:]):
        if _unix(play["timestamp"]) - _unix(previous["timestamp"]) > SESSION_BREAK_S:
            sessions.append([])
        sessions[-1].append(play)
    return sessions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = demo_data.tiny_config(seed=0)
    out_dir = str(tmp_path_factory.mktemp("tiny"))
    messages: list[str] = []
    summary = demo_data.generate(out_dir, config, progress=messages.append)
    _, metadata = _read_csv(summary.metadata_csv)
    _, plays = _read_csv(summary.playlog_paths[0])
    return config, summary, metadata, plays, messages


def test_same_config_gives_identical_files_and_another_seed_differs(tiny, tmp_path):
    config, summary, _, _, _ = tiny
    first = _file_hashes(summary.out_dir)
    demo_data.generate(str(tmp_path / "again"), config)
    assert _file_hashes(str(tmp_path / "again")) == first

    demo_data.generate(str(tmp_path / "other"), dataclasses.replace(config, seed=1))
    other = _file_hashes(str(tmp_path / "other"))
    assert set(other) == set(first)
    for name in ("metadata.csv", os.path.join("playlogs", "plays.csv")):
        assert other[name] != first[name]
    audio = [name for name in first if name.endswith(".wav")]
    assert all(other[name] != first[name] for name in audio)


def test_layout_headers_and_summary(tiny):
    config, summary, metadata, plays, messages = tiny
    header, _ = _read_csv(summary.metadata_csv)
    assert header == list(demo_data.METADATA_HEADER) == ["path", "genre", "artist", "track_id"]
    header, _ = _read_csv(summary.playlog_paths[0])
    assert header == ["user_id", "timestamp", "track_id", "artist", "ms_played"]
    assert summary.playlog_paths == [os.path.join(summary.out_dir, "playlogs", "plays.csv")]

    assert summary.genres == demo_data_audio.genre_names(config.n_genres)
    assert sorted(os.listdir(summary.audio_dir)) == sorted(summary.genres)
    assert summary.n_tracks == len(metadata) == config.n_genres * config.tracks_per_genre
    assert summary.n_plays == len(plays)
    assert summary.n_users == len({p["user_id"] for p in plays}) == config.n_users
    assert messages and messages[-1].startswith("done")

    # No temporary files are left behind by the atomic writes.
    leftovers = [name for _, _, files in os.walk(summary.out_dir) for name in files
                 if name.startswith(".tmp-")]
    assert leftovers == []


def test_metadata_paths_exist_and_follow_folder_per_genre(tiny):
    config, summary, metadata, _, _ = tiny
    assert len({row["track_id"] for row in metadata}) == len(metadata)
    for row in metadata:
        assert row["path"] == f"audio/{row['genre']}/{row['track_id']}.wav"
        assert re.fullmatch(r"trk-\d{5}", row["track_id"])
        assert row["artist"]
        info = soundfile.info(os.path.join(summary.out_dir, row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (config.sample_rate, 1, "PCM_16")
        assert info.frames == round(config.track_seconds * config.sample_rate)
    on_disk = {os.path.relpath(os.path.join(folder, name), summary.out_dir).replace(os.sep, "/")
               for folder, _, files in os.walk(summary.audio_dir) for name in files}
    assert on_disk == {row["path"] for row in metadata}
    # Artists never span genres, so an artist-hash split keeps genres intact per artist.
    genres_of_artist = collections.defaultdict(set)
    for row in metadata:
        genres_of_artist[row["artist"]].add(row["genre"])
    assert all(len(genres) == 1 for genres in genres_of_artist.values())
    assert len(genres_of_artist) == config.n_genres * config.artists_per_genre


def test_audio_has_two_feature_segments_and_does_not_clip(tiny):
    _, summary, metadata, _, _ = tiny
    params = features.AudioFeatureParams()
    for row in metadata[:: len(metadata) // 4]:
        path = os.path.join(summary.out_dir, row["path"])
        waveform, _ = soundfile.read(path, dtype="float32")
        assert 0.3 < np.max(np.abs(waveform)) < 0.95
        segments = audio_files.track_segments(path, params)
        assert segments.shape == (2, params.frames_per_segment, params.n_mels)


def test_every_play_refers_to_a_catalogue_track_with_its_artist(tiny):
    _, _, metadata, plays, _ = tiny
    artist_of = {row["track_id"]: row["artist"] for row in metadata}
    assert all(play["artist"] == artist_of[play["track_id"]] for play in plays)


def test_plays_are_sorted_well_formed_and_mostly_full(tiny):
    config, _, _, plays, _ = tiny
    keys = [(p["user_id"], _unix(p["timestamp"])) for p in plays]
    assert keys == sorted(keys)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p["timestamp"]) for p in plays)
    start = _unix(f"{config.start_date}T00:00:00Z")
    times = [time for _, time in keys]
    assert start <= min(times) and max(times) < start + (config.span_days + 7) * 86400
    played = np.array([int(p["ms_played"]) for p in plays])
    assert played.min() >= 1000 * config.skip_seconds_range[0]
    assert played.max() <= 1000 * config.song_seconds_range[1]
    full_share = np.mean(played >= 1000 * config.song_seconds_range[0])
    assert 0.8 < full_share < 1.0  # mostly full plays, and some skips


def _full_log(summary, plays):
    """The play log before the cold tracks' plays were held out, sorted by user and time."""
    _, holdout = _read_csv(summary.cold_plays_csv)
    held_out = [{k: row[k] for k in demo_data.PLAYLOG_HEADER} for row in holdout if row["held_out"] == "1"]
    return sorted(plays + held_out, key=lambda p: (p["user_id"], _unix(p["timestamp"])))


def test_sessions_are_separated_by_long_gaps_only(tiny):
    config, summary, _, plays, _ = tiny
    within_limit_s = config.song_seconds_range[1] + 10
    between_limit_s = config.min_session_gap_minutes * 60
    n_sessions = 0
    for user_plays in _plays_by_user(_full_log(summary, plays)).values():
        times = np.array([_unix(p["timestamp"]) for p in user_plays])
        gaps = np.diff(times)
        # No gap falls in between a song's length and the session break: sessions are unambiguous.
        assert np.all((gaps <= within_limit_s) | (gaps >= between_limit_s))
        n_sessions += len(_sessions(user_plays))
    assert n_sessions == summary.n_sessions
    assert summary.n_plays / summary.n_sessions > 3


def test_users_favour_one_or_two_genres(tiny):
    config, _, metadata, plays, _ = tiny
    genre_of = {row["track_id"]: row["genre"] for row in metadata}
    top_shares = []
    for user_plays in _plays_by_user(plays).values():
        counts = collections.Counter(genre_of[p["track_id"]] for p in user_plays)
        top_shares.append(max(counts.values()) / len(user_plays))
    assert np.mean(top_shares) > 2.0 / config.n_genres


def test_session_order_is_learnable_by_a_first_order_model(tiny):
    _, _, _, plays, _ = tiny
    transitions = collections.defaultdict(collections.Counter)
    popularity = collections.Counter()
    held_out = []
    for user_plays in _plays_by_user(plays).values():
        cut = int(0.8 * len(user_plays))
        for session in _sessions(user_plays[:cut]):
            popularity.update(p["track_id"] for p in session)
            for current, following in zip(session, session[1:]):
                transitions[current["track_id"]][following["track_id"]] += 1
        for session in _sessions(user_plays[cut:]):
            held_out.extend((a["track_id"], b["track_id"]) for a, b in zip(session, session[1:]))
    most_popular = popularity.most_common(1)[0][0]

    def markov_guess(track_id: str) -> str:
        options = transitions.get(track_id)
        return options.most_common(1)[0][0] if options else most_popular

    markov_hits = np.mean([markov_guess(a) == b for a, b in held_out])
    popularity_hits = np.mean([most_popular == b for _, b in held_out])
    assert len(held_out) > 100
    assert markov_hits > 0.5
    assert markov_hits > 4 * popularity_hits


def test_genres_differ_in_log_mel_features(tmp_path):
    # All recipes, three tracks each: a nearest-centroid classifier on per-band
    # log-mel mean and spread must recognise held-out tracks far above chance.
    n_genres = len(demo_data_audio.GENRE_RECIPES)
    config = demo_data_config.DemoDataConfig(n_genres=n_genres, tracks_per_genre=3, artists_per_genre=1,
                                      playlists_per_genre=1, n_users=2, seed=7)
    summary = demo_data.generate(str(tmp_path), config)
    _, metadata = _read_csv(summary.metadata_csv)
    params = features.AudioFeatureParams()
    vectors, labels = [], []
    for row in metadata:
        mel = features.log_mel(audio_files.load_audio(os.path.join(summary.out_dir, row["path"]),
                                                   params), params)
        vectors.append(np.concatenate([mel.mean(axis=0), mel.std(axis=0)]))
        labels.append(row["genre"])
    vectors = np.array(vectors)
    vectors = (vectors - vectors.mean(axis=0)) / (vectors.std(axis=0) + 1e-9)
    labels = np.array(labels)
    hits = 0
    for i in range(len(labels)):
        others = np.arange(len(labels)) != i
        centroids = {g: vectors[others & (labels == g)].mean(axis=0) for g in set(labels)}
        guess = min(centroids, key=lambda g: np.linalg.norm(vectors[i] - centroids[g]))
        hits += guess == labels[i]
    accuracy = hits / len(labels)
    assert accuracy >= 0.75, f"leave-one-out accuracy {accuracy:.2f}, chance {1 / n_genres:.2f}"


def test_generation_json_round_trips_config_and_counts(tiny):
    config, summary, _, _, _ = tiny
    with open(os.path.join(summary.out_dir, "generation.json"), encoding="utf-8") as handle:
        generation = json.load(handle)
    assert demo_data_config.DemoDataConfig(**generation["config"]) == config
    assert generation["counts"]["plays"] == summary.n_plays
    assert generation["counts"]["sessions"] == summary.n_sessions
    assert generation["counts"]["tracks"] == summary.n_tracks
    assert generation["genres"] == summary.genres
    assert generation["counts"]["held_out_plays"] == summary.n_held_out_plays
    assert generation["cold_tracks"] == summary.cold_tracks
    assert os.path.join(summary.out_dir, generation["files"]["holdout"]["cold_plays"]) \
        == summary.cold_plays_csv


def test_cold_tracks_have_audio_and_metadata_but_no_plays(tiny):
    config, summary, metadata, plays, _ = tiny
    assert len(summary.cold_tracks) == round(config.cold_track_fraction * summary.n_tracks) >= 1
    assert set(summary.cold_tracks) <= {row["track_id"] for row in metadata}
    assert set(summary.cold_tracks).isdisjoint(p["track_id"] for p in plays)
    header, holdout = _read_csv(summary.cold_plays_csv)
    assert header == list(demo_data.HOLDOUT_HEADER)
    held_out = [row for row in holdout if row["held_out"] == "1"]
    assert len(held_out) == summary.n_held_out_plays > 0
    assert {row["track_id"] for row in held_out} <= set(summary.cold_tracks)
    # Counts reconcile: every generated play is in the play log or held out, never both.
    all_plays, n_sessions = demo_data_listening.generate_plays(config, demo_data_listening.build_catalogue(config))
    assert len(all_plays) == summary.n_plays + summary.n_held_out_plays
    assert n_sessions == summary.n_sessions
    # Context plays are the ones that stayed in the play log, and each held-out session has a cold play.
    in_log = {(p["user_id"], p["timestamp"], p["track_id"]) for p in plays}
    context = [row for row in holdout if row["held_out"] == "0"]
    assert all((r["user_id"], r["timestamp"], r["track_id"]) in in_log for r in context)
    by_session = collections.defaultdict(list)
    for row in holdout:
        by_session[row["session_id"]].append(row["held_out"])
    assert all("1" in flags for flags in by_session.values())
    # Every held-out play of a cold track is in the file, each with its whole session.
    full = _full_log(summary, plays)
    assert sum(p["track_id"] in summary.cold_tracks for p in full) == len(held_out)


def test_cold_tracks_are_a_uniform_draw_independent_of_listening(tiny):
    config, summary, _, _, _ = tiny
    # The draw has its own random stream: other listening behaviour, same cold tracks.
    other = dataclasses.replace(config, follow_probability=0.2, n_users=3)
    n_tracks = config.n_genres * config.tracks_per_genre
    assert list(demo_data_listening.choose_cold_tracks(other, n_tracks)) == \
        list(demo_data_listening.choose_cold_tracks(config, n_tracks))
    # Over many seeds every track is drawn about equally often (no genre or position is favoured).
    big = demo_data_config.DemoDataConfig()
    counts = np.zeros(240)
    for seed in range(400):
        counts[demo_data_listening.choose_cold_tracks(dataclasses.replace(big, seed=seed), 240)] += 1
    expected = 400 * 24 / 240
    assert abs(counts.mean() - expected) < 1e-9
    per_genre = counts.reshape(6, 40).sum(axis=1)
    assert np.all(np.abs(per_genre - per_genre.mean()) < 0.15 * per_genre.mean())
    assert demo_data_listening.choose_cold_tracks(dataclasses.replace(big, cold_track_fraction=0.0), 240).size == 0


def test_default_config_gives_tens_of_thousands_of_plays():
    config = demo_data_config.DemoDataConfig()
    plays, n_sessions = demo_data_listening.generate_plays(config, demo_data_listening.build_catalogue(config))
    assert 20_000 <= len(plays) <= 40_000
    assert len({p.user_id for p in plays}) == config.n_users
    assert n_sessions > config.n_users


@pytest.mark.parametrize("change", [
    {"n_genres": 3}, {"n_genres": len(demo_data_audio.GENRE_RECIPES) + 1}, {"tracks_per_genre": 0},
    {"follow_probability": 1.5}, {"min_session_gap_minutes": 20}, {"start_date": "Jan 1"},
    {"artists_per_genre": 50}, {"cold_track_fraction": 1.0}, {"cold_track_fraction": -0.1},
])
def test_invalid_config_is_rejected_with_a_reason(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        demo_data_config.DemoDataConfig(**change)


def test_refuses_foreign_folder_and_prunes_stale_audio_on_regeneration(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        demo_data.generate(str(foreign), demo_data.tiny_config())
    assert (foreign / "notes.txt").read_text() == "mine"

    out_dir = tmp_path / "demo"
    bigger = dataclasses.replace(demo_data.tiny_config(), tracks_per_genre=3, n_users=2,
                                 track_seconds=1.0)
    demo_data.generate(str(out_dir), bigger)
    smaller = dataclasses.replace(bigger, tracks_per_genre=2)
    summary = demo_data.generate(str(out_dir), smaller)
    wavs = [name for _, _, files in os.walk(summary.audio_dir) for name in files]
    assert len(wavs) == summary.n_tracks == 4 * 2
