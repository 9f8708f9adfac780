"""Play-log ingestion for real logs: Spotify extended history, JSONL, filters in order, splits,
session counts checked against an independent computation, and the real samples."""
from __future__ import annotations

import collections
import glob
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402
import tensorflow as tf  # noqa: E402
from apache_beam.testing.test_pipeline import TestPipeline  # noqa: E402
from apache_beam.testing.util import assert_that, equal_to  # noqa: E402

from musicrec.components import playlog_example_gen as gen  # noqa: E402
from musicrec.components import playlog_readers as readers  # noqa: E402
from musicrec.components import playlog_params, playlog_rows, playlog_sessions  # noqa: E402
from musicrec.components.base import Artifact  # noqa: E402
from musicrec.components.beam_io import LOCAL_RUNNER, SPLITS, read_dead_letters, split_files_pattern  # noqa: E402

BASE = 1_600_000_000
GAP = 1800


def _play(user: str, timestamp: int, key: str, ms_played: int | None = 60_000, line: int = 1) -> playlog_rows.Play:
    return playlog_rows.Play(user, timestamp, key, "", ms_played, "mem", line)


def _read_sessions(uri: str, split: str) -> list[dict]:
    context_spec = {"user_id": tf.io.FixedLenFeature([], tf.string),
                    "start_time": tf.io.FixedLenFeature([], tf.int64)}
    sequence_spec = {"track_key": tf.io.FixedLenSequenceFeature([], tf.string),
                     "timestamp": tf.io.FixedLenSequenceFeature([], tf.int64),
                     "skipped": tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)}
    sessions = []
    for record in tf.data.TFRecordDataset(sorted(glob.glob(split_files_pattern(uri, split))),
                                          compression_type="GZIP"):
        context, sequence = tf.io.parse_single_sequence_example(record, context_spec, sequence_spec)
        sessions.append({"user_id": context["user_id"].numpy().decode(),
                         "start_time": int(context["start_time"]),
                         "track_key": [k.decode() for k in sequence["track_key"].numpy()],
                         "timestamp": [int(t) for t in sequence["timestamp"].numpy()],
                         "skipped": [int(f) for f in sequence["skipped"].numpy()]})
    return sessions


def _run(paths, out, **params) -> tuple[dict, dict[str, list[dict]]]:
    artifact = Artifact("Sessions", str(out))
    gen.run({}, {"sessions": artifact}, {"playlog_paths": [str(p) for p in paths], **params})
    manifest = json.loads((out / gen.MANIFEST_FILENAME).read_text(encoding="utf-8"))
    return manifest, {split: _read_sessions(str(out), split) for split in SPLITS}


def _assert_reconciles(manifest: dict) -> None:
    dropped = sum(manifest[name] for name in gen.DROPPED_PLAY_COUNTS)
    assert manifest["rows_in"] == manifest["plays"] + manifest["dead_letters"]
    assert manifest["plays"] == manifest["plays_written"] + dropped
    assert sum(manifest["dead_letters_per_reason"].values()) == manifest["dead_letters"]


# --------------------------------------------------------------------------- readers


def test_spotify_extended_reader(tmp_path):
    folder = tmp_path / "me"
    folder.mkdir()
    rows = [
        {"ts": "2022-01-01T10:00:00Z", "username": "alice", "ms_played": 200_000,
         "master_metadata_track_name": "Song", "master_metadata_album_artist_name": "Band",
         "spotify_track_uri": "spotify:track:AbC", "skipped": None},
        {"ts": "2022-01-01T10:05:00Z", "username": None, "ms_played": 5_000,
         "master_metadata_track_name": "Other  Song", "master_metadata_album_artist_name": "Band",
         "spotify_track_uri": None},
        {"ts": "2022-01-01T10:06:00Z", "username": "alice", "ms_played": 90_000,
         "master_metadata_track_name": None, "master_metadata_album_artist_name": None,
         "spotify_track_uri": None, "episode_name": "A podcast", "spotify_episode_uri": "spotify:episode:x"},
        {"ts": "yesterday", "username": "alice", "ms_played": 1, "spotify_track_uri": "spotify:track:x"},
        {"ts": "2022-01-01T10:07:00Z", "username": "alice", "ms_played": -3, "spotify_track_uri": "spotify:track:x"},
    ]
    path = folder / "endsong_0.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert readers.detect_format(str(path)) == "spotify_extended_json"
    assert readers.detect_format("x/Streaming_History_Audio_2021-2023_3.json") == "spotify_extended_json"

    records = list(readers.read_playlog(str(path), "spotify_extended_json"))

    plays = [r for r in records if isinstance(r, playlog_rows.Play)]
    assert [(p.user_id, p.track_key, p.ms_played, p.line) for p in plays] == [
        ("alice", "spotify:track:AbC", 200_000, 1), ("me", "band - other song", 5_000, 2)]
    assert plays[0].timestamp == 1641031200
    dead = [(r.line, r.reason.split(" '")[0].split(":")[0]) for r in records if isinstance(r, playlog_rows.DeadLetter)]
    assert dead == [(3, "not a music track (podcast episode or audiobook)"), (4, "bad timestamp"),
                    (5, "bad ms_played -3")]


def test_jsonl_reader_with_line_numbers(tmp_path):
    path = tmp_path / "plays.jsonl"
    path.write_bytes(b'{"user_id": "u", "timestamp": 1600000000, "track_id": "t1", "ms_played": 5}\n'
                     b'\n'
                     b'{"user_id": "u", "timestamp": "2020-09-13T12:26:40Z", "track_id": "T 2"}\n'
                     b'not json\n'
                     b'{"user_id": "u", "track_id": "t3"}\n'
                     b'{"user_id": "u", "timestamp": 1, "track_id": "\xff"}\n')
    records = list(readers.read_playlog(str(path), "auto"))
    assert [(r.line, r.track_key, r.timestamp) for r in records if isinstance(r, playlog_rows.Play)] == [
        (1, "t1", BASE), (3, "T 2", BASE)]
    assert [(r.line, r.reason.split(":")[0]) for r in records if isinstance(r, playlog_rows.DeadLetter)] == [
        (4, "bad JSON"), (5, "empty timestamp"), (6, "undecodable bytes")]


# --------------------------------------------------------------------------- filters, in order


def test_collapse_and_skip_flags():
    plays = [_play("u", BASE + i, key, ms) for i, (key, ms) in
             enumerate([("a", 1000), ("a", 40_000), ("b", None), ("a", 40_000), ("a", 40_000)])]
    assert [p.track_key for p in playlog_sessions.collapse_repeats(plays)] == ["a", "b", "a"]
    assert [playlog_sessions.skip_flag(p, 30_000) for p in plays] == [1, 0, -1, 0, 0]


def test_items_are_filtered_before_sessions():
    # "rare" has one play; without it the user's first session is a single play and is dropped.
    plays = [_play("u", BASE, "hit"), _play("u", BASE + 60, "rare"),
             _play("u", BASE + 7200, "hit"), _play("u", BASE + 7260, "hit")]
    params = playlog_params.PlaylogParams(min_item_support=2, min_session_length=2)
    with TestPipeline(runner=LOCAL_RUNNER) as pipeline:
        supported = pipeline | beam.Create(plays) | gen.DropRareItems(params.min_item_support)
        sessions = supported.plays | playlog_sessions.Sessionize(params)
        assert_that(supported["rare"], equal_to([1]), label="Rare")
        assert_that(sessions.sessions | beam.Map(lambda s: s.track_keys), equal_to([("hit", "hit")]),
                    label="Kept")
        assert_that(sessions["filtered"], equal_to([1]), label="Filtered")


def test_filters_splits_and_flags_end_to_end(tmp_path):
    rows = ["user_id,timestamp,track_id,ms_played"]
    # Two users, ten daily sessions each; u2 starts 5 days later (global vs per-user split differ).
    for user, offset in (("u1", 0), ("u2", 5)):
        for day in range(10):
            start = BASE + (day + offset) * 86400
            for position, (key, ms) in enumerate([("hit", 60_000), ("hit", 60_000), ("skip", 3_000),
                                                  (f"solo{user}{day}", 60_000), ("common", 60_000)]):
                rows.append(f"{user},{start + 60 * position},{key},{ms}")
    rows.append("u1,not-a-time,x,1")
    (tmp_path / "plays.csv").write_text("\n".join(rows) + "\n")

    manifest, sessions = _run([tmp_path / "plays.csv"], tmp_path / "out", skip_filter=True,
                              collapse_repeats=True, min_item_support=2, split_mode="global",
                              write_skip_flags=True, eval_fraction=0.2, test_fraction=0.2)

    _assert_reconciles(manifest)
    assert manifest["rows_in"] == 101 and manifest["dead_letters"] == 1
    assert manifest["plays_skipped"] == 20           # every "skip" (3 s < 30 s)
    assert manifest["plays_rare_items"] == manifest["rare_items"] == 20   # the solo tracks
    assert manifest["plays_collapsed"] == 20         # the second "hit" of each session
    assert manifest["plays_filtered"] == 0
    written = [s for split in SPLITS for s in sessions[split]]
    assert len(written) == 20 and all(s["track_key"] == ["hit", "common"] for s in written)
    assert all(s["skipped"] == [0, 0] for s in written)
    # Global cut over the 15-day span: the last 20 % (3 days) is test for everybody.
    last = BASE + 14 * 86400 + 240
    cut_test, cut_eval = last - 0.2 * (last - BASE), last - 0.4 * (last - BASE)
    for split in SPLITS:
        for session in sessions[split]:
            start = session["start_time"]
            assert split == ("test" if start > cut_test else "eval" if start > cut_eval else "train")
    assert {s["user_id"] for s in sessions["train"]} == {"u1", "u2"}
    assert {s["user_id"] for s in sessions["test"]} == {"u2"}   # u1's plays end before the cut


def test_long_runs_log_progress_with_counts(tmp_path, caplog):
    rows = ["user_id,timestamp,track_id"] + [f"u,{BASE + i * 60},t{i % 3}" for i in range(30)]
    (tmp_path / "plays.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level("INFO", logger="musicrec.ingestion"):
        _run([tmp_path / "plays.csv"], tmp_path / "out", progress_seconds=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "musicrec.ingestion"]
    assert lines and lines[-1].startswith("playlog_example_gen read: rows=30 after"), lines


def test_params_reject_bad_new_settings():
    with pytest.raises(ValueError, match="split_mode"):
        playlog_params.PlaylogParams(split_mode="random")
    with pytest.raises(ValueError, match="min_item_support"):
        playlog_params.PlaylogParams(min_item_support=0)


# --------------------------------------------------------------------------- session counts, independently


def _generated_log(tmp_path, seed: int = 11) -> tuple[str, list[tuple[str, int]]]:
    """A shuffled CSV of 40 users' plays whose gaps straddle 30 minutes; returns it and its (user, time) rows."""
    rng = np.random.default_rng(seed)
    rows, truth = ["timestamp,user_id,track_id"], []
    for user in range(40):
        gaps = rng.choice([1, 60, 600, GAP - 1, GAP, GAP + 1, 4000, 90_000], size=int(rng.integers(1, 120)))
        times = BASE + np.cumsum(gaps) - gaps[0]
        for t in times:
            truth.append((f"user{user}", int(t)))
    order = rng.permutation(len(truth))
    rows += [f"{truth[i][1]},{truth[i][0]},track{rng.integers(50)}" for i in order]
    path = tmp_path / "generated.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path), truth


def test_session_counts_match_an_independent_numpy_computation(tmp_path):
    path, truth = _generated_log(tmp_path)
    manifest, sessions = _run([path], tmp_path / "out", min_session_length=1)

    by_user = collections.defaultdict(list)
    for user, t in truth:
        by_user[user].append(t)
    expected = {user: int(1 + np.sum(np.diff(np.sort(times)) > GAP)) for user, times in by_user.items()}
    got = collections.Counter(s["user_id"] for split in SPLITS for s in sessions[split])
    assert dict(got) == expected
    assert manifest["sessions"] == sum(expected.values())
    _assert_reconciles(manifest)


def test_session_counts_match_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    path, _ = _generated_log(tmp_path, seed=12)
    manifest, sessions = _run([path], tmp_path / "out", min_session_length=1)

    frame = pd.read_csv(path).sort_values(["user_id", "timestamp"])
    new_session = frame.groupby("user_id")["timestamp"].diff().fillna(GAP + 1) > GAP
    expected = new_session.groupby(frame["user_id"]).sum().astype(int).to_dict()
    got = collections.Counter(s["user_id"] for split in SPLITS for s in sessions[split])
    assert dict(got) == expected
    lengths = frame.assign(session=new_session.cumsum()).groupby("session").size()
    assert sorted(len(s["track_key"]) for split in SPLITS for s in sessions[split]) == sorted(lengths.tolist())


# --------------------------------------------------------------------------- the real samples


def test_all_of_spotify_history_and_the_lastfm_sample_ingest(shared_data, tmp_path):
    paths = [os.path.join(shared_data, "spotify_history"), os.path.join(shared_data, "lastfm1k_sample")]
    manifest, sessions = _run(paths, tmp_path / "out")

    _assert_reconciles(manifest)
    rows = 0
    for path in glob.glob(os.path.join(shared_data, "spotify_history", "*", "StreamingHistory*.json")):
        with open(path, encoding="utf-8") as handle:
            rows += len(json.load(handle))
    with open(glob.glob(os.path.join(shared_data, "lastfm1k_sample", "*.tsv"))[0], encoding="utf-8") as handle:
        rows += sum(1 for line in handle if line.strip())
    assert manifest["rows_in"] == rows
    assert manifest["users"] >= 7
    dead = list(read_dead_letters(str(tmp_path / "out" / gen.DEAD_LETTERS_FILENAME)))
    assert len(dead) == manifest["dead_letters"]
    assert all(d["line"] >= 1 and d["reason"] for d in dead)
    assert sum(len(sessions[split]) for split in SPLITS) == manifest["sessions"] > 1000
