"""The pretrained front end: numerics against the checkpoint's own graph, its features, its export.

The reference is the TF1 graph stored in the musicnn wheel (``.meta``),
frozen with the checkpoint's values and run in a TF1 session: musicnn's
Python code is never imported. The exported model is a clip head trained for
a few epochs on two synthetic "genres" (the contract, not skill, is tested).
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from musicrec.models import audio_files, features
from musicrec.models.export import export_serving_model
from musicrec.models.export_check import non_core_ops
from musicrec.models.genre import musicnn
from musicrec.models.genre.evaluate import predict_track, predict_tracks
from musicrec.models.genre.pretrained import PretrainedHParams
from musicrec.models.genre.signatures import (OUTPUTS, GenreSignatures, PretrainedClipModel,
                                              read_model_features)
from musicrec.models.genre.train_pretrained import fit_head, frontend_models
from musicrec.models.genre.waveform import graph_log_mel, graph_resample
from musicrec.pipeline.config import ConfigError, feature_params, make_config

PARAMS = musicnn.FEATURE_PARAMS
LABELS = ["drone", "pulse"]
# The checkpoint graph's tensors: input patches, the is-training flag, penultimate, pooled.
GRAPH_INPUT, GRAPH_TRAINING = "model/Placeholder:0", "model/Placeholder_2:0"
GRAPH_PENULTIMATE = "model/batch_normalization_10/batchnorm/add_1"
GRAPH_POOLED = "model/concat_2"


def _checkpoint_graph_outputs(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(penultimate, pooled)`` of the wheel's own TF1 graph, frozen with the checkpoint values."""
    from tensorflow.core.framework import graph_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    prefix = musicnn.checkpoint_prefix()
    meta = meta_graph_pb2.MetaGraphDef()
    with open(prefix + ".meta", "rb") as handle:
        meta.ParseFromString(handle.read())
    needed = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def,
                                                       [GRAPH_PENULTIMATE, GRAPH_POOLED])
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    frozen = graph_pb2.GraphDef()
    for node in needed.node:
        copy = frozen.node.add()
        if node.op == "VariableV2":
            copy.name, copy.op = node.name, "Const"
            copy.attr["dtype"].type = node.attr["dtype"].type
            copy.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(reader.get_tensor(node.name)))
        else:
            copy.CopyFrom(node)
            copy.attr.pop("_output_shapes", None)   # TF 1.12's, which 2.17's importer rejects
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(frozen, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        penultimate, pooled = session.run([GRAPH_PENULTIMATE + ":0", GRAPH_POOLED + ":0"],
                                          {GRAPH_INPUT: patches, GRAPH_TRAINING: False})
    return penultimate, pooled.reshape(len(patches), -1)   # [n, 753, 2] → [max_0, mean_0, ...]


def test_the_rebuilt_front_end_matches_the_checkpoints_own_graph():
    patches = np.random.default_rng(0).uniform(0.0, 3.0, (3, 187, 96)).astype(np.float32)
    reference_penultimate, reference_pooled = _checkpoint_graph_outputs(patches)
    embedder, _ = frontend_models(PretrainedHParams(linear_share=0.0))
    pooler, _ = frontend_models(PretrainedHParams(finetune_penultimate=True))
    penultimate = np.asarray(embedder(patches))
    pooled = np.asarray(pooler(patches))
    assert penultimate.shape == (3, musicnn.PENULTIMATE_WIDTH)
    assert np.abs(reference_penultimate).max() > 1.0          # a live signal, not zeros
    np.testing.assert_allclose(penultimate, reference_penultimate, atol=1e-5)
    np.testing.assert_allclose(pooled, reference_pooled, atol=2e-4, rtol=1e-5)
    # Changing one patch changes its embedding only.
    moved = patches.copy()
    moved[1] += 0.5
    again = np.asarray(embedder(moved))
    np.testing.assert_allclose(again[[0, 2]], penultimate[[0, 2]], atol=1e-6)
    assert np.abs(again[1] - penultimate[1]).max() > 1e-2


def test_the_front_end_weights_are_frozen_unless_the_last_block_is_fine_tuned():
    embedder, head_part = frontend_models(PretrainedHParams(linear_share=0.0))
    assert embedder.trainable_weights == [] and head_part is None
    assert embedder.outputs[0].shape[-1] == musicnn.PENULTIMATE_WIDTH
    # The default probe reads the pooled features: the head holds the (frozen) last block.
    pooler, frozen = frontend_models(PretrainedHParams())
    frozen.build((None, musicnn.POOLED_WIDTH))
    assert pooler.outputs[0].shape[-1] == musicnn.POOLED_WIDTH and frozen.trainable_weights == []
    pooler, penultimate = frontend_models(PretrainedHParams(finetune_penultimate=True))
    penultimate.build((None, musicnn.POOLED_WIDTH))
    assert pooler.trainable_weights == []
    assert {w.name for w in penultimate.trainable_weights} == {"dense_kernel", "dense_bias"}


def test_musicnn_features_follow_its_extractor_recipe():
    import librosa

    waveform = (0.2 * np.random.default_rng(1).standard_normal(3 * PARAMS.sample_rate)
                ).astype(np.float32)
    power = librosa.feature.melspectrogram(y=waveform, sr=16000, hop_length=256, n_fft=512,
                                           n_mels=96).T
    np.testing.assert_allclose(features.log_mel(waveform, PARAMS), np.log10(10000 * power + 1),
                               atol=1e-5)
    assert PARAMS.frames_per_segment == PARAMS.segment_hop_frames == 187
    assert features.expected_segments(30.0, PARAMS) == 10
    graph = graph_log_mel(tf.constant(waveform[None]), PARAMS).numpy()[0]
    np.testing.assert_allclose(graph, features.log_mel(waveform, PARAMS), atol=1e-4)


def test_the_in_graph_resampler_stays_close_to_soxr():
    import soxr

    rng = np.random.default_rng(2)
    t = np.arange(int(4.0 * 22050)) / 22050
    waveform = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
                ).astype(np.float32)
    ours = graph_resample(tf.constant(waveform[None]), 22050, 16000).numpy()[0]
    theirs = soxr.resample(waveform, 22050, 16000, quality="HQ")
    assert ours.shape == theirs.shape
    difference = np.abs(features.log_mel(ours, PARAMS) - features.log_mel(theirs, PARAMS))
    # Measured on GTZAN: 0.001 on average; the top band (7.7-8 kHz) differs most.
    assert difference.mean() < 5e-3 and difference[:, :90].max() < 0.05


def _clip(kind: str, seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    if kind == "drone":
        tone = np.sin(2 * np.pi * rng.uniform(100, 200) * t)
    else:
        tone = np.sign(np.sin(2 * np.pi * rng.uniform(2, 4) * t)) * rng.standard_normal(t.size)
    return (0.3 * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A clip head trained briefly on two synthetic kinds of clip, exported with the front end."""
    hparams = PretrainedHParams(epochs=15, embedding_dim=16)
    cache_model, penultimate = frontend_models(hparams)
    clips, labels = [], []
    for index in range(8):
        path = str(tmp_path_factory.mktemp("clips") / f"{index}.wav")
        sf.write(path, _clip(LABELS[index % 2], 6.5 + index % 3, 22050, seed=index), 22050)
        clips.append(np.asarray(cache_model(audio_files.track_segments(path, PARAMS))))
        labels.append(index % 2)
    head, _history, _monitor = fit_head(clips, labels, len(LABELS), hparams, seed=0,
                                        penultimate=penultimate)
    serving_dir = str(tmp_path_factory.mktemp("musicnn_export") / "serving")
    export_serving_model(
        GenreSignatures(PretrainedClipModel(cache_model, head, PARAMS.n_mels, musicnn.PATCH_FRAMES),
                        LABELS, PARAMS, frontend="musicnn_msd"),
        serving_dir, inputs={"log_mel"}, outputs=OUTPUTS)
    return serving_dir, tf.saved_model.load(serving_dir).signatures


def test_the_export_has_the_contract_core_ops_and_its_features(exported):
    serving_dir, signatures = exported
    _, inputs = signatures["serving_default"].structured_input_signature
    assert inputs["log_mel"].shape.as_list() == [None, None, 187, 96]
    _, inputs = signatures["from_waveform"].structured_input_signature
    assert inputs["waveform"].shape.as_list() == [None, None]
    assert set(signatures["from_waveform"].structured_outputs) == set(OUTPUTS)
    assert non_core_ops(serving_dir) == set()
    frontend, params = read_model_features(serving_dir)
    assert frontend == "musicnn_msd" and params == PARAMS
    record = json.load(open(os.path.join(serving_dir, "assets.extra", "genre_features.json")))
    assert record["waveform_sample_rate"] == 22050


def test_a_track_is_answered_whole_and_padding_segments_change_nothing(exported, tmp_path):
    signature = exported[1]["serving_default"]
    path = str(tmp_path / "pulse.wav")
    sf.write(path, _clip("pulse", 9.5, 22050, seed=11), 22050)
    segments = audio_files.track_segments(path, PARAMS)  # ingestion's features
    assert segments.shape == (3, 187, 96)
    shorter = segments[:2]
    batch = predict_tracks(signature, [segments, shorter], outputs=("probabilities", "embedding"))
    alone = predict_track(signature, segments)
    np.testing.assert_allclose(batch["probabilities"][0], alone, atol=1e-5)
    assert batch["embedding"].shape == (2, 16)
    assert LABELS[int(alone.argmax())] == "pulse"
    # The head reads the sequence: the answer for a track is not the mean of its segments'.
    each = predict_tracks(signature, [[segment] for segment in segments])["probabilities"]
    assert np.abs(each.mean(axis=0) - alone).max() > 1e-4


def test_from_waveform_resamples_and_agrees_with_serving_default_on_ingested_features(exported,
                                                                                     tmp_path):
    signatures = exported[1]
    path = str(tmp_path / "drone.flac")
    waveform = _clip("drone", 7.0, 22050, seed=12)
    sf.write(path, waveform, 22050, subtype="PCM_24")
    from_log_mel = predict_track(signatures["serving_default"], audio_files.track_segments(path, PARAMS))
    outputs = signatures["from_waveform"](
        waveform=tf.constant(audio_files.load_audio(path, features.AudioFeatureParams())[None]))
    np.testing.assert_allclose(outputs["probabilities"].numpy()[0], from_log_mel, atol=0.02)
    assert outputs["genre"].numpy()[0].decode() == LABELS[int(from_log_mel.argmax())] == "drone"


def test_real_gtzan_clip_gets_the_same_answer_from_both_signatures(exported, shared_data):
    paths = sorted(glob.glob(os.path.join(shared_data, "gtzan_dev", "*", "*.flac")))
    if not paths:
        pytest.skip("no gtzan_dev clips in shared data")
    signatures = exported[1]
    from_log_mel = predict_track(signatures["serving_default"],
                                 audio_files.track_segments(paths[0], PARAMS))
    waveform = audio_files.load_audio(paths[0], features.AudioFeatureParams())
    outputs = signatures["from_waveform"](waveform=tf.constant(waveform[None]))
    np.testing.assert_allclose(outputs["probabilities"].numpy()[0], from_log_mel, atol=0.02)


def test_the_config_picks_the_front_ends_features_and_refuses_contradictions():
    assert make_config()["genre_model"]["frontend"] == "musicnn_msd"
    assert feature_params(make_config()) == PARAMS
    log_mel = make_config({"genre_model": {"frontend": "log_mel"},
                           "audio": {"features": {"n_mels": 32}}})
    assert feature_params(log_mel) == features.AudioFeatureParams(n_mels=32)
    with pytest.raises(ConfigError, match="musicnn_msd front end reads fixed features"):
        make_config({"audio": {"features": {"n_mels": 32}}})
    with pytest.raises(ConfigError, match="genre_model.frontend"):
        make_config({"genre_model": {"frontend": "vggish"}})
    with pytest.raises(ConfigError, match="unknown audio feature parameters"):
        make_config({"genre_model": {"frontend": "log_mel"}, "audio": {"features": {"mels": 3}}})


def test_head_hparams_are_checked_by_name_and_range():
    with pytest.raises(ValueError, match="unknown genre hparams .*lstm_units"):
        PretrainedHParams.from_dict({"lstm_units": 8})
    with pytest.raises(ValueError, match="recurrent must be one of"):
        PretrainedHParams.from_dict({"recurrent": "transformer"})
    with pytest.raises(ValueError, match="dropout"):
        PretrainedHParams.from_dict({"dropout": 1.0})
    with pytest.raises(ValueError, match="probe_features must be one of"):
        PretrainedHParams.from_dict({"probe_features": "taggram"})
    with pytest.raises(ValueError, match="linear_share"):
        PretrainedHParams.from_dict({"linear_share": 1.0})
