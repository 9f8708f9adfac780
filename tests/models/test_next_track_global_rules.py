"""The global sequential rules the next-track model reads: counted right, never from its own targets."""
from __future__ import annotations

import os
import random

import numpy as np
import tensorflow as tf

from musicrec.models import warm_start
from musicrec.models.next_track import global_rules
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.model import build_model, scoring_layer
from musicrec.models.next_track.sessions import SessionRecord
from musicrec.models.next_track.train import run_fn
from musicrec.models.train_args import TrainArgs
from test_next_track_model import successor_sessions, write_sessions, write_vocabulary

HPARAMS = NextTrackHParams(embedding_dim=8, lstm_units=8, history_length=10, repeat_history_length=5,
                           rnn_history_length=2, max_prefix_length=3, successor_lags=2,
                           scorer="mlp", neural_scores=False, global_successors=2, dropout=0.0)


def _session(user: str, number: int, keys: str) -> SessionRecord:
    return SessionRecord(user, f"{user}-{number}", 100 * number, tuple(keys), tuple(range(len(keys))))


def test_the_table_keeps_each_tracks_strongest_followers_weighted_by_one_over_the_gap():
    records = [_session("u1", 0, "abc"), _session("u1", 1, "ab"), _session("u2", 2, "ca")]
    ids, weights = global_rules.successor_table(records, {"a": 2, "b": 3, "c": 4}, n_ids=5, lags=2, top=2)
    # a→b twice at gap 1 (2.0), a→c once at gap 2 (0.5); b→c 1.0; c→a 1.0; reserved ids empty.
    np.testing.assert_array_equal(ids, [[0, 0], [0, 0], [3, 4], [4, 0], [2, 0]])
    np.testing.assert_allclose(weights, [[0, 0], [0, 0], [2.0, 0.5], [1.0, 0], [1.0, 0]])


def test_each_listeners_earliest_sessions_feed_the_rules_and_the_later_ones_train():
    records = [_session("u1", n, "ab") for n in (3, 0, 2, 1)] + [_session("u2", 5, "ab")]
    rules, examples = global_rules.split_for_rules(records, 0.5)
    assert [r.session_id for r in rules] == ["u1-0", "u1-1"]
    assert [r.session_id for r in examples] == ["u1-2", "u1-3", "u2-5"]


def test_a_listeners_latest_session_always_trains_whatever_the_rules_share():
    records = [_session("u1", 0, "ab"), _session("u2", 1, "ab"), _session("u2", 2, "ab")]
    rules, examples = global_rules.split_for_rules(records, 0.9)
    assert [r.session_id for r in rules] == ["u2-1"]
    assert [r.session_id for r in examples] == ["u1-0", "u2-2"]


def test_the_model_scores_an_anchors_global_followers_even_when_the_listener_never_played_them():
    model = build_model(4, HPARAMS)  # ids 2..5
    history = [0] * HPARAMS.history_length
    inputs = np.array([history + [-1, 0, 0, 2]], np.int64)  # no history, the session is track 2
    before = model(inputs).numpy()[0]
    ids = np.zeros((6, 2), np.int32)
    weights = np.zeros((6, 2), np.float32)
    ids[2], weights[2] = [5, 4], [3.0, 1.0]
    scoring_layer(model).set_global_rules(ids, weights)
    after = model(inputs).numpy()[0]
    changed = np.flatnonzero(~np.isclose(before, after))
    assert set(changed) == {4, 5}  # only the anchor's followers move
    # Another anchor without followers leaves every score as it was.
    other = np.array([history + [-1, 0, 0, 3]], np.int64)
    np.testing.assert_allclose(model(other).numpy(), build_model_with_same_weights(model)(other).numpy())


def build_model_with_same_weights(model):
    twin = build_model(4, HPARAMS)
    twin.set_weights(model.get_weights())
    scoring_layer(twin).set_global_rules(np.zeros((6, 2), np.int32), np.zeros((6, 2), np.float32))
    return twin


def test_training_counts_only_earlier_sessions_and_the_export_counts_them_all(tmp_path):
    sessions = successor_sessions(random.Random(5), 30)
    examples_dir = str(tmp_path / "examples")
    train_file = write_sessions(f"{examples_dir}/Split-train/d.tfrecord.gz", sessions)
    vocabulary = write_vocabulary(examples_dir, sessions)
    hparams = {**HPARAMS.to_dict(), "epochs": 1, "batch_size": 16, "validation_share": 0.0,
               "rules_share": 0.5, "softmax": "sampled"}
    args = TrainArgs([train_file], [], examples_dir, str(tmp_path / "model"), hparams=hparams, seed=0)
    metrics = run_fn(args)
    # Half the sessions only feed the rules while training: the other half gives examples.
    later = sessions[len(sessions) - round(0.5 * len(sessions)):]
    assert metrics["examples"]["train"] == sum(len(plays) - 1 for plays in later)
    checkpoint = warm_start.load_checkpoint(args.model_dir)
    core = build_model(len(checkpoint.tokens), NextTrackHParams.from_dict(checkpoint.hparams))
    core.load_weights(checkpoint.weights_path)
    exported = scoring_layer(core).global_ids.numpy()
    records = [SessionRecord("user-1", f"s{n}", n, tuple(p), tuple(range(len(p))))
               for n, p in enumerate(sessions)]
    every, _ = global_rules.successor_table(records, {k: 2 + i for i, k in enumerate(vocabulary)},
                                           len(vocabulary) + 2, HPARAMS.successor_lags, 2)
    np.testing.assert_array_equal(exported, every)
    assert os.path.exists(os.path.join(args.serving_dir, "saved_model.pb"))
    served = tf.saved_model.load(args.serving_dir)
    assert "recommend" in served.signatures
