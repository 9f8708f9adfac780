"""The exported ``next_track`` SavedModel: its signatures, built from weights and a vocabulary.

Signatures (names, dtypes and shapes are the contract in docs/architecture.md):

- ``serving_default``: ``track_keys`` string ``[batch, length]`` (right-padded
  with ``""``) → ``track_keys`` string ``[batch, k]`` and ``scores`` float32
  ``[batch, k]`` (softmax probabilities, best first, ``k`` fixed at export).
  No history, nothing excluded: what existing clients send.
- ``recommend``: ``track_keys`` string ``[batch, length]``, ``history_keys``
  string ``[batch, history]`` (the listener's earlier plays, oldest first,
  right-padded; all ``""`` or width 0 for none), ``k`` int32 ``[batch]`` and
  ``exclude_seen`` bool ``[batch]`` → ``track_keys`` ``[batch, K]`` and
  ``scores`` ``[batch, K]`` with ``K = min(max(k), catalogue size)``; a row
  asking for fewer than ``K`` gets ``""`` and score 0 after its own ``k``.
  ``exclude_seen`` drops the tracks of that row's session and history. Every
  input is required (TF Serving has no optional inputs); ``k`` and
  ``exclude_seen`` have a batch dimension so that server-side batching can
  concatenate requests.
- ``track_embeddings``: ``track_keys`` string ``[n]`` → ``embedding`` float32
  ``[n, d]``, the output-side embedding each track is ranked by (the tied
  table, or the output kernel); unknown keys and ``""`` get zeros.

Every signature uses core TensorFlow ops only. :func:`export_saved_model`
builds all three from a core model and its vocabulary, so a model whose
vocabulary grew (cold start) is exported the same way.
"""
from __future__ import annotations

import logging
from typing import Sequence

import keras
import tensorflow as tf

from musicrec.models.export import check_signature, export_staged
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import NUM_RESERVED_IDS, PADDING_ID, input_layout, make_track_lookup
from musicrec.models.next_track.model import output_embeddings

logger = logging.getLogger(__name__)

SIGNATURE_INPUTS = {"track_keys"}
SIGNATURE_OUTPUTS = {"track_keys", "scores"}
RECOMMEND_INPUTS = {"track_keys", "history_keys", "k", "exclude_seen"}
EMBEDDING_OUTPUTS = {"embedding"}
MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="musicrec")
class InputLayout(keras.layers.Layer):
    """Right-padded history and session ids → the core model's fixed layout (see ``layout.input_layout``)."""

    def __init__(self, hparams: NextTrackHParams, **kwargs):
        super().__init__(**kwargs)
        self.hparams = hparams

    def call(self, history_ids, session_ids):
        return input_layout(history_ids, session_ids, self.hparams)


def top_probabilities(logits, k):
    """The ``k`` best ids of ``logits`` ``[batch, n_ids]`` and their softmax probabilities, best first.

    Top-k runs on the logits and only the ``k`` winners are exponentiated:
    one pass over the catalogue fewer than a softmax followed by top-k.
    """
    best_logits, ids = tf.math.top_k(logits, k=k, sorted=True)
    return tf.exp(best_logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)), ids


class NextTrackServer(keras.layers.Layer):
    """Holds the core model and the key ↔ id lookups; its methods are the signatures' bodies."""

    def __init__(self, core_model: keras.Model, vocabulary: Sequence[str], hparams: NextTrackHParams,
                 **kwargs):
        super().__init__(**kwargs)
        self.core_model = core_model
        self.hparams = hparams
        self.n_tracks = len(vocabulary)
        self.to_ids = make_track_lookup(vocabulary, name="track_key_to_id")
        self.to_keys = make_track_lookup(vocabulary, invert=True, name="track_id_to_key")
        self.layout = InputLayout(hparams, name="input_layout")
        self.built = True  # no weights of its own; ExportArchive.track wants a built layer

    def logits(self, track_keys, history_keys):
        """Scores ``[batch, n_ids]`` with the reserved ids (padding, OOV) pushed to the bottom."""
        session_ids = self.to_ids(track_keys)
        history_ids = self.to_ids(history_keys)
        logits = self.core_model(self.layout(history_ids, session_ids), training=False)
        reserved = tf.range(tf.shape(logits)[1]) < NUM_RESERVED_IDS
        return tf.where(reserved[None, :], tf.cast(MASKED_LOGIT, logits.dtype), logits), \
            session_ids, history_ids

    def serving_default(self, track_keys):
        history = tf.zeros([tf.shape(track_keys)[0], 0], tf.string)
        logits, _, _ = self.logits(track_keys, history)
        scores, ids = top_probabilities(logits, min(self.hparams.top_k, self.n_tracks))
        return {"track_keys": self.to_keys(ids), "scores": scores}

    def recommend(self, track_keys, history_keys, k, exclude_seen):
        logits, session_ids, history_ids = self.logits(track_keys, history_keys)
        seen = tf.concat([session_ids, history_ids], axis=1)
        batch = tf.shape(seen)[0]
        rows = tf.broadcast_to(tf.range(batch, dtype=seen.dtype)[:, None], tf.shape(seen))
        excluded = tf.logical_and(exclude_seen[:, None], tf.not_equal(seen, PADDING_ID))
        # Scatter-min the masked value onto the seen ids of rows that asked for it: O(batch × plays).
        indices = tf.boolean_mask(tf.stack([rows, seen], axis=-1), excluded)
        masked = tf.fill(tf.shape(indices)[:1], tf.cast(MASKED_LOGIT, logits.dtype))
        logits = tf.tensor_scatter_nd_min(logits, indices, masked)
        top = tf.clip_by_value(tf.reduce_max(k), 1, self.n_tracks)
        scores, ids = top_probabilities(logits, top)
        within = tf.range(top)[None, :] < k[:, None]
        keys = tf.where(within, self.to_keys(ids), tf.constant("", tf.string))
        return {"track_keys": keys, "scores": tf.where(within, scores, tf.zeros_like(scores))}

    def track_embeddings(self, track_keys):
        ids = self.to_ids(track_keys)
        table = tf.convert_to_tensor(output_embeddings(self.core_model, self.hparams))
        rows = tf.gather(table, ids)
        known = ids >= NUM_RESERVED_IDS
        return {"embedding": tf.where(known[:, None], rows, tf.zeros_like(rows))}


def build_archive(core_model: keras.Model, vocabulary: Sequence[str],
                  hparams: NextTrackHParams) -> keras.export.ExportArchive:
    """An ExportArchive with the three signatures of ``core_model`` over ``vocabulary``."""
    server = NextTrackServer(core_model, vocabulary, hparams)
    archive = keras.export.ExportArchive()
    archive.track(server)
    keys_2d = tf.TensorSpec([None, None], tf.string, name="track_keys")
    archive.add_endpoint("serving_default", server.serving_default, input_signature=[keys_2d])
    archive.add_endpoint(
        "recommend", server.recommend,
        input_signature=[keys_2d, tf.TensorSpec([None, None], tf.string, name="history_keys"),
                         tf.TensorSpec([None], tf.int32, name="k"),
                         tf.TensorSpec([None], tf.bool, name="exclude_seen")])
    archive.add_endpoint("track_embeddings", server.track_embeddings,
                         input_signature=[tf.TensorSpec([None], tf.string, name="track_keys")])
    return archive


def check_signatures(saved_model_dir: str) -> None:
    """Raises ``RuntimeError`` unless the three signatures take and return the contract's names."""
    check_signature(saved_model_dir, SIGNATURE_INPUTS, SIGNATURE_OUTPUTS)
    signatures = tf.saved_model.load(saved_model_dir).signatures
    for name, inputs, outputs in (("recommend", RECOMMEND_INPUTS, SIGNATURE_OUTPUTS),
                                  ("track_embeddings", {"track_keys"}, EMBEDDING_OUTPUTS)):
        found_in = set(signatures[name].structured_input_signature[1])
        found_out = set(signatures[name].structured_outputs)
        if found_in != inputs or found_out != outputs:
            raise RuntimeError(f"signature {name} takes {sorted(found_in)} and returns "
                               f"{sorted(found_out)}; the contract is {sorted(inputs)} -> {sorted(outputs)}")


def export_saved_model(core_model: keras.Model, vocabulary: Sequence[str], hparams: NextTrackHParams,
                       serving_dir: str) -> None:
    """Exports ``core_model`` with every signature to ``serving_dir``: staging folder, check, rename.

    Args:
        core_model: :func:`model.build_model`'s model over ``len(vocabulary)`` tracks.
        vocabulary: track keys in id order (id ``2 + i`` is ``vocabulary[i]``).
        hparams: the model's hyperparameters (layout, ``top_k``).
        serving_dir: the SavedModel folder; replaced only when the export passes the check.

    Raises:
        RuntimeError: a signature breaks the contract; ``serving_dir`` is left as it was.
    """
    export_staged(lambda path: build_archive(core_model, vocabulary, hparams).write_out(path, verbose=False),
                  check_signatures, serving_dir)
    logger.info("exported next_track (%d tracks) to %s", len(vocabulary), serving_dir)


@keras.saving.register_keras_serializable(package="musicrec")
class SessionOnlyLayout(keras.layers.Layer):
    """Session ids ``[batch, length]`` → the core model's layout with an empty history."""

    def __init__(self, hparams: NextTrackHParams, **kwargs):
        super().__init__(**kwargs)
        self.hparams = hparams

    def call(self, session_ids):
        history = keras.ops.zeros((keras.ops.shape(session_ids)[0], 0), dtype=session_ids.dtype)
        return input_layout(history, session_ids, self.hparams)


@keras.saving.register_keras_serializable(package="musicrec")
class SuppressReservedIds(keras.layers.Layer):
    """Sets the logits of the reserved ids (padding, OOV) to a large negative value."""

    def call(self, logits):
        reserved = keras.ops.arange(keras.ops.shape(logits)[-1]) < NUM_RESERVED_IDS
        return keras.ops.where(reserved[None, :], keras.ops.cast(MASKED_LOGIT, logits.dtype), logits)


@keras.saving.register_keras_serializable(package="musicrec")
class TopK(keras.layers.Layer):
    """Best ``k`` values and their indices along the last axis, best first."""

    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def call(self, values):
        return keras.ops.top_k(values, k=self.k, sorted=True)


def build_serving_model(core_model: keras.Model, vocabulary: Sequence[str], top_k: int,
                        hparams: NextTrackHParams | None = None) -> keras.Model:
    """A functional Keras model with only the ``serving_default`` signature's computation.

    Kept for callers that export with ``models.export.export_serving_model``;
    :func:`export_saved_model` exports every signature and is preferred.
    ``hparams`` defaults to the ones :func:`model.build_model` attached.
    """
    hparams = hparams or core_model.next_track_hparams
    k = min(top_k, len(vocabulary))
    track_keys = keras.Input(shape=(None,), dtype="string", name="track_keys")
    track_ids = make_track_lookup(vocabulary, name="track_key_to_id")(track_keys)
    logits = core_model(SessionOnlyLayout(hparams, name="session_layout")(track_ids))
    logits = SuppressReservedIds(name="suppress_reserved_ids")(logits)
    probabilities = keras.layers.Softmax(name="next_track_probabilities")(logits)
    scores, best_ids = TopK(k, name="top_k")(probabilities)
    best_keys = make_track_lookup(vocabulary, invert=True, name="track_id_to_key")(best_ids)
    return keras.Model(track_keys, {"track_keys": best_keys, "scores": scores},
                       name="next_track_serving")
