"""Listener history: strictly earlier plays, from training sessions only (no test-period leakage)."""
from __future__ import annotations

import numpy as np

from musicrec.models.next_track import data
from musicrec.models.next_track.history import ListeningHistory
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import NUM_RESERVED_IDS
from musicrec.models.next_track.sessions import SessionRecord, read_session_records

HPARAMS = NextTrackHParams(history_length=8, rnn_history_length=2, max_prefix_length=3)


def session(user, start, keys):
    return SessionRecord(user, f"{user}-{start}", start, tuple(keys),
                         tuple(start + 60 * i for i in range(len(keys))))


def test_history_is_strictly_before_the_session_start_and_per_listener():
    history = ListeningHistory([session("u", 1000, ["a", "b"]), session("u", 5000, ["c", "d"]),
                                session("v", 0, ["z"])])
    assert history.before("u", 5000, 10) == ["a", "b"]  # its own session's plays are not history
    assert history.before("u", 5001, 10) == ["a", "b", "c"]
    assert history.before("u", 9999, 3) == ["b", "c", "d"]  # the most recent, oldest first
    assert history.before("u", 1000, 10) == []
    assert history.before("nobody", 9999, 10) == []


def test_no_test_period_or_later_play_reaches_training_examples_or_test_histories():
    # Per-listener time split: each listener's test sessions come after all its training
    # sessions. Every session has its own keys, so the id of a play says which session it is.
    train, test = [], []
    for user, offset in (("u1", 0), ("u2", 50_000)):
        for n in range(6):
            train.append(session(user, offset + 3600 * n, [f"{user}-tr{n}-{i}" for i in range(4)]))
        for n in range(6, 9):
            test.append(session(user, offset + 3600 * n, [f"{user}-te{n}-{i}" for i in range(4)]))
    vocabulary = sorted({k for s in train + test for k in s.track_keys})  # test keys get ids too
    key_of = {NUM_RESERVED_IDS + i: key for i, key in enumerate(vocabulary)}
    origin = {k: s for s in train + test for k in s.track_keys}

    history = ListeningHistory(train)
    for s in train:
        examples = data.build_examples([s], history, vocabulary, HPARAMS)
        inputs, targets = examples.inputs(), examples.targets
        assert len(targets) == len(s.track_keys) - 1
        history_slots = inputs[:, :HPARAMS.history_length]
        for key in (key_of[i] for i in np.unique(history_slots) if i >= NUM_RESERVED_IDS):
            earlier = origin[key]
            assert earlier in train and earlier.user_id == s.user_id and earlier.start_time < s.start_time
        session_keys = {key_of[i] for i in np.unique(inputs[:, HPARAMS.history_length + 1:]) if i > 0}
        assert session_keys <= set(s.track_keys)

    for s in test:
        earlier = history.before(s.user_id, s.start_time, 100)
        assert earlier and all(origin[key] in train and origin[key].user_id == s.user_id for key in earlier)


def test_session_records_round_trip_through_tfrecords(tmp_path):
    from test_next_track_model import write_sessions

    path = write_sessions(str(tmp_path / "s.tfrecord.gz"), [["a", "b"], ["c"]])
    records = read_session_records([path])
    assert [r.track_keys for r in records] == [("a", "b"), ("c",)]
    assert records[0].user_id == "user-1" and records[1].start_time == records[0].start_time + 1
    assert records[0].timestamps[1] - records[0].timestamps[0] == 60
