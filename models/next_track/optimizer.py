"""Adam that leaves untouched rows alone: per-track tables cost what a batch touches, not the catalogue.

Keras' Adam and its global-norm clipping turn a sparse gradient (``tf.IndexedSlices``,
what a gather from the track table produces) into a dense one, so every step
rewrites the whole ``[n_ids, d]`` table and both its moment slots: with
100 000s of tracks that is most of a step's time. :class:`LazyAdam` clips by
the global norm without densifying and updates only the rows a gradient
names, with their own moments (the "lazy Adam" of TensorFlow Addons): a row's
moments decay only when the row is used. Dense gradients get plain Adam.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def _deduplicated(gradient: tf.IndexedSlices) -> tf.IndexedSlices:
    """One slice per row, the duplicates' values summed."""
    rows, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
    return tf.IndexedSlices(values, rows, gradient.dense_shape)


@keras.saving.register_keras_serializable(package="musicrec")
class LazyAdam(keras.optimizers.Adam):
    """:class:`keras.optimizers.Adam` with sparse updates and sparse global-norm clipping."""

    def _clip_gradients(self, grads):
        if not (self.global_clipnorm and self.global_clipnorm > 0):
            return super()._clip_gradients(grads)
        grads = [_deduplicated(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        norm = tf.linalg.global_norm([g for g in grads if g is not None])
        scale = self.global_clipnorm / tf.maximum(norm, self.global_clipnorm)
        return [None if g is None else
                tf.IndexedSlices(g.values * scale, g.indices, g.dense_shape) if isinstance(g, tf.IndexedSlices)
                else g * scale for g in grads]

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        if not (self.global_clipnorm and self.global_clipnorm > 0):
            gradient = _deduplicated(gradient)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = tf.cast(learning_rate, dtype) * tf.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        rows, values = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m.value, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v.value, rows) + (1 - beta_2) * tf.square(values)
        self.assign(m, tf.IndexedSlices(m_rows, rows))
        self.assign(v, tf.IndexedSlices(v_rows, rows))
        self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
