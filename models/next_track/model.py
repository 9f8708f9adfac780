"""Keras recurrent next-track model over the listener's history and the session so far.

The input is the layout of ``layout.py`` (ids, boundary, history and session
slots). The network:
track embedding → LSTM (or GRU) over the last ``rnn_history_length``
history slots, the boundary and the session → dropout → scores over every id, either a
dense output layer or, with ``tied_embeddings``, the dot product with the
input embedding table (after a projection to its width) plus a per-track
bias. With ``repeat_scores``, learned weights computed from the session
state are added to the scores of tracks in the input and, gated by that
state, to the sequential-rule evidence of the tracks that followed earlier
plays of the session's last few tracks anywhere in the listener's history
(:class:`~repeat_scores.RepeatScores`): repeat listening and its recency become cheap,
learned terms. With the ``"mlp"`` scorer, :class:`~candidates.CandidateScorer`
ranks the listener's own tracks instead.
"""
from __future__ import annotations

import keras

from musicrec.models.next_track.candidates import CandidateScorer
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layers import BiasLogits, LastSlots, TiedLogits, TrackEmbedding
from musicrec.models.next_track.layout import NUM_RESERVED_IDS
from musicrec.models.next_track.repeat_scores import RepeatScores


def build_model(vocab_size: int, hparams: NextTrackHParams) -> keras.Model:
    """Core model: ids ``[batch, slots]`` → next-track logits ``[batch, vocab_size + 2]``.

    ``slots`` is at most ``input_length`` (see :func:`~layout.input_layout`); training
    feeds all of them.

    Layers that hold one entry per id are named ``track_embedding`` (table
    ``[n_ids, embedding_dim]``, then the boundary vector) and ``next_track_logits`` (dense kernel
    ``[units, n_ids]`` and bias, or with tied embeddings only the bias
    ``[n_ids]``); cold start and warm start rely on those names. Logits for
    the reserved ids exist and are suppressed at serving time.
    """
    n_ids = vocab_size + NUM_RESERVED_IDS
    track_ids = keras.Input(shape=(None,), dtype="int64", name="track_ids")
    embedding = TrackEmbedding(n_ids, hparams.embedding_dim, mask_zero=True, name="track_embedding")
    rnn_steps = hparams.rnn_history_length + 1 + hparams.max_prefix_length
    embedded = embedding(LastSlots(rnn_steps, name="recurrent_slots")(track_ids))
    rnn = keras.layers.GRU if hparams.rnn == "gru" else keras.layers.LSTM
    state = rnn(hparams.lstm_units, name="session_lstm")(embedded)
    state = keras.layers.Dropout(hparams.dropout, name="session_dropout")(state)
    if not hparams.neural_scores:
        logits = BiasLogits(n_ids, hparams.track_bias, name="next_track_logits")(state)
    elif hparams.tied_embeddings:
        projected = keras.layers.Dense(hparams.embedding_dim, name="session_projection")(state)
        logits = TiedLogits(embedding, name="next_track_logits")(projected)
    else:
        logits = keras.layers.Dense(n_ids, name="next_track_logits")(state)
    if hparams.scorer == "mlp":
        logits = CandidateScorer(hparams.history_length, hparams.session_slots, hparams.repeat_history_length,
                                 hparams.successor_lags, hparams.successor_anchors, hparams.predecessor_lags,
                                 hparams.successor_recent_slots, hparams.scorer_units, hparams.scorer_context,
                                 hparams.global_successors, name="candidate_scores")([logits, track_ids, state])
    elif hparams.repeat_scores:
        logits = RepeatScores(hparams.history_length, hparams.successor_lags, hparams.successor_anchors,
                              hparams.repeat_history_length, hparams.session_slots,
                              successor_recent_slots=hparams.successor_recent_slots,
                              predecessor_lags=hparams.predecessor_lags, state_gates=hparams.state_gates,
                              name="repeat_scores")(
            [logits, track_ids, state])
    model = keras.Model(track_ids, logits, name="next_track")
    # The serving builders read the layout from here (not saved: build_model always sets it).
    model.next_track_hparams = hparams
    return model


def scoring_layer(core_model: keras.Model):
    """The layer that scores the listener's own tracks (its ``entries`` are sparse scores), or ``None``."""
    for name in ("candidate_scores", "repeat_scores"):
        try:
            return core_model.get_layer(name)
        except ValueError:
            continue
    return None


def output_embeddings(core_model: keras.Model, hparams: NextTrackHParams):
    """The output-side embedding of every id, ``[n_ids, d]`` (a tensor).

    Tied: the embedding table (``d = embedding_dim``); untied: the output
    layer's kernel, transposed (``d = lstm_units``). A track's score is this
    row dotted with the session vector, plus its bias (and the repeat term).
    """
    if hparams.tied_embeddings:
        return core_model.get_layer("track_embedding").embeddings
    return keras.ops.transpose(core_model.get_layer("next_track_logits").kernel)
