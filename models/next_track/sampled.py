"""A softmax over the tracks that compete for a listener, for catalogues too large for a full one.

Almost every next play of a listener is a track they played before (over 90 %
of the targets on real Spotify histories), so the competitors that matter are
the listener's own tracks. For each example the loss scores exactly:

- its *candidates*: every track :class:`~repeat_scores.RepeatScores` adds to (the
  listener's recent plays, the session, the successors of the session's last
  plays in the whole history) and the target, each with its full logit
  (session vector · track vector + bias + repeat and successor terms);
- every other track through the batch's other targets (in-batch negatives,
  sampled in proportion to their training frequency ``q``), corrected by
  ``- log(n · q(track))`` for ``n`` samples (Yi et al., "Sampling-bias-corrected
  neural modeling", RecSys 2019; the ``n`` makes the sample estimate the mass
  of the tracks it stands for, on the same scale as the exact candidates); a
  batch target that is among the row's candidates is already scored exactly
  and left out of the sample.

So the repeat and successor gates learn to rank a listener's tracks against
each other, as the full softmax would teach them, at a cost that grows with
the candidates, not the catalogue. The trainer shares every weight with the
core model, so training it trains the model that is exported.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import NUM_RESERVED_IDS
from musicrec.models.next_track.model import output_embeddings, scoring_layer


class CandidateSoftmaxLoss(keras.layers.Layer):
    """Per-example cross-entropy ``[batch]`` over the row's candidates and in-batch negatives."""

    def __init__(self, core_model: keras.Model, hparams: NextTrackHParams, log_q: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        # Closures, so that the core model's weights are not tracked here a second time.
        self._neural = hparams.neural_scores
        self._bias_only = not hparams.neural_scores and hparams.track_bias
        self._table = lambda: output_embeddings(core_model, hparams)
        self._bias = lambda: core_model.get_layer("next_track_logits").bias
        self._n_ids = core_model.get_layer("track_embedding").input_dim
        # Layers whose weights score candidates but lie off the trainer's functional path (it stops
        # at the session state): tracked here, so that training the trainer trains them.
        self.scoring_layers = [core_model.get_layer("next_track_logits")]
        self._entries = None
        if scoring_layer(core_model) is not None:
            self.scoring_layers.append(scoring_layer(core_model))
            self._entries = self.scoring_layers[-1].entries
        self.log_q = tf.constant(log_q.astype(np.float32))

    def call(self, inputs):
        vector, state, ids, targets = inputs
        targets = tf.cast(targets, tf.int64)
        batch = tf.shape(targets, out_type=tf.int64)[0]
        n_ids = tf.constant(self._n_ids, tf.int64)
        row_ids = tf.range(batch)
        keys, values = row_ids * n_ids + targets, tf.zeros_like(targets, vector.dtype)
        if self._entries is not None:
            rows, tracks, bonus = self._entries(ids, state, n_ids)
            # Padding, the boundary and OOV plays name no track that could be recommended.
            kept = tracks >= NUM_RESERVED_IDS
            keys = tf.concat([keys, tf.cast(rows[kept], tf.int64) * n_ids + tracks[kept]], 0)
            values = tf.concat([values, tf.cast(bonus[kept], vector.dtype)], 0)
        keys, position = tf.unique(keys)
        bonus = tf.math.unsorted_segment_sum(values, position, tf.size(keys))
        rows, tracks = keys // n_ids, keys % n_ids
        logits = bonus + self._base_logits(vector, rows, tracks)  # [candidates]
        # The first `batch` unique keys are the rows' own targets, in row order.
        target_logits = logits[:batch]

        sorted_keys = tf.sort(keys)
        pairs = tf.reshape(row_ids[:, None] * n_ids + targets[None, :], [-1])
        found = tf.minimum(tf.searchsorted(sorted_keys, pairs, out_type=tf.int64), tf.size(keys, out_type=tf.int64) - 1)
        is_candidate = tf.reshape(tf.equal(tf.gather(sorted_keys, found), pairs), [batch, batch])
        samples = tf.cast(batch, vector.dtype)
        correction = -tf.gather(self.log_q, targets) - tf.math.log(samples)  # [b]
        if self._neural:
            sampled = (tf.matmul(vector, tf.gather(self._table(), targets), transpose_b=True)
                       + (tf.gather(self._bias(), targets) + correction)[None, :])  # [b, b]
        else:
            column = correction + (tf.gather(self._bias(), targets) if self._bias_only else 0.0)
            sampled = tf.broadcast_to(column[None, :], [batch, batch])
        sampled = tf.where(is_candidate, tf.cast(-1e9, sampled.dtype), sampled)
        shift = tf.stop_gradient(tf.maximum(
            tf.math.unsorted_segment_max(logits, rows, batch), tf.reduce_max(sampled, axis=1)))
        total = (tf.math.unsorted_segment_sum(tf.exp(logits - tf.gather(shift, rows)), rows, batch)
                 + tf.reduce_sum(tf.exp(sampled - shift[:, None]), axis=1))
        return shift + tf.math.log(total) - target_logits


    def _base_logits(self, vector, rows, tracks):
        """The core model's logit before the candidate terms, for each (row, track) candidate."""
        if self._neural:
            return (tf.reduce_sum(tf.gather(vector, rows) * tf.gather(self._table(), tracks), -1)
                    + tf.gather(self._bias(), tracks))
        return tf.gather(self._bias(), tracks) if self._bias_only else 0.0


def build_candidate_trainer(core_model: keras.Model, hparams: NextTrackHParams,
                            target_counts: np.ndarray) -> keras.Model:
    """A model ``(ids [b, input_length], targets [b]) → loss [b]`` sharing ``core_model``'s weights.

    Args:
        core_model: :func:`model.build_model`'s model.
        hparams: its hyperparameters.
        target_counts: ``[n_ids]`` training target counts, for ``q``.

    Compile it with ``loss=lambda _, loss: loss`` and feed ``((inputs, targets), targets)``.
    """
    counts = np.maximum(np.asarray(target_counts, dtype=np.float64), 1.0)
    log_q = np.log(counts / counts.sum())
    state = core_model.get_layer("session_dropout").output
    vector = (core_model.get_layer("session_projection").output
              if hparams.tied_embeddings and hparams.neural_scores else state)
    targets = keras.Input(shape=(), dtype="int32", name="targets")
    loss = CandidateSoftmaxLoss(core_model, hparams, log_q, name="candidate_softmax")(
        [vector, state, core_model.input, targets])
    return keras.Model([core_model.input, targets], loss, name="next_track_candidate_softmax")
