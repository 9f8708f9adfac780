"""Tests of the genre classifier: training, export contract, evaluation, masking.

The fixture writes tiny synthetic ``AudioExamples`` (3 genres that differ in
which mel bands carry energy) as GZIP TFRecords, trains once per module and
exports the SavedModel the other tests load.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from musicrec.models import export_check
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.data import make_dataset
from musicrec.models.genre.evaluate import evaluate, predict_track
from musicrec.models.genre.hparams import GenreHParams
from musicrec.models.genre.layers import PADDING_VALUE
from musicrec.models.genre.model import build_classifier, new_normalization
from musicrec.models.genre.train import run_fn, validation_setup
from musicrec.models.train_args import TrainArgs

LABELS = ["blues", "metal", "reggae"]
N_MELS = 8
FRAMES = 20
SEGMENTS_PER_TRACK = 3
# Tracks per genre and split; the test split is unbalanced so that the
# majority-class baseline differs from chance.
TRACKS = {"train": (8, 8, 8), "eval": (2, 2, 2), "test": (3, 2, 2)}
TEST_HPARAMS = {"lstm_units": 16, "embedding_dim": 8, "dropout": 0.1, "learning_rate": 1e-2,
                "epochs": 8, "batch_size": 16, "early_stopping_patience": 3}


def _synthetic_segment(rng: np.random.Generator, label: int, frames: int) -> np.ndarray:
    """Raw-log-mel-like noise with extra energy in the genre's three bands."""
    segment = rng.normal(-6.0, 1.0, size=(frames, N_MELS)).astype(np.float32)
    segment[:, 2 * label:2 * label + 3] += 4.0
    return segment


def _example(segment: np.ndarray, label: int, track_id: str, index: int) -> bytes:
    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "log_mel": feature(float_list=tf.train.FloatList(value=segment.reshape(-1))),
        "frames": feature(int64_list=tf.train.Int64List(value=[segment.shape[0]])),
        "n_mels": feature(int64_list=tf.train.Int64List(value=[segment.shape[1]])),
        "label": feature(int64_list=tf.train.Int64List(value=[label])),
        "genre": feature(bytes_list=tf.train.BytesList(value=[LABELS[label].encode()])),
        "track_id": feature(bytes_list=tf.train.BytesList(value=[track_id.encode()])),
        "artist": feature(bytes_list=tf.train.BytesList(value=[b""])),
        "segment_index": feature(int64_list=tf.train.Int64List(value=[index])),
    })).SerializeToString()


def _write_split(path: str, records: list[bytes]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options=tf.io.TFRecordOptions(compression_type="GZIP")) as out:
        for record in records:
            out.write(record)


def write_examples(uri: str, seed: int = 7) -> dict[str, dict[str, tuple[int, np.ndarray]]]:
    """Writes an AudioExamples artifact; returns ``{split: {track_id: (label, segments)}}``."""
    rng = np.random.default_rng(seed)
    tracks: dict[str, dict[str, tuple[int, np.ndarray]]] = {}
    for split, counts in TRACKS.items():
        tracks[split], records = {}, []
        for label, count in enumerate(counts):
            for number in range(count):
                track_id = f"{split}-{LABELS[label]}-{number}"
                segments = np.stack([_synthetic_segment(rng, label, FRAMES)
                                     for _ in range(SEGMENTS_PER_TRACK)])
                tracks[split][track_id] = (label, segments)
                records += [_example(s, label, track_id, i) for i, s in enumerate(segments)]
        # A few shorter segments make training batches need padding.
        if split == "train":
            records += [_example(_synthetic_segment(rng, label, FRAMES - 6), label,
                                 f"short-{label}", 0) for label in range(len(LABELS))]
        rng.shuffle(records)
        _write_split(f"{uri}/Split-{split}/data-00000-of-00001.tfrecord.gz", records)
    with open(f"{uri}/labels.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(LABELS) + "\n")
    return tracks


def _split_files(uri: str, split: str) -> list[str]:
    return sorted(tf.io.gfile.glob(f"{uri}/Split-{split}/data-*.tfrecord.gz"))


def train_on_examples(root, hparams: dict, seed: int = 3) -> tuple[TrainArgs, dict, dict]:
    """Write the small example set under ``root`` and train on it with the pipeline's ``run_fn``.

    Returns ``(args, metrics, tracks)``: the TrainArgs (``args.serving_dir``
    holds the export), run_fn's metrics and ``write_examples``' tracks.
    """
    examples_dir = str(root / "examples")
    tracks = write_examples(examples_dir)
    args = TrainArgs(train_files=_split_files(examples_dir, "train"),
                     eval_files=_split_files(examples_dir, "eval"),
                     examples_dir=examples_dir, model_dir=str(root / "model"),
                     hparams=hparams, feature_params=AudioFeatureParams(n_mels=N_MELS),
                     seed=seed)
    return args, run_fn(args), tracks  # run_fn also checks the from_waveform signature


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    args, metrics, tracks = train_on_examples(tmp_path_factory.mktemp("genre"), TEST_HPARAMS)
    signature = tf.saved_model.load(args.serving_dir).signatures["serving_default"]
    return {"args": args, "metrics": metrics, "tracks": tracks, "signature": signature}


def test_run_fn_exports_the_genre_signature_contract(trained):
    args, signature = trained["args"], trained["signature"]
    _, input_specs = signature.structured_input_signature
    assert set(input_specs) == {"log_mel"}
    assert input_specs["log_mel"].dtype == tf.float32
    assert input_specs["log_mel"].shape.as_list() == [None, None, None, N_MELS]
    assert set(signature.structured_outputs) == {"probabilities", "classes", "genre", "embedding"}

    _, segments = next(iter(trained["tracks"]["test"].values()))
    outputs = signature(log_mel=tf.constant(segments[:, None]))   # each segment a track
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (SEGMENTS_PER_TRACK, len(LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    classes = outputs["classes"].numpy().astype(str)
    assert classes.shape == (SEGMENTS_PER_TRACK, len(LABELS))
    assert (classes == np.array(LABELS)).all()
    assert list(outputs["genre"].numpy().astype(str)) == [
        LABELS[i] for i in probabilities.argmax(axis=1)]
    assert outputs["embedding"].shape == (SEGMENTS_PER_TRACK, TEST_HPARAMS["embedding_dim"])

    # Only the SavedModel, checkpoint, logs, curves and metrics are left in model_dir, no staging folders.
    assert sorted(os.listdir(args.model_dir)) == ["checkpoint", "logs", "serving",
                                                  "train_metrics.json", "training_curves.png"]
    with open(os.path.join(args.model_dir, "train_metrics.json"), encoding="utf-8") as handle:
        written = json.load(handle)
    assert written["monitor"] == "val_loss"
    assert written["best_epoch"] == 1 + int(np.argmin(written["history"]["val_loss"]))
    assert len(written["epoch_seconds"]) == written["epochs_run"]
    assert written["best_epoch"] == trained["metrics"]["best_epoch"]


def test_model_learns_the_easy_genres(trained):
    args = trained["args"]
    assert trained["metrics"]["best"]["val_accuracy"] >= 0.9
    results = evaluate(args.serving_dir, _split_files(args.examples_dir, "test"),
                       args.examples_dir)
    assert results["segment_accuracy"] >= 0.9
    assert results["track_accuracy"] >= 0.9


def test_evaluate_matches_an_independent_count(trained):
    args, signature, test_tracks = trained["args"], trained["signature"], trained["tracks"]["test"]
    results = evaluate(args.serving_dir, _split_files(args.examples_dir, "test"),
                       args.examples_dir, batch_size=2, with_track_predictions=True)

    track_hits = segment_hits = 0
    for track_id, (label, segments) in test_tracks.items():
        probabilities = signature(log_mel=tf.constant(segments[:, None]))["probabilities"].numpy()
        track_prediction = int(probabilities.mean(axis=0).argmax())
        segment_hits += int((probabilities.argmax(axis=1) == label).sum())
        track_hits += int(track_prediction == label)
        assert results["track_predictions"][track_id] == LABELS[track_prediction]
        np.testing.assert_allclose(predict_track(signature, segments),
                                   probabilities.mean(axis=0), atol=1e-6)
    n_tracks = len(test_tracks)
    assert results["n_tracks"] == n_tracks == len(results["track_predictions"])
    assert results["n_segments"] == n_tracks * SEGMENTS_PER_TRACK
    assert results["track_accuracy"] == pytest.approx(track_hits / n_tracks)
    assert results["segment_accuracy"] == pytest.approx(segment_hits / results["n_segments"])
    assert results["chance_accuracy"] == pytest.approx(1 / 3)
    assert results["majority_class_accuracy"] == pytest.approx(3 / 7)
    assert results["tracks_per_class"] == dict(zip(LABELS, TRACKS["test"]))
    per_class = results["per_class_accuracy"]
    weighted = sum(per_class[name] * count for name, count in zip(LABELS, TRACKS["test"]))
    assert weighted / n_tracks == pytest.approx(results["track_accuracy"])


def test_padding_frames_do_not_change_probabilities(trained):
    signature = trained["signature"]
    _, segments = next(iter(trained["tracks"]["test"].values()))
    padding = np.full((SEGMENTS_PER_TRACK, 9, N_MELS), PADDING_VALUE, dtype=np.float32)
    plain = signature(log_mel=tf.constant(segments[:, None]))["probabilities"].numpy()
    padded = signature(log_mel=tf.constant(np.concatenate([segments, padding], axis=1)[:, None]))
    np.testing.assert_allclose(padded["probabilities"].numpy(), plain, atol=1e-5)
    # The padding is what the mask removes: the same frames at a real value do change it.
    loud = signature(log_mel=tf.constant(
        np.concatenate([segments, padding + 5.0], axis=1)[:, None]))
    assert np.abs(loud["probabilities"].numpy() - plain).max() > 1e-3


def test_saved_model_needs_core_ops_only(trained, tmp_path):
    serving_dir = trained["args"].serving_dir
    ops = export_check.saved_model_op_names(serving_dir)
    assert {"MatMul", "GatherV2"} <= ops
    assert export_check.non_core_ops(serving_dir) == set()
    assert not any(op.startswith("IO>") for op in ops)

    # The check does catch a tensorflow-io op: rewrite one node of a copy.
    tampered = str(tmp_path / "tampered")
    shutil.copytree(serving_dir, tampered)
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(tampered, "saved_model.pb"), "rb") as handle:
        saved_model.ParseFromString(handle.read())
    node = next(node for function in saved_model.meta_graphs[0].graph_def.library.function
                for node in function.node_def if node.op == "GatherV2")
    node.op = "IO>AudioDecodeWAV"
    with open(os.path.join(tampered, "saved_model.pb"), "wb") as handle:
        handle.write(saved_model.SerializeToString())
    assert export_check.non_core_ops(tampered) == {"IO>AudioDecodeWAV"}


def test_hparams_reject_unknown_keys():
    assert GenreHParams.from_dict({"lstm_units": 8}).lstm_units == 8
    with pytest.raises(ValueError, match="lstm_unit"):
        GenreHParams.from_dict({"lstm_unit": 8})
    with pytest.raises(ValueError, match="dropout"):
        GenreHParams.from_dict({"dropout": 1.5})


def test_optimizer_clips_by_global_norm():
    normalization = new_normalization()
    normalization.adapt(np.random.default_rng(0).normal(size=(50, N_MELS)).astype(np.float32))
    model = build_classifier(N_MELS, len(LABELS), GenreHParams(clipnorm=0.5), normalization)
    assert model.optimizer.global_clipnorm == pytest.approx(0.5)
    assert model.optimizer.clipnorm is None
    assert [layer.name for layer in model.layers][-2:] == ["embedding", "probabilities"]


def test_make_dataset_pads_with_the_mask_value(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "data.tfrecord.gz")
    segments = [_synthetic_segment(rng, 0, 5), _synthetic_segment(rng, 1, 3)]
    _write_split(path, [_example(s, label, f"t{label}", 0) for label, s in enumerate(segments)])
    log_mel, labels = next(iter(make_dataset([path], N_MELS, batch_size=2, shuffle=False)))
    assert log_mel.shape == (2, 5, N_MELS)
    np.testing.assert_array_equal(labels.numpy(), [0, 1])
    np.testing.assert_array_equal(log_mel.numpy()[1, :3], segments[1])
    assert (log_mel.numpy()[1, 3:] == PADDING_VALUE).all()

    with pytest.raises(tf.errors.InvalidArgumentError, match="n_mels"):
        next(iter(make_dataset([path], N_MELS + 1, batch_size=2, shuffle=False)))



def test_without_eval_files_early_stopping_watches_training_loss(trained, caplog):
    examples_dir = trained["args"].examples_dir
    with caplog.at_level("WARNING", logger="musicrec.models.genre.train"):
        eval_data, monitor = validation_setup([], N_MELS, batch_size=4)
    assert (eval_data, monitor) == (None, "loss")
    assert any("no eval files" in record.getMessage() for record in caplog.records)

    eval_data, monitor = validation_setup(_split_files(examples_dir, "eval"), N_MELS, 4)
    assert monitor == "val_loss"
    assert sum(int(labels.shape[0]) for _, labels in eval_data) == (
        sum(TRACKS["eval"]) * SEGMENTS_PER_TRACK)


def test_the_evaluator_scores_model_and_classical_baseline_side_by_side(trained, tmp_path):
    from musicrec.components import evaluator
    from musicrec.components.base import Artifact

    args = trained["args"]
    with open(os.path.join(args.examples_dir, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump({"feature_params": args.feature_params.to_dict()}, handle)
    evaluation = Artifact("ModelEvaluation", str(tmp_path / "evaluation"))
    os.makedirs(evaluation.uri)
    evaluator.run({"examples": Artifact("AudioExamples", args.examples_dir),
                   "model": Artifact("Model", args.model_dir)},
                  {"evaluation": evaluation}, {"kind": "genre", "min_accuracy_over_chance": 1.5})
    report = json.load(open(evaluation.path("metrics.json"), encoding="utf-8"))
    metrics, baseline = report["metrics"], report["classical_baseline"]
    n_test = sum(TRACKS["test"])
    assert metrics["n_tracks"] == baseline["n_tracks"] == n_test
    assert baseline["n_train_tracks"] == sum(TRACKS["train"]) + len(LABELS)  # + the short tracks
    for scores in (metrics, baseline):
        assert sum(map(sum, scores["confusion_matrix"])) == n_test
        assert 0.0 <= scores["macro_f1"] <= 1.0
        assert set(scores["per_class"]) == set(LABELS)
    assert report["side_by_side"] == {
        "track_accuracy": {"model": metrics["track_accuracy"],
                           "classical_baseline": baseline["track_accuracy"]},
        "macro_f1": {"model": metrics["macro_f1"], "classical_baseline": baseline["macro_f1"]}}
    for png in ("confusion_matrix.png", "baseline_confusion_matrix.png"):
        assert open(evaluation.path(png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert report["blessing"]["blessed"] == (metrics["track_accuracy"] >= 0.5)
    page = open(evaluation.path("report.html"), encoding="utf-8").read()
    # Both columns of the side-by-side table, with the scores metrics.json holds.
    assert "<th>Keras model</th><th>classical baseline</th>" in page
    assert (f"<tr><td>track accuracy</td><td>{metrics['track_accuracy']:.3f}</td>"
            f"<td>{baseline['track_accuracy']:.3f}</td></tr>") in page
    for png in ("confusion_matrix.png", "baseline_confusion_matrix.png"):
        assert f"src='{png}'" in page
