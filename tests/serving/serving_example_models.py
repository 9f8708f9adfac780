"""Tiny SavedModels for the serving contract: tf.Example signatures and an int32 input."""
from __future__ import annotations

import tensorflow as tf


def export_examples_model(export_dir: str) -> None:
    """Signatures on serialized tf.Examples with float "x" [3], as TF2 exports them (predict method name):
    ``serving_default`` → classes, scores [n, 2]; ``regress`` → outputs [n] (the sum of x)."""
    spec = tf.TensorSpec([None], tf.string, name="inputs")

    class Examples(tf.Module):
        @tf.function(input_signature=[spec])
        def classify(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([3], tf.float32)})["x"]
            loud = tf.sigmoid(tf.reduce_sum(x, axis=1))
            classes = tf.tile(tf.constant([[b"calm", b"loud"]]), [tf.shape(inputs)[0], 1])
            return {"classes": classes, "scores": tf.stack([1.0 - loud, loud], axis=1)}

        @tf.function(input_signature=[spec])
        def regress(self, inputs):
            x = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([3], tf.float32)})["x"]
            return {"outputs": tf.reduce_sum(x, axis=1)}

    module = Examples()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.classify,
                                                        "regress": module.regress})


def export_ints(export_dir: str) -> None:
    """int32 "k" [n] → int32 "doubled" [n]."""
    class Ints(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="k")])
        def double(self, k):
            return {"doubled": k * 2}

    module = Ints()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.double})
