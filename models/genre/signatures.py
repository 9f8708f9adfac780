"""The genre SavedModel's signatures and stored feature parameters, written with a Keras ``ExportArchive``.

Both signatures answer per **track** (one row per track or clip):

- ``serving_default`` (also ``serve``): ``log_mel`` float32 ``[batch,
  segments, frames, n_mels]``: each row a track's log-mel segments, as
  ingestion (:func:`musicrec.models.audio_files.track_segments`) cuts them with
  the model's feature parameters. A track with fewer segments than the
  longest of its batch is padded with segments whose every value is
  :data:`PADDING_VALUE`; they are left out (a row with no other segment keeps
  them all, so it still gets an answer). ``frames`` is fixed for the
  pretrained front end (187) and free for the log-mel models, which mask
  padding frames inside a segment.
- ``from_waveform``: ``waveform`` float32 ``[batch, samples]`` at
  :data:`WAVEFORM_SAMPLE_RATE` (22 050 Hz) whatever rate the model's features
  use: the graph resamples, computes the log-mel with ``tf.signal``
  (:mod:`musicrec.models.genre.waveform`) and cuts the segments, then answers
  as ``serving_default`` does. Rows of one batch share a length: pad shorter
  clips by repeating them, not with zeros, since zeros are silence and would
  count as audio. A waveform shorter than one segment is refused
  (``INVALID_ARGUMENT``, "too short: ..."), as ingestion refuses such a file.

Both return ``probabilities`` float32 ``[batch, n_genres]``, ``classes``
string ``[batch, n_genres]``, ``genre`` string ``[batch]`` and ``embedding``
float32 ``[batch, embedding_dim]``, with core TensorFlow ops only. How a
track's segments become one answer is the front end's: the log-mel models
average their segments' probabilities and embeddings
(:class:`SegmentMeanModel`); the pretrained front end's clip head reads the
sequence of patch embeddings (:class:`PretrainedClipModel`).

The feature parameters travel with the model: ``assets.extra/``
:data:`FEATURES_ASSET` (:func:`read_model_features`), which batch jobs and
evaluators read instead of a config that may have changed since training.
"""
from __future__ import annotations

import json
import os
from typing import Any

import keras
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.layers import PADDING_VALUE, LabelNames
from musicrec.models.genre.waveform import (WAVEFORM_SAMPLE_RATE, graph_log_mel, graph_resample,
                                            graph_segments)

LOG_MEL_SIGNATURE = "serving_default"
WAVEFORM_SIGNATURE = "from_waveform"
LOG_MEL_INPUT = "log_mel"
WAVEFORM_INPUT = "waveform"
OUTPUTS = frozenset({"probabilities", "classes", "genre", "embedding"})
ASSETS_EXTRA = "assets.extra"
FEATURES_ASSET = "genre_features.json"


def segment_mask(segments: tf.Tensor) -> tf.Tensor:
    """bool ``[batch, segments]``: False on padding segments (every value :data:`PADDING_VALUE`).

    A row whose every segment looks like padding keeps them all.
    """
    real = tf.reduce_any(tf.not_equal(segments, PADDING_VALUE), axis=[2, 3])
    return tf.logical_or(real, tf.logical_not(tf.reduce_any(real, axis=1, keepdims=True)))


def _masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of ``[batch, segments, width]`` where ``mask`` ``[batch, segments]`` holds."""
    keep = tf.cast(mask, values.dtype)[..., None]
    return tf.reduce_sum(values * keep, axis=1) / tf.maximum(tf.reduce_sum(keep, axis=1), 1.0)


class SegmentMeanModel:
    """A log-mel segment classifier answering per track: the mean over its segments.

    Args:
        serving_model: from :func:`musicrec.models.genre.model.build_serving_model`,
            ``[segments, frames, n_mels]`` to per-segment outputs.
    """

    def __init__(self, serving_model: keras.Model):
        self.serving_model = serving_model
        self.name = serving_model.name
        self.n_mels = serving_model.inputs[0].shape[-1]
        self.patch_frames = None
        self.trackables = [serving_model]

    def __call__(self, segments: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.shape(segments)
        flat = tf.reshape(segments, [shape[0] * shape[1], shape[2], self.n_mels])
        outputs = self.serving_model(flat, training=False)

        def per_track(values: tf.Tensor) -> tf.Tensor:
            # The static width keeps the signature's output shapes [batch, n], not [batch, None].
            return _masked_mean(tf.reshape(values, [shape[0], shape[1], values.shape[-1]]), mask)

        return per_track(outputs["probabilities"]), per_track(outputs["embedding"])


class PretrainedClipModel:
    """The pretrained front end and its clip head, answering per track.

    Only real segments go through the front end (padding segments of a batch
    would cost as much as real ones); their patch features are scattered back
    into ``[batch, segments, width]`` for the head, which masks the rest.

    Args:
        frontend: ``[patches, frames, n_mels]`` to ``[patches, width]``
            (:class:`~musicrec.models.genre.musicnn.MusicnnFrontEnd`, and the
            penultimate block unless the head holds it).
        head: :func:`musicrec.models.genre.pretrained.build_clip_head`'s model.
        n_mels, patch_frames: the segments' shape.
    """

    def __init__(self, frontend: keras.Model, head: keras.Model, n_mels: int, patch_frames: int):
        self.frontend, self.head = frontend, head
        self.name = head.name
        self.n_mels, self.patch_frames = n_mels, patch_frames
        self.width = int(head.inputs[0].shape[-1])
        self.trackables = [frontend, head]

    def __call__(self, segments: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        shape = tf.shape(segments)
        flat = tf.reshape(segments, [shape[0] * shape[1], self.patch_frames, self.n_mels])
        flat_mask = tf.reshape(mask, [-1])
        real = tf.boolean_mask(flat, flat_mask)
        features = self.frontend(real, training=False)
        positions = tf.where(flat_mask)
        scattered = tf.scatter_nd(positions, features,
                                  tf.cast(tf.stack([tf.size(flat_mask), self.width]), tf.int64))
        patch_features = tf.reshape(scattered, [shape[0], shape[1], self.width])
        probabilities, embedding = self.head({"patch_features": patch_features, "patch_mask": mask},
                                             training=False)
        return probabilities, embedding


class GenreSignatures:
    """A track model plus its feature parameters, exportable by ``models.export.export_serving_model``.

    It offers what that function uses of a ``keras.Model`` (``name`` and
    ``export(path, format, verbose)``), so the genre model gets the same
    staging folder, signature check and atomic rename as every other
    model, with ``from_waveform`` and ``assets.extra/`` added.

    Args:
        model: a :class:`SegmentMeanModel` or :class:`PretrainedClipModel`; a
            ``keras.Model`` from ``build_serving_model`` is wrapped in a
            :class:`SegmentMeanModel`.
        labels: genre names, index = class id.
        params: the feature parameters the model was trained with.
        frontend: ``genre_model.frontend`` (recorded in the asset).
    """

    def __init__(self, model: Any, labels: list[str], params: AudioFeatureParams,
                 frontend: str = "log_mel"):
        if isinstance(model, keras.Model):
            model = SegmentMeanModel(model)
        if model.n_mels != params.n_mels:
            raise ValueError(f"the model reads {model.n_mels} mel bands, the feature parameters "
                             f"give {params.n_mels}")
        self.model = model
        self.params = params
        self.frontend = frontend
        self.name = model.name
        self._label_names = LabelNames(labels, name="clip_label_names")

    def _outputs(self, segments: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities, embedding = self.model(segments, mask)
        names = self._label_names(probabilities)
        return {"probabilities": probabilities, "classes": names["classes"],
                "genre": names["genre"], "embedding": embedding}

    def log_mel_outputs(self, log_mel: tf.Tensor) -> dict[str, tf.Tensor]:
        """The ``serving_default`` computation: ``log_mel`` ``[batch, segments, frames, n_mels]``."""
        return self._outputs(log_mel, segment_mask(log_mel))

    def waveform_outputs(self, waveform: tf.Tensor) -> dict[str, tf.Tensor]:
        """The ``from_waveform`` computation: ``waveform`` ``[batch, samples]`` at 22 050 Hz.

        A waveform shorter than one segment is refused (``InvalidArgumentError``
        whose message starts with ``too short``), as ingestion refuses such a file.
        """
        resampled = graph_resample(waveform, WAVEFORM_SAMPLE_RATE, self.params.sample_rate)
        log_mel = graph_log_mel(resampled, self.params)
        tf.debugging.assert_greater_equal(
            tf.shape(log_mel)[1], self.params.frames_per_segment,
            message=f"too short: the waveform is shorter than one {self.params.segment_seconds} s "
                    f"segment of this model")
        segments = graph_segments(log_mel, self.params)
        mask = tf.ones(tf.shape(segments)[:2], dtype=tf.bool)
        return self._outputs(segments, mask)

    def export(self, filepath: str, format: str = "tf_saved_model", verbose: bool = False) -> None:
        """Writes the SavedModel (``serve``, ``serving_default``, ``from_waveform``) and its asset."""
        if format != "tf_saved_model":
            raise ValueError(f"GenreSignatures exports tf_saved_model only, not {format!r}")
        archive = keras.export.ExportArchive()
        for trackable in self.model.trackables:
            archive.track(trackable)
        log_mel_spec = tf.TensorSpec([None, None, self.model.patch_frames, self.params.n_mels],
                                     tf.float32, name=LOG_MEL_INPUT)
        waveform_spec = tf.TensorSpec([None, None], tf.float32, name=WAVEFORM_INPUT)

        def serve(log_mel):
            return self.log_mel_outputs(log_mel)

        def from_waveform(waveform):
            return self.waveform_outputs(waveform)

        # The first endpoint also becomes serving_default (ExportArchive.write_out).
        archive.add_endpoint("serve", serve, input_signature=[log_mel_spec])
        archive.add_endpoint(WAVEFORM_SIGNATURE, from_waveform, input_signature=[waveform_spec])
        archive.write_out(filepath, verbose=verbose)
        write_model_features(filepath, self.frontend, self.params, self.model.patch_frames)


def write_model_features(saved_model_dir: str, frontend: str, params: AudioFeatureParams,
                         patch_frames: int | None = None) -> str:
    """Writes ``assets.extra/genre_features.json`` into a genre SavedModel; returns its path.

    It holds ``frontend``, ``feature_params`` (every field of
    :class:`AudioFeatureParams`), ``waveform_sample_rate`` (what
    ``from_waveform`` takes) and the ``serving_default`` input's name, shape
    (``patch_frames`` fixed, or ``null``) and padding value.
    """
    record = {
        "frontend": frontend,
        "feature_params": params.to_dict(),
        "waveform_sample_rate": WAVEFORM_SAMPLE_RATE,
        LOG_MEL_SIGNATURE: {"input": LOG_MEL_INPUT,
                            "shape": [None, None, patch_frames, params.n_mels],
                            "padding_value": PADDING_VALUE},
    }
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, FEATURES_ASSET)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json_atomic(path, record)
    return path


class ModelFeaturesMissing(FileNotFoundError):
    """A genre SavedModel without ``assets.extra/genre_features.json`` (exported before it existed)."""


def read_model_features(saved_model_dir: str) -> tuple[str, AudioFeatureParams]:
    """``(frontend, feature parameters)`` a genre SavedModel was trained with, from its asset.

    Raises:
        ModelFeaturesMissing: the model has no such asset: it predates stored
            feature parameters (and the ``[batch, segments, frames, n_mels]``
            contract); retrain it.
    """
    path = os.path.join(saved_model_dir, ASSETS_EXTRA, FEATURES_ASSET)
    if not tf.io.gfile.exists(path):
        raise ModelFeaturesMissing(
            f"{saved_model_dir} has no {ASSETS_EXTRA}/{FEATURES_ASSET}: a genre model exported "
            "before the feature parameters travelled with it; retrain it with this musicrec")
    with tf.io.gfile.GFile(path) as handle:
        record = json.load(handle)
    return record["frontend"], AudioFeatureParams.from_dict(record["feature_params"])


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


__all__ = ["GenreSignatures", "SegmentMeanModel", "PretrainedClipModel", "segment_mask",
           "check_waveform_signature", "read_model_features", "write_model_features",
           "ModelFeaturesMissing",
           "LOG_MEL_SIGNATURE", "WAVEFORM_SIGNATURE", "LOG_MEL_INPUT", "WAVEFORM_INPUT", "OUTPUTS",
           "ASSETS_EXTRA", "FEATURES_ASSET", "WAVEFORM_SAMPLE_RATE"]
