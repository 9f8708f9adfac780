"""The genre SavedModel's two signatures and the train/serve skew of the in-graph log-mel.

A small CRNN over the real 64-band front end is built once (untrained: the
contract and the skew do not need skill), exported the way ``run_fn``
exports, and loaded back. The skew tests compare librosa's log-mel (what
the Beam ingestion job computes) with the ``tf.signal`` one inside
``from_waveform``.
"""
from __future__ import annotations

import glob
import os

import keras
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from musicrec.models.export import export_serving_model
from musicrec.models.export_check import non_core_ops
from musicrec.models.audio_files import load_audio, track_segments
from musicrec.models.features import AudioFeatureParams, log_mel
from musicrec.models.genre.evaluate import predict_track
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.model import build_classifier, build_serving_model, new_normalization
from musicrec.models.genre.signatures import OUTPUTS, GenreSignatures
from musicrec.models.genre.waveform import SKEW_MEAN_TOLERANCE, SKEW_TOLERANCE, graph_log_mel

PARAMS = AudioFeatureParams()
LABELS = ["blues", "classical", "metal", "reggae"]
EMBEDDING_DIM = 8


def _tone_and_noise(seconds: float, seed: int) -> np.ndarray:
    """A chord plus noise with a loud and a quiet half, float32 ``[samples]`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * PARAMS.sample_rate)) / PARAMS.sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(80, 4000, size=3)) / 3
    envelope = np.where(t < seconds / 2, 0.6, 0.05)
    return (envelope * chord + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(5)
    normalization = new_normalization()
    frames = log_mel(_tone_and_noise(4.0, seed=1), PARAMS)
    normalization.adapt(frames)
    hparams = GenreHParams(architecture="crnn", conv_filters=(4, 8), lstm_units=8,
                           embedding_dim=EMBEDDING_DIM, std_pooling=True, input_statistics=True)
    classifier = build_classifier(PARAMS.n_mels, len(LABELS), hparams, normalization)
    serving_dir = str(tmp_path_factory.mktemp("genre_signatures") / "serving")
    export_serving_model(GenreSignatures(build_serving_model(classifier, LABELS), LABELS, PARAMS),
                         serving_dir, inputs={"log_mel"}, outputs=OUTPUTS)
    return serving_dir, tf.saved_model.load(serving_dir).signatures


def test_both_signatures_have_the_contracted_names_dtypes_and_shapes(exported):
    serving_dir, signatures = exported
    assert {"serving_default", "serve", "from_waveform"} <= set(signatures)
    expected_outputs = {"probabilities": (tf.float32, [None, len(LABELS)]),
                        "classes": (tf.string, [None, len(LABELS)]),
                        "genre": (tf.string, [None]),
                        "embedding": (tf.float32, [None, EMBEDDING_DIM])}
    for name, input_name, input_shape in (("serving_default", "log_mel",
                                           [None, None, None, PARAMS.n_mels]),
                                          ("from_waveform", "waveform", [None, None])):
        _, inputs = signatures[name].structured_input_signature
        assert list(inputs) == [input_name]
        assert inputs[input_name].dtype == tf.float32
        assert inputs[input_name].shape.as_list() == input_shape
        outputs = signatures[name].structured_outputs
        assert {key: (spec.dtype, spec.shape.as_list()) for key, spec in outputs.items()} == \
            expected_outputs, name
    assert non_core_ops(serving_dir) == set()


def test_serving_default_takes_any_number_of_frames_and_answers_per_track(exported):
    signature = exported[1]["serving_default"]
    for frames in (1, 40, 300):
        batch = np.random.default_rng(frames).normal(-8, 2, (2, 3, frames, PARAMS.n_mels))
        outputs = signature(log_mel=tf.constant(batch, tf.float32))
        assert outputs["probabilities"].shape == (2, len(LABELS))
        np.testing.assert_allclose(outputs["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)


def test_a_track_answer_is_the_mean_of_its_segments_and_padding_segments_change_nothing(exported):
    signature = exported[1]["serving_default"]
    segments = np.random.default_rng(7).normal(-8, 2, (3, 126, PARAMS.n_mels)).astype(np.float32)
    alone = signature(log_mel=tf.constant(segments[:, None]))          # each segment a track
    track = signature(log_mel=tf.constant(segments[None]))
    for name in ("probabilities", "embedding"):
        np.testing.assert_allclose(track[name].numpy()[0], alone[name].numpy().mean(axis=0),
                                   atol=1e-5)
    padded = np.concatenate([segments, np.zeros((2, 126, PARAMS.n_mels), np.float32)])[None]
    np.testing.assert_allclose(signature(log_mel=tf.constant(padded))["probabilities"].numpy(),
                               track["probabilities"].numpy(), atol=1e-6)


def test_from_waveform_equals_the_mean_over_librosa_segments_with_the_same_top_genre(exported, tmp_path):
    signatures = exported[1]
    waveform = _tone_and_noise(10.0, seed=2)
    path = str(tmp_path / "clip.flac")
    sf.write(path, waveform, PARAMS.sample_rate, subtype="PCM_24")
    segments = track_segments(path, PARAMS)                     # the Beam / classify path
    assert segments.shape[0] == 3
    from_log_mel = predict_track(signatures["serving_default"], segments)
    outputs = signatures["from_waveform"](waveform=tf.constant(load_audio(path, PARAMS)[None]))
    from_waveform = outputs["probabilities"].numpy()[0]
    np.testing.assert_allclose(from_waveform, from_log_mel, atol=1e-4)
    assert int(np.argmax(from_waveform)) == int(np.argmax(from_log_mel))
    assert outputs["genre"].numpy()[0].decode() == LABELS[int(np.argmax(from_log_mel))]
    assert outputs["embedding"].shape == (1, EMBEDDING_DIM)


def test_from_waveform_answers_a_batch_and_refuses_a_clip_shorter_than_one_segment(exported):
    signature = exported[1]["from_waveform"]
    batch = np.stack([_tone_and_noise(7.0, seed=3), _tone_and_noise(7.0, seed=4)])
    outputs = signature(waveform=tf.constant(batch))
    assert outputs["probabilities"].shape == (2, len(LABELS))
    with pytest.raises(tf.errors.InvalidArgumentError, match="too short"):
        signature(waveform=tf.constant(_tone_and_noise(1.0, seed=5)[None]))


def _skew(waveform: np.ndarray) -> tuple[float, float]:
    librosa_features = log_mel(waveform, PARAMS)
    graph_features = graph_log_mel(tf.constant(waveform[None]), PARAMS).numpy()[0]
    assert graph_features.shape == librosa_features.shape
    difference = np.abs(graph_features - librosa_features)
    return float(difference.max()), float(difference.mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_in_graph_log_mel_matches_librosa_on_synthetic_audio(seed):
    rng = np.random.default_rng(seed)
    for waveform in (_tone_and_noise(3.0, seed), (0.3 * rng.standard_normal(40000)).astype(np.float32),
                     np.zeros(PARAMS.n_fft + 3 * PARAMS.hop_length, np.float32)):
        largest, mean = _skew(waveform)
        assert largest <= SKEW_TOLERANCE and mean <= SKEW_MEAN_TOLERANCE


def test_in_graph_log_mel_matches_librosa_on_real_gtzan_clips(shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "gtzan_dev", "*", "*.flac")))
    if not paths:
        pytest.skip("no gtzan_dev clips in shared data")
    for path in paths[::20]:   # 3 genres
        largest, mean = _skew(load_audio(path, PARAMS))
        assert largest <= SKEW_TOLERANCE and mean <= SKEW_MEAN_TOLERANCE, path


def test_real_clip_gets_the_same_top_genre_from_both_signatures(exported, shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "gtzan_dev", "*", "*.flac")))
    if not paths:
        pytest.skip("no gtzan_dev clips in shared data")
    signatures = exported[1]
    from_log_mel = predict_track(signatures["serving_default"], track_segments(paths[0], PARAMS))
    outputs = signatures["from_waveform"](waveform=tf.constant(load_audio(paths[0], PARAMS)[None]))
    np.testing.assert_allclose(outputs["probabilities"].numpy()[0], from_log_mel, atol=1e-4)
    assert int(np.argmax(outputs["probabilities"].numpy()[0])) == int(np.argmax(from_log_mel))


def test_signatures_refuse_feature_parameters_that_differ_from_the_model(exported):
    normalization = new_normalization()
    normalization.adapt(np.zeros((4, 16), np.float32))
    classifier = build_classifier(16, 2, GenreHParams(lstm_units=4, embedding_dim=4), normalization)
    with pytest.raises(ValueError, match="16 mel bands"):
        GenreSignatures(build_serving_model(classifier, ["a", "b"]), ["a", "b"], PARAMS)
