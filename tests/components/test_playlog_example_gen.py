"""Tests of the play-log readers, sessionization, split, vocabulary and the Beam job."""
from __future__ import annotations

import collections
import datetime
import glob
import gzip
import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from musicrec.components import playlog_example_gen as gen
from musicrec.components import playlog_formats, playlog_params, playlog_rows, playlog_sessions
from musicrec.components import playlog_readers as readers
from musicrec.components.base import Artifact
from musicrec.components.beam_io import LOCAL_RUNNER, SPLITS, read_dead_letters, split_files_pattern

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
BASE = 1_600_000_000  # 2020-09-13T12:26:40Z
HOUR = 3600
DAY = 24 * HOUR


def iso(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lines(text: str) -> list[bytes]:
    return text.encode("utf-8").splitlines(keepends=True)


def play(user: str, timestamp: int, key: str, line: int = 1) -> playlog_rows.Play:
    return playlog_rows.Play(user, timestamp, key, "", None, "mem", line)


def dead_letter_positions(records) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for r in records if isinstance(r, playlog_rows.DeadLetter)]


# --- readers ---------------------------------------------------------------

def test_normalize_track_key_lowercases_and_collapses_whitespace():
    assert playlog_rows.normalize_track_key("  The\tBeatles   - Let  It\nBe ") == "the beatles - let it be"
    assert playlog_rows.artist_track_key(" Björk ", "Jóga") == "björk - jóga"


@pytest.mark.parametrize("text, expected", [
    ("2020-09-13T12:26:40Z", BASE),
    ("2020-09-13T14:26:40+02:00", BASE),
    ("2020-09-13T12:26:40", BASE),            # naive means UTC
    ("2020-09-13 12:26", BASE - 40),           # Spotify's endTime
    ("1600000000", BASE),
    ("1600000000.9", BASE),                    # floored
])
def test_parse_timestamp_accepts_iso_and_unix_seconds(text, expected):
    assert playlog_rows.parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2020-13-01T00:00:00Z", "1e400", "99999999999999"])
def test_parse_timestamp_rejects_garbage(text):
    with pytest.raises(playlog_rows.RowError):
        playlog_rows.parse_timestamp(text)


def test_csv_reader_yields_plays_and_dead_letters_with_line_numbers():
    text = ("user_id,timestamp,track_id,artist,ms_played\n"      # 1
            f"u1,{iso(BASE)},  Track  A ,Artist X,1000\n"         # 2 ok
            "u1,not-a-time,t2,,\n"                                # 3 bad timestamp
            "\n"                                                  # 4 blank: not a row
            f"u2,{BASE + 60},t3\n"                                # 5 too few fields
            f"u2,{BASE + 60},,Artist,5\n"                         # 6 empty track_id
            f"u2,{BASE + 120},t4,Artist,-3\n"                     # 7 negative ms_played
            f"u3,{BASE + 180},t5,,\n")                            # 8 ok, Unix seconds
    raw = lines(text)
    raw.insert(8, b"u4,1600000000,caf\xe9,,\n")                   # 9 latin-1 byte, not UTF-8
    records = list(playlog_formats.parse_csv_lines(raw, "plays.csv"))
    plays = [r for r in records if isinstance(r, playlog_rows.Play)]
    assert [(p.user_id, p.timestamp, p.track_key, p.artist, p.ms_played, p.line) for p in plays] == [
        # Explicit ids keep their case (Spotify's base62 ids are case-sensitive).
        ("u1", BASE, "Track A", "Artist X", 1000, 2), ("u3", BASE + 180, "t5", "", None, 8)]
    positions = dead_letter_positions(records)
    assert [line for line, _ in positions] == [3, 5, 6, 7, 9]
    reasons = dict(positions)
    assert "timestamp" in reasons[3] and "not-a-time" in reasons[3]
    assert "expected 5 fields, got 3" == reasons[5]
    assert "empty track_id" == reasons[6]
    assert "ms_played" in reasons[7]
    assert "undecodable" in reasons[9]
    assert all(r.source == "plays.csv" for r in records)


def test_csv_reader_accepts_any_column_order_and_a_byte_order_mark():
    raw = lines("\ufefftrack_id,user_id,timestamp\nt1,u1,1600000000\n")
    (record,) = playlog_formats.parse_csv_lines(raw, "x.csv")
    assert (record.user_id, record.track_key, record.timestamp) == ("u1", "t1", BASE)


def test_csv_reader_rejects_every_row_of_a_file_with_a_bad_header():
    raw = lines("u1,1600000000,t1\nu1,1600000060,t2\n")  # no header at all
    records = list(playlog_formats.parse_csv_lines(raw, "x.csv"))
    assert [r.line for r in records] == [1, 2]
    assert all(isinstance(r, playlog_rows.DeadLetter) for r in records)
    assert "header" in records[0].reason and "line 1" in records[1].reason


def test_lastfm_reader_keys_by_mbid_else_by_names():
    rows = [
        f"user_000001\t{iso(BASE + 600)}\tart-mbid\tUnderworld\ttrack-mbid\tBorn Slippy",
        f"user_000001\t{iso(BASE + 300)}\t\tMinus  8\t\tElysian Fields",
        f"user_000001\t{iso(BASE)}\t\tOnly Artist\t\t",                      # no way to key it
        "user_000001\t2009-02-30T10:00:00Z\t\tA\t\tB",                      # impossible date
        "user_000002\tonly\tthree",                                         # wrong field count
    ]
    records = list(playlog_formats.parse_lastfm_lines(lines("\n".join(rows) + "\n"), "l.tsv"))
    plays = [r for r in records if isinstance(r, playlog_rows.Play)]
    assert [(p.track_key, p.timestamp, p.line) for p in plays] == [
        ("track-mbid", BASE + 600, 1), ("minus 8 - elysian fields", BASE + 300, 2)]
    assert [line for line, _ in dead_letter_positions(records)] == [3, 4, 5]
    assert "expected 6 tab-separated fields, got 3" == dead_letter_positions(records)[-1][1]


def test_spotify_reader_uses_record_index_and_the_folder_as_user(tmp_path):
    records_json = [
        {"endTime": "2020-09-13 12:26", "artistName": "Lorde", "trackName": "Royals", "msPlayed": 7643},
        {"endTime": "2020-09-13 12:30", "artistName": "Lorde", "trackName": "", "msPlayed": 1},
        {"endTime": "13/09/2020", "artistName": "Lorde", "trackName": "Team", "msPlayed": 1},
        {"endTime": "2020-09-13 12:31", "artistName": "Lorde", "trackName": "Team", "msPlayed": "x"},
        ["not", "an", "object"],
    ]
    folder = tmp_path / "listener_07"
    folder.mkdir()
    path = folder / "StreamingHistory0.json"
    path.write_text(json.dumps(records_json, indent=1), encoding="utf-8")
    records = list(readers.read_playlog(str(path), "auto"))
    (royals,) = [r for r in records if isinstance(r, playlog_rows.Play)]
    assert (royals.user_id, royals.track_key, royals.timestamp, royals.ms_played, royals.line) == (
        "listener_07", "lorde - royals", BASE - 40, 7643, 1)
    assert [line for line, _ in dead_letter_positions(records)] == [2, 3, 4, 5]


def test_spotify_reader_turns_a_broken_file_into_one_dead_letter():
    (letter,) = playlog_formats.parse_spotify_json(b'[\n {"endTime": "2020-09-13 12:26",\n oops\n]', "s.json", "u")
    assert (letter.line, letter.reason.startswith("bad JSON")) == (3, True)
    (letter,) = playlog_formats.parse_spotify_json(b'{"endTime": 1}', "s.json", "u")
    assert "array" in letter.reason
    (letter,) = playlog_formats.parse_spotify_json(b'[\n\n"\xff"]', "s.json", "u")
    assert (letter.line, "undecodable" in letter.reason) == (3, True)


def test_read_playlog_decompresses_gzip(tmp_path):
    path = tmp_path / "plays.csv.gz"
    path.write_bytes(gzip.compress(b"user_id,timestamp,track_id\nu1,1600000000,t1\n"))
    (record,) = readers.read_playlog(str(path), "auto")
    assert (record.track_key, record.line) == ("t1", 2)


def test_read_playlog_turns_an_unreadable_file_into_a_dead_letter(tmp_path):
    (letter,) = readers.read_playlog(str(tmp_path / "vanished.csv"), "csv")
    assert isinstance(letter, playlog_rows.DeadLetter) and "cannot read file" in letter.reason


def test_list_playlog_files_detects_formats_and_reports_skipped_files(tmp_path):
    (tmp_path / "spotify" / "anna").mkdir(parents=True)
    (tmp_path / "spotify" / "anna" / "StreamingHistory0.json").write_text("[]")
    (tmp_path / "spotify" / "anna" / "Userdata.json").write_text("{}")
    (tmp_path / "a.csv").write_text("user_id,timestamp,track_id\n")
    (tmp_path / "b.tsv").write_text("")
    files, skipped = readers.list_playlog_files([str(tmp_path / "spotify"), str(tmp_path / "*.?sv")])
    assert [(os.path.relpath(p, tmp_path), f) for p, f in files] == [
        ("a.csv", "csv"), ("b.tsv", "lastfm_tsv"),
        (os.path.join("spotify", "anna", "StreamingHistory0.json"), "spotify_json")]
    assert [os.path.basename(p) for p in skipped] == ["Userdata.json"]
    with pytest.raises(FileNotFoundError):
        readers.list_playlog_files([str(tmp_path / "nothing-*.csv")])
    with pytest.raises(ValueError, match="format"):
        readers.list_playlog_files([str(tmp_path / "spotify" / "anna" / "Userdata.json")])
    assert readers.list_playlog_files([str(tmp_path / "b.tsv")], "csv")[0] == [(str(tmp_path / "b.tsv"), "csv")]


# --- sessions, split, vocabulary (pure functions) ----------------------------

def test_session_breaks_only_when_the_gap_exceeds_the_threshold():
    gap = 1800
    plays = [play("u", BASE, "a"), play("u", BASE + gap, "b"),           # exactly gap: same session
             play("u", BASE + 2 * gap + 1, "c")]                         # gap + 1: new session
    sessions = playlog_sessions.split_into_sessions(plays, gap)
    assert [[p.track_key for p in s] for s in sessions] == [["a", "b"], ["c"]]


def test_sessions_are_ordered_by_time_whatever_the_input_order():
    newest_first = [play("u", BASE + 300, "c", 1), play("u", BASE + 100, "b", 2), play("u", BASE, "a", 3)]
    (session,) = playlog_sessions.split_into_sessions(newest_first, 1800)
    assert [p.track_key for p in session] == ["a", "b", "c"]


def test_assign_split_uses_the_end_of_each_users_time_span():
    first, last = 0, 1000
    assert playlog_sessions.assign_split(0, first, last, 0.1, 0.1) == "train"
    assert playlog_sessions.assign_split(800, first, last, 0.1, 0.1) == "train"
    assert playlog_sessions.assign_split(801, first, last, 0.1, 0.1) == "eval"
    assert playlog_sessions.assign_split(901, first, last, 0.1, 0.1) == "test"
    assert playlog_sessions.assign_split(1000, first, last, 0.0, 0.0) == "train"
    assert playlog_sessions.assign_split(5, 5, 5, 0.1, 0.1) == "train"   # one instant: nothing to split


def test_rank_vocabulary_orders_by_count_then_key_and_applies_min_count():
    counts = [("b", 2), ("a", 2), ("z", 5), ("rare", 1)]
    assert gen.rank_vocabulary(counts, 1) == ["z", "a", "b", "rare"]
    assert gen.rank_vocabulary(counts, 2) == ["z", "a", "b"]


def test_params_are_validated():
    with pytest.raises(ValueError):
        playlog_params.PlaylogParams(eval_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError):
        playlog_params.PlaylogParams(format="xml")
    from_mapping = playlog_params.PlaylogParams.from_mapping
    assert from_mapping({"session_gap_seconds": 60, "beam_args": []}).session_gap_seconds == 60


# --- Beam transforms ------------------------------------------------------------

def test_sessionize_transform_splits_filters_and_counts():
    params = playlog_params.PlaylogParams(session_gap_seconds=100, min_session_length=2)
    plays = [
        # u1 newest first, as Last.fm writes: sessions [a b] (gap exactly 100) and [c] (gap 101)
        play("u1", BASE + 301, "c", 1), play("u1", BASE + 100, "b", 2), play("u1", BASE, "a", 3),
        play("u2", BASE, "x"), play("u2", BASE + 50, "y"), play("u2", BASE + 60, "z"),
    ]
    with BeamTestPipeline(runner=LOCAL_RUNNER) as pipeline:
        result = (pipeline | beam.Create(plays) | playlog_sessions.Sessionize(params))
        assert_that(result.sessions | "Keys" >> beam.Map(lambda s: (s.session_id, s.track_keys, s.timestamps)),
                    equal_to([(f"u1-{BASE}", ("a", "b"), (BASE, BASE + 100)),
                              (f"u2-{BASE}", ("x", "y", "z"), (BASE, BASE + 50, BASE + 60))]),
                    label="sessions")
        assert_that(result[playlog_sessions.FILTERED], equal_to([1]), label="filtered")
        assert_that(result[playlog_sessions.USERS], equal_to(["u1", "u2"]), label="users")


def test_build_vocabulary_counts_every_split():
    def session(split, keys):
        return playlog_sessions.Session("u", f"u-{len(keys)}{split}", 0, tuple(keys), tuple(range(len(keys))), split)

    sessions = [session("train", ["b", "a", "b"]), session("train", ["c", "a"]), session("train", ["b"]),
                session("eval", ["only-eval", "only-eval", "only-eval"]), session("test", ["only-test"])]
    with BeamTestPipeline(runner=LOCAL_RUNNER) as pipeline:
        vocabulary = pipeline | beam.Create(sessions) | gen.BuildVocabulary(min_count=1)
        # Tracks first played in the eval and test periods are the newest: the served model needs them.
        assert_that(vocabulary, equal_to([["b", "only-eval", "a", "c", "only-test"]]))


# --- the whole component ------------------------------------------------------

def write_fixtures(root) -> dict:
    """Writes a CSV, a Last.fm TSV and a Spotify folder; returns what is known about them."""
    csv_rows = ["user_id,timestamp,track_id,artist,ms_played"]
    # u1: ten daily sessions of three plays; the first is t0 t1 t2, the rest t<day> hits.
    for day in range(10):
        for position in range(3):
            key = f"t{position}" if day == 0 else ("hit" if position < 2 else f"day{day}")
            csv_rows.append(f"u1,{iso(BASE + day * DAY + position * 60)},{key},A,1000")
    csv_rows.append(f"u1,{BASE + 4 * DAY + 12 * HOUR},lonely,A,1000")      # a one-play session
    csv_rows.append("u1,garbage,t9,A,1000")                                 # dead letter
    csv_rows.append(f"u1,{BASE},,A,1000")                                   # dead letter
    (root / "plays.csv").write_text("\n".join(csv_rows) + "\n", encoding="utf-8")

    lastfm_rows = [f"user_000001\t{iso(BASE + day * DAY + minute * 60)}\t\tBand\t\tSong {minute}"
                   for day in reversed(range(5)) for minute in reversed(range(2))]
    lastfm_rows.insert(3, "user_000001\tbroken row")
    (root / "lastfm.tsv").write_text("\n".join(lastfm_rows) + "\n", encoding="utf-8")

    listener = root / "spotify" / "listener_01"
    listener.mkdir(parents=True)
    history = [{"endTime": datetime.datetime.fromtimestamp(BASE + day * DAY + minute * 60, datetime.timezone.utc)
                .strftime("%Y-%m-%d %H:%M"), "artistName": "Artist", "trackName": f"Song {day % 3}",
                "msPlayed": 1000} for day in range(6) for minute in range(2)]
    history.append({"endTime": "2020-09-13 12:30", "artistName": "Artist"})   # no trackName
    (listener / "StreamingHistory0.json").write_text(json.dumps(history), encoding="utf-8")
    (listener / "Userdata.json").write_text("{}", encoding="utf-8")
    return {"rows": len(csv_rows) - 1 + len(lastfm_rows) + len(history), "dead_letters": 4}


def read_sessions(uri: str, split: str) -> list[dict]:
    context_spec = {"user_id": tf.io.FixedLenFeature([], tf.string),
                    "session_id": tf.io.FixedLenFeature([], tf.string),
                    "start_time": tf.io.FixedLenFeature([], tf.int64)}
    sequence_spec = {"track_key": tf.io.FixedLenSequenceFeature([], tf.string),
                     "timestamp": tf.io.FixedLenSequenceFeature([], tf.int64)}
    sessions = []
    for record in tf.data.TFRecordDataset(sorted(glob.glob(split_files_pattern(uri, split))),
                                          compression_type="GZIP"):
        context, sequence = tf.io.parse_single_sequence_example(record, context_spec, sequence_spec)
        sessions.append({"user_id": context["user_id"].numpy().decode(),
                         "session_id": context["session_id"].numpy().decode(),
                         "start_time": int(context["start_time"]),
                         "track_key": [k.decode() for k in sequence["track_key"].numpy()],
                         "timestamp": [int(t) for t in sequence["timestamp"].numpy()]})
    return sessions


def test_run_writes_sessions_vocab_manifest_and_dead_letters(tmp_path):
    inputs = tmp_path / "logs"
    inputs.mkdir()
    known = write_fixtures(inputs)
    artifact = Artifact("Sessions", str(tmp_path / "out"))
    gen.SPEC.executor({}, {"sessions": artifact}, {"playlog_paths": [str(inputs)], "beam_args": []})
    uri = artifact.uri

    sessions = {split: read_sessions(uri, split) for split in SPLITS}
    by_id = {s["session_id"]: s for split in SPLITS for s in sessions[split]}
    # The records parse back with the right keys and times, plays in time order.
    assert by_id[f"u1-{BASE}"]["track_key"] == ["t0", "t1", "t2"]
    assert by_id[f"u1-{BASE}"]["timestamp"] == [BASE, BASE + 60, BASE + 120]
    assert by_id[f"user_000001-{BASE}"]["track_key"] == ["band - song 0", "band - song 1"]
    assert by_id[f"listener_01-{BASE - 40}"]["start_time"] == BASE - 40
    for session in by_id.values():
        assert session["timestamp"] == sorted(session["timestamp"])
        assert session["session_id"] == f"{session['user_id']}-{session['start_time']}"

    # Temporal split: per user, every test session starts after every eval and train one.
    for user in {s["user_id"] for s in by_id.values()}:
        starts = {split: [s["start_time"] for s in sessions[split] if s["user_id"] == user] for split in SPLITS}
        assert starts["train"] and starts["test"], user
        assert max(starts["train"]) < min(starts["test"])
        if starts["eval"]:
            assert max(starts["train"]) < min(starts["eval"]) and max(starts["eval"]) < min(starts["test"])

    # Vocabulary: every split's keys, most frequent first, ties by key.
    vocabulary = (tmp_path / "out" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    counts = collections.Counter(k for split in SPLITS for s in sessions[split] for k in s["track_key"])
    assert vocabulary == sorted(counts, key=lambda k: (-counts[k], k))
    assert vocabulary[0] == "hit"
    assert "day9" in vocabulary  # u1's last day is test only, and the newest track

    # Counts reconcile, and match what the files hold.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows_in"] == known["rows"]
    assert manifest["rows_in"] == manifest["plays_written"] + manifest["plays_filtered"] + manifest["dead_letters"]
    dead_letters = list(read_dead_letters(str(tmp_path / "out" / "dead_letters.jsonl")))
    assert len(dead_letters) == manifest["dead_letters"] == known["dead_letters"]
    assert {(os.path.basename(d["source"]), d["line"]) for d in dead_letters} == {
        ("plays.csv", 33), ("plays.csv", 34), ("lastfm.tsv", 4), ("StreamingHistory0.json", 13)}
    for split in SPLITS:
        assert manifest["splits"][split]["sessions"] == len(sessions[split])
        assert manifest["splits"][split]["plays"] == sum(len(s["track_key"]) for s in sessions[split])
    assert manifest["plays_filtered"] == manifest["sessions_filtered"] == 1  # u1's "lonely" play
    assert manifest["users"] == 3 and manifest["vocab_size"] == len(vocabulary)
    assert [os.path.basename(p) for p in manifest["skipped_files"]] == ["Userdata.json"]
    assert artifact.properties["sessions"] == len(by_id)


# --- real data (optional) --------------------------------------------------------

@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED_DATA, "lastfm1k_sample"))
                    or not os.path.isdir(os.path.join(SHARED_DATA, "spotify_history")),
                    reason="../shared/data is not present")
def test_readers_on_real_lastfm_and_spotify_samples():
    lastfm_files, _ = readers.list_playlog_files([os.path.join(SHARED_DATA, "lastfm1k_sample")])
    lastfm = [r for path, fmt in lastfm_files for r in readers.read_playlog(path, fmt)]
    assert lastfm and not dead_letter_positions(lastfm)

    spotify_files, _ = readers.list_playlog_files([os.path.join(SHARED_DATA, "spotify_history")])
    rows = 0
    for path, _ in spotify_files:
        with open(path, encoding="utf-8") as handle:
            rows += len(json.load(handle))
    records = [r for path, fmt in spotify_files for r in readers.read_playlog(path, fmt)]
    plays_by_user = collections.defaultdict(list)
    for record in records:
        if isinstance(record, playlog_rows.Play):
            plays_by_user[record.user_id].append(record)
    params = playlog_params.PlaylogParams()
    written = filtered = 0
    for user, plays in plays_by_user.items():
        for output in playlog_sessions.sessionize_user(user, plays, params):
            if isinstance(output, playlog_sessions.Session):
                written += len(output.track_keys)
            elif output.tag == playlog_sessions.FILTERED:
                filtered += output.value
    dead = len(dead_letter_positions(records))
    assert rows == len(records) == written + filtered + dead
