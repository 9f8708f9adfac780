"""The classical genre baseline and the track-level scores shared with the Keras model."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from musicrec.components.audio_records import encode_segment, segment_example, track_features
from musicrec.components.audio_sources import AudioSource
from musicrec.models.features import AudioFeatureParams, log_mel, segment
from musicrec.models.genre.evaluate import (BASELINE_FROM_AUDIO, BASELINE_FROM_LOG_MEL,
                                            classification_metrics, evaluate_classical_baseline)
from musicrec.models.genre_baseline import (CLIP_FEATURES, FRAME_FEATURES, ClassicalGenreBaseline,
                                            ClipStatistics, clip_vector,
                                            frame_features_from_log_mel,
                                            frame_features_from_waveform, librosa_frame_features)

PARAMS = AudioFeatureParams(segment_seconds=1.0, segment_hop_seconds=1.0)
GENRES = ["bass", "treble"]


def _clip(genre: int, seed: int, seconds: float = 3.0) -> np.ndarray:
    """Low tones for genre 0, high tones for genre 1, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * PARAMS.sample_rate)) / PARAMS.sample_rate
    base = rng.uniform(100, 300) if genre == 0 else rng.uniform(3000, 6000)
    tone = sum(np.sin(2 * np.pi * base * k * t) / k for k in (1, 2, 3))
    return (0.3 * tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_frame_features_from_audio_and_from_log_mel_have_the_same_columns():
    waveform = _clip(1, seed=0)
    from_audio = frame_features_from_waveform(waveform, PARAMS)
    from_log_mel = frame_features_from_log_mel(log_mel(waveform, PARAMS), PARAMS)
    assert from_audio.shape == from_log_mel.shape == (log_mel(waveform, PARAMS).shape[0], FRAME_FEATURES)
    # Both see a bright clip: the centroid column (index 20) is in the kHz range for each.
    assert np.median(from_audio[:, 20]) > 2000 and np.median(from_log_mel[:, 20]) > 2000
    assert np.median(frame_features_from_log_mel(log_mel(_clip(0, 0), PARAMS), PARAMS)[:, 20]) < 2000
    assert clip_vector(from_audio).shape == (CLIP_FEATURES,)


@pytest.mark.parametrize("genre", [0, 1])
def test_frame_features_are_librosas_mfcc_centroid_and_contrast(genre):
    waveform = _clip(genre, seed=3)
    waveform[PARAMS.sample_rate:PARAMS.sample_rate + 4096] = 0.0   # silent frames too
    ours = frame_features_from_waveform(waveform, PARAMS)
    reference = librosa_frame_features(waveform, PARAMS)
    assert ours.shape == reference.shape
    # Single- against double-precision STFT: MFCC in dB, centroid in Hz, contrast in dB.
    np.testing.assert_allclose(ours[:, :20], reference[:, :20], atol=0.02)
    np.testing.assert_allclose(ours[:, 20], reference[:, 20], rtol=1e-4, atol=0.01)
    np.testing.assert_allclose(ours[:, 21:], reference[:, 21:], atol=0.1)
    np.testing.assert_allclose(clip_vector(ours), clip_vector(reference), rtol=1e-4, atol=0.01)


def test_clip_statistics_streamed_by_segment_equal_the_whole_clip():
    features = frame_features_from_log_mel(log_mel(_clip(0, seed=1), PARAMS), PARAMS)
    statistics = ClipStatistics()
    for chunk in np.array_split(features, 4):
        statistics.add("t", chunk)
    np.testing.assert_allclose(statistics.vector("t"), clip_vector(features), rtol=1e-4, atol=1e-3)
    assert statistics.clip_ids() == ["t"]


def test_the_baseline_learns_separable_clips_and_refuses_one_genre():
    vectors = [clip_vector(frame_features_from_waveform(_clip(g, seed), PARAMS))
               for seed in range(6) for g in (0, 1)]
    labels = [g for _ in range(6) for g in (0, 1)]
    baseline = ClassicalGenreBaseline().fit(np.stack(vectors[:8]), labels[:8])
    assert list(baseline.predict(np.stack(vectors[8:]))) == labels[8:]
    with pytest.raises(ValueError, match="at least 2 genres"):
        ClassicalGenreBaseline().fit(np.stack(vectors[:2]), [0, 0])


def test_classification_metrics_against_hand_counts():
    scores = classification_metrics([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(3 / 5)
    assert scores["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 0]]
    assert scores["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                                      "support": 2})
    assert scores["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert scores["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    # "c" has no track and no prediction: no score, and macro-F1 averages a and b only.
    assert scores["per_class"]["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert scores["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)


def _write_split(path: str, clips: list[tuple[int, np.ndarray, str]]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type="GZIP")) as out:
        for label, waveform, track_id in clips:
            source = AudioSource(path=f"{track_id}.wav", genre=GENRES[label], track_id=track_id)
            for index, piece in enumerate(segment(log_mel(waveform, PARAMS), PARAMS)):
                out.write(segment_example(piece, label, source, index).SerializeToString())


def test_evaluate_classical_baseline_on_an_examples_artifact(tmp_path):
    uri = str(tmp_path / "examples")
    train = [(g, _clip(g, seed), f"train-{g}-{seed}") for seed in range(4) for g in (0, 1)]
    test = [(g, _clip(g, 100 + seed), f"test-{g}-{seed}") for seed in range(3) for g in (0, 1)]
    _write_split(f"{uri}/Split-train/data-00000-of-00001.tfrecord.gz", train)
    _write_split(f"{uri}/Split-test/data-00000-of-00001.tfrecord.gz", test)
    with open(f"{uri}/labels.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(GENRES) + "\n")
    results = evaluate_classical_baseline([f"{uri}/Split-train/data-00000-of-00001.tfrecord.gz"],
                                          [f"{uri}/Split-test/data-00000-of-00001.tfrecord.gz"],
                                          uri, PARAMS, output_dir=str(tmp_path / "evaluation"))
    assert results["n_train_tracks"] == 8 and results["n_tracks"] == 6
    assert results["track_accuracy"] == 1.0 and results["macro_f1"] == 1.0
    assert sum(map(sum, results["confusion_matrix"])) == 6
    png = tmp_path / "evaluation" / "baseline_confusion_matrix.png"
    assert png.read_bytes().startswith(b"\x89PNG")


def _write_with_vectors(path: str, clips: list[tuple[int, np.ndarray, np.ndarray | None, str]]) -> None:
    """Records of ``(label, waveform for the log-mel, stored clip vector or None, track_id)``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type="GZIP")) as out:
        for label, waveform, vector, track_id in clips:
            shared = track_features(label, AudioSource(path=f"{track_id}.wav", genre=GENRES[label],
                                                       track_id=track_id), vector)
            for index, piece in enumerate(segment(log_mel(waveform, PARAMS), PARAMS)):
                out.write(encode_segment(piece, index, shared))


def test_the_baseline_reads_the_clip_vectors_stored_at_ingestion_and_falls_back_to_the_log_mel(tmp_path):
    # The log-mel of every track is the same noise: only the stored vectors tell the genres apart.
    noise = np.random.default_rng(5).standard_normal(3 * PARAMS.sample_rate).astype(np.float32) * 0.1

    def clips(seeds, split, stored=True):
        return [(g, noise, clip_vector(frame_features_from_waveform(_clip(g, seed), PARAMS))
                 if stored else None, f"{split}-{g}-{seed}") for seed in seeds for g in (0, 1)]

    uri = str(tmp_path / "examples")
    files = {name: f"{uri}/{name}/data-00000-of-00001.tfrecord.gz"
             for name in ("train", "test", "test_unstored")}
    _write_with_vectors(files["train"], clips(range(4), "train"))
    _write_with_vectors(files["test"], clips(range(100, 103), "test"))
    _write_with_vectors(files["test_unstored"], clips(range(100, 103), "test", stored=False))
    with open(f"{uri}/labels.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(GENRES) + "\n")

    stored = evaluate_classical_baseline([files["train"]], [files["test"]], uri, PARAMS)
    assert stored["features"] == BASELINE_FROM_AUDIO and stored["features_from"] == "audio"
    assert stored["n_train_tracks"] == 8 and stored["n_tracks"] == 6
    assert stored["track_accuracy"] == 1.0
    # One split without vectors: both splits use the log-mel, so train and test stay comparable.
    fallback = evaluate_classical_baseline([files["train"]], [files["test_unstored"]], uri, PARAMS)
    assert fallback["features"] == BASELINE_FROM_LOG_MEL and fallback["features_from"] == "log_mel"
    assert fallback["n_train_tracks"] == 8 and fallback["n_tracks"] == 6


def test_the_evaluator_records_why_the_baseline_could_not_be_computed(tmp_path):
    from musicrec.components.base import Artifact
    from musicrec.components.evaluator import genre_classical_baseline

    uri = str(tmp_path / "examples")
    _write_split(f"{uri}/Split-train/data-00000-of-00001.tfrecord.gz",
                 [(0, _clip(0, seed), f"train-{seed}") for seed in range(2)])   # one genre only
    _write_split(f"{uri}/Split-test/data-00000-of-00001.tfrecord.gz", [(1, _clip(1, 9), "test-1")])
    with open(f"{uri}/labels.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(GENRES) + "\n")
    with open(f"{uri}/manifest.json", "w", encoding="utf-8") as handle:
        json.dump({"feature_params": PARAMS.to_dict()}, handle)
    report = genre_classical_baseline(Artifact("AudioExamples", uri), {"track_accuracy": 1.0},
                                      str(tmp_path))
    assert report == {"classical_baseline": {
        "error": "ValueError: the classical baseline needs training clips of at least 2 genres"}}
