"""The genre SavedModel's two signatures, written with a Keras ``ExportArchive``.

- ``serving_default`` (also ``serve``, as ``model.export()`` writes it):
  ``log_mel`` float32 ``[batch, frames, n_mels]``, frames variable: one
  row per segment, as :func:`musicrec.models.features.track_segments` cuts
  them (padding frames of :data:`PADDING_VALUE` are masked).
- ``from_waveform``: ``waveform`` float32 ``[batch, samples]`` at the
  configured sample rate, one clip per row. The graph computes the log-mel
  with ``tf.signal`` (:mod:`musicrec.models.genre.waveform`), cuts it into
  the same segments and averages the segments' probabilities and
  embeddings per clip, as the evaluator and ``musicrec classify`` do.
  Rows of one batch share a length: pad shorter clips by repeating them,
  not with zeros, since zeros are silence and would count as audio.

Both return ``probabilities`` float32 ``[batch, n_genres]``, ``classes``
string ``[batch, n_genres]``, ``genre`` string ``[batch]`` and
``embedding`` float32 ``[batch, embedding_dim]``, with core TensorFlow ops
only.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.model import LabelNames
from musicrec.models.genre.waveform import graph_log_mel, graph_segments

LOG_MEL_SIGNATURE = "serving_default"
WAVEFORM_SIGNATURE = "from_waveform"
LOG_MEL_INPUT = "log_mel"
WAVEFORM_INPUT = "waveform"
OUTPUTS = frozenset({"probabilities", "classes", "genre", "embedding"})


class GenreSignatures:
    """A serving model plus its front end, exportable by ``models.export.export_serving_model``.

    It offers what that function uses of a ``keras.Model`` (``name`` and
    ``export(path, format, verbose)``), so the genre model gets the same
    staging folder, signature check and atomic rename as every other
    model, with a second signature added.

    Args:
        serving_model: from :func:`musicrec.models.genre.model.build_serving_model`.
        labels: genre names, index = class id.
        params: the feature parameters the model was trained with.
    """

    def __init__(self, serving_model: keras.Model, labels: list[str], params: AudioFeatureParams):
        n_mels = serving_model.inputs[0].shape[-1]
        if n_mels != params.n_mels:
            raise ValueError(f"the model reads {n_mels} mel bands, the feature parameters "
                             f"give {params.n_mels}")
        self.serving_model = serving_model
        self.params = params
        self.name = serving_model.name
        self._label_names = LabelNames(labels, name="clip_label_names")

    def log_mel_outputs(self, log_mel: tf.Tensor) -> dict[str, tf.Tensor]:
        """The ``serving_default`` computation: ``log_mel`` ``[batch, frames, n_mels]``."""
        return self.serving_model(log_mel, training=False)

    def waveform_outputs(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        """The ``from_waveform`` computation: ``waveform`` ``[batch, samples]``, one clip per row."""
        segments = graph_segments(graph_log_mel(waveform, self.params), self.params)
        shape = tf.shape(segments)
        clips, per_clip = shape[0], shape[1]
        flat = tf.reshape(segments, [clips * per_clip, shape[2], self.params.n_mels])
        outputs = self.serving_model(flat, training=False)

        def clip_mean(values: tf.Tensor) -> tf.Tensor:
            # The static width keeps the signature's output shapes [batch, n] rather than [batch, None].
            return tf.reduce_mean(tf.reshape(values, [clips, per_clip, values.shape[-1]]), axis=1)

        probabilities = clip_mean(outputs["probabilities"])
        names = self._label_names(probabilities)
        return {"probabilities": probabilities, "classes": names["classes"],
                "genre": names["genre"], "embedding": clip_mean(outputs["embedding"])}

    def export(self, filepath: str, format: str = "tf_saved_model", verbose: bool = False) -> None:
        """Writes the SavedModel with ``serve``, ``serving_default`` and ``from_waveform``."""
        if format != "tf_saved_model":
            raise ValueError(f"GenreSignatures exports tf_saved_model only, not {format!r}")
        archive = keras.export.ExportArchive()
        archive.track(self.serving_model)
        log_mel_spec = tf.TensorSpec([None, None, self.params.n_mels], tf.float32,
                                     name=LOG_MEL_INPUT)
        waveform_spec = tf.TensorSpec([None, None], tf.float32, name=WAVEFORM_INPUT)

        def serve(log_mel):
            return self.log_mel_outputs(log_mel)

        def from_waveform(waveform):
            return self.waveform_outputs(waveform)

        # The first endpoint also becomes serving_default (ExportArchive.write_out).
        archive.add_endpoint("serve", serve, input_signature=[log_mel_spec])
        archive.add_endpoint(WAVEFORM_SIGNATURE, from_waveform, input_signature=[waveform_spec])
        archive.write_out(filepath, verbose=verbose)


def check_waveform_signature(saved_model_dir: str) -> None:
    """Raises ``RuntimeError`` unless ``from_waveform`` takes ``waveform`` and returns :data:`OUTPUTS`."""
    signatures = tf.saved_model.load(saved_model_dir).signatures
    if WAVEFORM_SIGNATURE not in signatures:
        raise RuntimeError(f"no {WAVEFORM_SIGNATURE} signature in {saved_model_dir}")
    signature = signatures[WAVEFORM_SIGNATURE]
    inputs = set(signature.structured_input_signature[1])
    outputs = set(signature.structured_outputs)
    if inputs != {WAVEFORM_INPUT} or outputs != set(OUTPUTS):
        raise RuntimeError(f"{WAVEFORM_SIGNATURE} takes {sorted(inputs)} and returns "
                           f"{sorted(outputs)}; the contract is [{WAVEFORM_INPUT}] -> {sorted(OUTPUTS)}")


__all__ = ["GenreSignatures", "check_waveform_signature", "LOG_MEL_SIGNATURE", "WAVEFORM_SIGNATURE",
           "LOG_MEL_INPUT", "WAVEFORM_INPUT", "OUTPUTS"]
