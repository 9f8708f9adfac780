"""The next-track model's embedding and logits layers, and the slice its recurrent layer reads.

Registered for Keras serialisation under ``musicrec>ClassName``: the names stay, whatever the module.
"""
from __future__ import annotations

import keras

from musicrec.models.next_track.layout import BOUNDARY_ID


@keras.saving.register_keras_serializable(package="musicrec")
class TrackEmbedding(keras.layers.Embedding):
    """An ``Embedding`` over the contract's ids plus one learned vector for the boundary id (-1).

    The table (``embeddings``, ``[n_ids, d]``) is the first weight, as in a
    plain ``Embedding``; the boundary vector ``[d]`` is the second. Id 0 is
    masked.
    """

    def build(self, input_shape=None):
        super().build(input_shape)
        self.boundary = self.add_weight(shape=(self.output_dim,), initializer="uniform", name="boundary")

    # keras.layers.Embedding saves only its table; the boundary vector is store entry "1".
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["1"] = self.boundary

    def load_own_variables(self, store):
        super().load_own_variables(store)
        self.boundary.assign(store["1"])

    def call(self, inputs):
        ids = keras.ops.cast(inputs, "int32")
        rows = super().call(keras.ops.maximum(ids, 0))
        is_boundary = keras.ops.equal(ids, BOUNDARY_ID)[..., None]
        return keras.ops.where(is_boundary, keras.ops.cast(self.boundary, rows.dtype), rows)


@keras.saving.register_keras_serializable(package="musicrec")
class TiedLogits(keras.layers.Layer):
    """Scores every id as ``state · embedding_table[id] + bias[id]`` (tied input/output embeddings).

    The table belongs to the embedding layer; this layer owns only the bias
    ``[n_ids]``. The table is reached through a closure so that Keras does not
    track (and save) it twice.
    """

    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self._table = lambda: embedding.embeddings
        self.n_ids = embedding.input_dim

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(self.n_ids,), initializer="zeros", name="bias")

    def call(self, state):
        return keras.ops.matmul(state, keras.ops.transpose(self._table())) + self.bias


@keras.saving.register_keras_serializable(package="musicrec")
class BiasLogits(keras.layers.Layer):
    """Scores every id by a learned bias alone, or 0 without one (``neural_scores`` off): the
    model then ranks the listener's own tracks by its repeat and successor terms, the rest by
    the bias (how often a track is the next play at all)."""

    def __init__(self, n_ids: int, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.n_ids = n_ids
        self.use_bias = use_bias

    def build(self, input_shape):
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.n_ids,), initializer="zeros", name="bias")

    def call(self, state):
        zeros = keras.ops.zeros((keras.ops.shape(state)[0], self.n_ids), dtype=state.dtype)
        return zeros + self.bias if self.use_bias else zeros

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_ids)

    def get_config(self):
        return {**super().get_config(), "n_ids": self.n_ids, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="musicrec")
class LastSlots(keras.layers.Layer):
    """The last ``count`` slots of ``[batch, slots]`` (the recent history, boundary and session)."""

    def __init__(self, count: int, **kwargs):
        super().__init__(**kwargs)
        self.count = count

    def call(self, ids):
        return ids[:, -self.count:]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.count)

    def get_config(self):
        return {**super().get_config(), "count": self.count}
