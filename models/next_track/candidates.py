"""A learned ranker of the listener's own tracks, from what they did with them.

Over 90 % of a listener's next plays on real Spotify histories are tracks
they played before, so the most useful thing a next-track model can do is
rank the listener's own tracks well. :class:`CandidateScorer` gathers, for
every track of a row's input, a small vector of facts read off the input ids:

- *repeat*: how often the track was played, per recency bucket (``log2`` of
  the distance from the end; history and session apart);
- *successor* evidence: wherever one of the session's last
  ``successor_anchors`` plays occurs earlier in the input, each track up to
  ``successor_lags`` slots later gains ``1 / lag``, per anchor (the
  listener's own sequential rules: album and playlist replays);
- *predecessor* evidence, the same for the tracks *before* each match
  (``predecessor_lags``; replays in shuffled or reversed order);
- optionally split by whether the match is recent (``successor_recent_slots``);
- *global* evidence: the rule weight of each anchor's strongest followers
  across every listener (``global_successors``; the table is set from the
  training sessions by :meth:`CandidateScorer.set_global_rules`, see
  ``global_rules.py``).

A small MLP turns ``log(1 + facts)`` into the track's score, added to its
logit. No trained weight belongs to a track, so the ranker cannot memorise who
played what in training: it learns how listening habits carry over, which
is what generalises to the future and to listeners it never saw.

Everything is sparse: one entry per (row, slot) and per anchor match, no
catalogue-sized temporaries; the scores are scatter-added onto the logits
(``TensorScatterAdd``), core TensorFlow ops only.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from musicrec.models.next_track.layout import NUM_RESERVED_IDS, PADDING_ID
from musicrec.models.next_track.repeat_scores import RECENCY_BUCKETS, recency_buckets


CONTEXTS = ("none", "lengths", "state")
CONTEXT_LENGTHS = 2  # log plays of the session so far and of the history


@keras.saving.register_keras_serializable(package="musicrec")
class CandidateScorer(keras.layers.Layer):
    """Scores every track found in (or near an anchor in) the input: ``logits + scatter(MLP(facts))``.

    Args:
        history_length: history slots before the boundary (the input's
            width may vary: slots are counted from the end).
        session_slots: slots after the history (the boundary and the session).
        repeat_history_length: history slots the repeat facts read (the most recent).
        successor_lags, successor_anchors, predecessor_lags, successor_recent_slots: see the module.
        units: hidden units of the MLP.
        context: what the MLP knows of the row besides the track's facts:
            ``"none"``, ``"lengths"`` (how long the session and the history
            are) or ``"state"`` (those and the recurrent session state).
        global_successors: followers per track in the global rules table (0: none).
    """

    def __init__(self, history_length: int, session_slots: int, repeat_history_length: int,
                 successor_lags: int, successor_anchors: int, predecessor_lags: int = 0,
                 successor_recent_slots: int = 0, units: int = 32, context: str = "none",
                 global_successors: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.history_length = history_length
        self.session_slots = session_slots
        self.repeat_history_length = min(repeat_history_length, history_length)
        self.successor_lags = successor_lags
        self.successor_anchors = successor_anchors
        self.predecessor_lags = predecessor_lags
        self.successor_recent_slots = successor_recent_slots
        self.units = units
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        self.context = context
        self.repeat_slots = session_slots + self.repeat_history_length
        self.buckets = recency_buckets(self.repeat_history_length, self.repeat_slots)
        # Anchors are session plays (the slot before them is the boundary).
        self.anchors = min(successor_anchors, session_slots - 1)
        self.groups = (1 + (1 if predecessor_lags else 0)) * (2 if successor_recent_slots else 1)
        self.global_successors = global_successors
        self.n_features = 2 * RECENCY_BUCKETS + self.anchors * self.groups * (1 if successor_lags else 0)
        self.global_feature = self.n_features
        self.n_features += self.anchors if global_successors else 0
        self.hidden = keras.layers.Dense(units, activation="relu", name="hidden")
        self.score = keras.layers.Dense(1, name="score")

    def build(self, input_shapes):
        logits_shape, _, state_shape = input_shapes
        if self.global_successors:
            # Not trained: counted from sessions (set_global_rules); one row per id.
            table = (logits_shape[-1], self.global_successors)
            self.global_ids = self.add_weight(shape=table, dtype="int32", initializer="zeros",
                                              trainable=False, name="global_successor_ids")
            self.global_weights = self.add_weight(shape=table, initializer="zeros", trainable=False,
                                                  name="global_successor_weights")
        inputs = self.n_features + (CONTEXT_LENGTHS if self.context != "none" else 0)
        inputs += state_shape[-1] if self.context == "state" else 0
        self.hidden.build((None, inputs))
        self.score.build((None, self.units))

    def _facts(self, ids, real):
        """``(rows, tracks, features, values)``, one entry per fact (duplicates add up)."""
        slots = tf.shape(ids)[1]
        recent = ids[:, -self.repeat_slots:]
        width = tf.shape(recent)[1]
        buckets = tf.constant(self.buckets)[self.repeat_slots - width:]
        rows = [tf.reshape(tf.broadcast_to(tf.range(tf.shape(ids)[0])[:, None], tf.shape(recent)), [-1])]
        tracks = [tf.reshape(recent, [-1])]
        features = [tf.reshape(tf.broadcast_to(buckets[None, :], tf.shape(recent)), [-1])]
        values = [tf.reshape(real[:, -self.repeat_slots:], [-1])]
        if self.successor_lags:
            positions = tf.range(slots)[None, :]
            directions = [(tf.range(1, self.successor_lags + 1), 0)]
            if self.predecessor_lags:
                directions.append((-tf.range(1, self.predecessor_lags + 1), 1))
            for anchor in range(self.anchors):
                track = ids[:, slots - 1 - anchor:slots - anchor]  # [b, 1]
                matches = tf.where(tf.logical_and(tf.logical_and(tf.equal(ids, track), real > 0),
                                                  positions < slots - 1 - anchor))
                row, slot = tf.cast(matches[:, 0], tf.int32), tf.cast(matches[:, 1], tf.int32)
                group = tf.zeros_like(slot)
                if self.successor_recent_slots:
                    group += tf.cast(slot >= slots - self.successor_recent_slots, tf.int32)
                for lags, direction in directions:
                    neighbour = slot[:, None] + lags[None, :]  # [m, L]
                    inside = tf.logical_and(neighbour >= 0, neighbour < slots)
                    near = tf.stack([tf.broadcast_to(row[:, None], tf.shape(neighbour)),
                                     tf.clip_by_value(neighbour, 0, slots - 1)], axis=-1)
                    weight = (tf.gather_nd(real, near) * tf.cast(inside, real.dtype)
                              / tf.cast(tf.abs(lags), real.dtype)[None, :])
                    feature = (2 * RECENCY_BUCKETS + anchor * self.groups
                               + (group + direction * (2 if self.successor_recent_slots else 1)))
                    rows.append(tf.reshape(near[..., 0], [-1]))
                    tracks.append(tf.reshape(tf.gather_nd(ids, near), [-1]))
                    features.append(tf.reshape(tf.broadcast_to(feature[:, None], tf.shape(neighbour)), [-1]))
                    values.append(tf.reshape(weight, [-1]))
        if self.global_successors:
            batch = tf.shape(ids)[0]
            for anchor in range(self.anchors):
                track = ids[:, slots - 1 - anchor]  # [b]
                followers = tf.gather(self.global_ids, track)  # [b, M]
                weight = tf.gather(self.global_weights, track) * real[:, slots - 1 - anchor][:, None]
                rows.append(tf.reshape(tf.broadcast_to(tf.range(batch)[:, None], tf.shape(followers)), [-1]))
                tracks.append(tf.reshape(followers, [-1]))
                features.append(tf.fill([tf.size(followers)], self.global_feature + anchor))
                values.append(tf.reshape(tf.cast(weight, real.dtype), [-1]))
        return tf.concat(rows, 0), tf.concat(tracks, 0), tf.concat(features, 0), tf.concat(values, 0)

    def set_global_rules(self, ids: np.ndarray, weights: np.ndarray) -> None:
        """Sets the global rules table (``global_rules.successor_table``), ``[n_ids, M]`` each."""
        self.global_ids.assign(ids.astype(np.int32))
        self.global_weights.assign(weights.astype(np.float32))

    def entries(self, ids, state, n_ids):
        """The candidates' scores, sparse: ``(rows, tracks, scores)``, each ``(row, track)`` once."""
        ids = tf.cast(ids, tf.int32)
        real = tf.cast(ids > PADDING_ID, state.dtype)  # plays, not padding or the boundary
        ids = tf.maximum(ids, 0)
        rows, tracks, features, values = self._facts(ids, real)
        # Padding, the boundary and OOV plays name no track that could be recommended.
        kept = tf.logical_and(tracks >= NUM_RESERVED_IDS, values > 0)
        rows, tracks, features, values = (tf.boolean_mask(part, kept) for part in (rows, tracks, features, values))
        n_ids = tf.cast(n_ids, tf.int64)
        keys, position = tf.unique(tf.cast(rows, tf.int64) * n_ids + tf.cast(tracks, tf.int64))
        candidates = tf.size(keys)
        facts = tf.math.unsorted_segment_sum(values, position * self.n_features + features,
                                             candidates * self.n_features)
        facts = tf.math.log1p(tf.reshape(facts, [candidates, self.n_features]))
        rows = tf.cast(keys // n_ids, tf.int32)
        if self.context != "none":
            facts = tf.concat([facts, tf.gather(self._row_context(real, state), rows)], axis=1)
        scores = tf.squeeze(self.score(self.hidden(facts)), -1)
        return rows, keys % n_ids, scores

    def _row_context(self, real, state):
        """Per row: ``log(1 + plays)`` of the session so far and of the history (and the session state)."""
        session = tf.reduce_sum(real[:, -(self.session_slots - 1):], axis=1)
        history = tf.reduce_sum(real, axis=1) - session
        lengths = tf.math.log1p(tf.stack([session, history], axis=1))
        return tf.concat([lengths, state], axis=1) if self.context == "state" else lengths

    def call(self, inputs):
        logits, ids, state = inputs
        rows, tracks, scores = self.entries(ids, state, keras.ops.shape(logits)[1])
        return tf.tensor_scatter_nd_add(logits, tf.stack([tf.cast(rows, tf.int64), tracks], -1),
                                        tf.cast(scores, logits.dtype))

    def get_config(self):
        return {**super().get_config(), "history_length": self.history_length,
                "session_slots": self.session_slots, "repeat_history_length": self.repeat_history_length,
                "successor_lags": self.successor_lags, "successor_anchors": self.successor_anchors,
                "predecessor_lags": self.predecessor_lags, "successor_recent_slots": self.successor_recent_slots,
                "units": self.units, "context": self.context, "global_successors": self.global_successors}
