"""The sampled softmax: exact where the candidates cover the catalogue, and what it samples otherwise."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from musicrec.models.next_track.hparams import CATALOGUE_RANKING, NextTrackHParams
from musicrec.models.next_track.model import build_model
from musicrec.models.next_track.sampled import build_candidate_trainer

HPARAMS = NextTrackHParams(**CATALOGUE_RANKING, embedding_dim=8, lstm_units=8, history_length=12,
                           repeat_history_length=12,
                           rnn_history_length=2, max_prefix_length=4, successor_lags=2, dropout=0.0)
VOCAB_SIZE = 6  # ids 2..7


def _inputs(rows: list[tuple[list[int], list[int]]]) -> np.ndarray:
    """Rows of (history ids, session ids) in the core model's layout."""
    width = HPARAMS.history_length
    out = []
    for history, session in rows:
        left = [0] * (width - len(history)) + history
        right = [0] * (HPARAMS.max_prefix_length - len(session)) + session
        out.append(left + [-1] + right)
    return np.array(out, np.int64)


def _model_and_trainer(counts):
    model = build_model(VOCAB_SIZE, HPARAMS)
    # Non-zero repeat and successor weights, so their terms matter in both losses.
    repeat = model.get_layer("repeat_scores")
    rng = np.random.default_rng(0)
    repeat.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in repeat.get_weights()])
    return model, build_candidate_trainer(model, HPARAMS, np.asarray(counts, float))


def _full_cross_entropy(model, inputs, targets):
    logits = model(inputs, training=False)[:, 2:]  # reserved ids are never targets
    return tf.nn.sparse_softmax_cross_entropy_with_logits(targets - 2, logits).numpy()


def test_equals_the_full_softmax_when_every_track_is_a_candidate():
    # Every row's recent plays hold all six tracks: nothing is left to sample.
    every = list(range(2, 8))
    inputs = _inputs([(every + [3, 4], [5, 2]), (every, [7]), (every[::-1], [2, 3, 4])])
    targets = np.array([3, 6, 2], np.int64)
    model, trainer = _model_and_trainer(np.ones(VOCAB_SIZE + 2))
    loss = trainer([inputs, targets], training=False).numpy()
    np.testing.assert_allclose(loss, _full_cross_entropy(model, inputs, targets), rtol=1e-5, atol=1e-5)


def test_other_tracks_come_from_the_batch_with_the_log_q_correction():
    # Row 0 has no history and a one-track session: its candidates are track 2 (the
    # session, with a repeat bonus) and its target 3; row 1's target 5 is its one sampled
    # negative, corrected by log(n q(5)) with n = 2 samples. Row 1 is built the same way the
    # other way round.
    inputs = _inputs([([], [2]), ([], [4])])
    targets = np.array([3, 5], np.int64)
    counts = np.array([1, 1, 1, 4, 1, 3, 1, 1], float)
    model, trainer = _model_and_trainer(counts)
    logits = model(inputs, training=False).numpy()
    log_q = np.log(counts / counts.sum())
    expected = []
    for row, (own, sampled, session_track) in enumerate([(3, 5, 2), (5, 3, 4)]):
        terms = [logits[row, own], logits[row, session_track], logits[row, sampled] - log_q[sampled] - np.log(2)]
        expected.append(np.logaddexp.reduce(terms) - logits[row, own])
    np.testing.assert_allclose(trainer([inputs, targets], training=False).numpy(), expected, rtol=1e-5)


def test_a_batch_target_among_the_rows_candidates_is_scored_once_exactly():
    # Row 1's target (2) is row 0's session track: row 0 scores it as a candidate only.
    inputs = _inputs([([], [2]), ([], [4])])
    targets = np.array([3, 2], np.int64)
    model, trainer = _model_and_trainer(np.ones(VOCAB_SIZE + 2))
    logits = model(inputs, training=False).numpy()
    row0 = np.logaddexp.reduce([logits[0, 3], logits[0, 2]]) - logits[0, 3]
    np.testing.assert_allclose(trainer([inputs, targets], training=False).numpy()[0], row0, rtol=1e-5)


def test_training_the_trainer_trains_every_weight_that_scores():
    model, trainer = _model_and_trainer(np.ones(VOCAB_SIZE + 2))
    trained = {id(variable) for variable in trainer.trainable_weights}
    assert len(trained) == len(trainer.trainable_weights), "no variable twice"
    for name in ("repeat_scores", "next_track_logits", "session_lstm", "track_embedding"):
        for variable in model.get_layer(name).trainable_weights:
            assert id(variable) in trained, f"{name}/{variable.name} is not trained"
