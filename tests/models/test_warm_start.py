"""Warm start: a retrained model starts from the last one; known tracks keep ids and embeddings."""
import os

import numpy as np
import pytest
import tensorflow as tf

from musicrec.models import warm_start
from musicrec.models.genre import train as genre_train
from musicrec.models.next_track import train as next_track_train
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.model import build_model
from musicrec.models.train_args import TrainArgs

FROZEN = {"learning_rate": 1e-9, "epochs": 1}  # a step so small that weights stay put


def _write_sessions(folder, sessions, vocabulary):
    os.makedirs(folder / "Split-train", exist_ok=True)
    path = str(folder / "Split-train" / "data-00000-of-00001.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for index, keys in enumerate(sessions):
            example = tf.train.SequenceExample()
            example.context.feature["user_id"].bytes_list.value.append(b"u")
            example.context.feature["session_id"].bytes_list.value.append(f"s{index}".encode())
            example.context.feature["start_time"].int64_list.value.append(index * 10_000)
            for step, key in enumerate(keys):
                example.feature_lists.feature_list["track_key"].feature.add().bytes_list.value.append(
                    key.encode())
                example.feature_lists.feature_list["timestamp"].feature.add().int64_list.value.append(
                    index * 10_000 + step * 200)
            writer.write(example.SerializeToString())
    (folder / "vocab.txt").write_text("".join(f"{v}\n" for v in vocabulary))
    return [path]


def _cyclic_sessions(n_tracks, count, length=6):
    rng = np.random.default_rng(0)
    starts = rng.integers(0, n_tracks, size=count)
    return [[f"t{(s + i) % n_tracks:02d}" for i in range(length)] for s in starts]


@pytest.fixture(scope="module")
def first_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("warm")
    vocabulary = [f"t{i:02d}" for i in range(10)]
    files = _write_sessions(root / "examples1", _cyclic_sessions(10, 200), vocabulary)
    args = TrainArgs(files, [], str(root / "examples1"), str(root / "model1"),
                     hparams={"epochs": 2, "embedding_dim": 8, "lstm_units": 16, "top_k": 5})
    next_track_train.run_fn(args)
    return root, args


def _embedding(model_dir, vocab_size, hparams):
    checkpoint = warm_start.load_checkpoint(model_dir)
    model = build_model(vocab_size, NextTrackHParams.from_dict(hparams))
    model.load_weights(checkpoint.weights_path)
    return checkpoint, model.get_layer("track_embedding").get_weights()[0]


def test_next_track_keeps_known_ids_and_embeddings_and_appends_new_tracks(first_model):
    root, first = first_model
    new_vocabulary = [f"t{i:02d}" for i in range(14, -1, -1)]  # other order, 5 new tracks
    files = _write_sessions(root / "examples2", _cyclic_sessions(15, 200), new_vocabulary)
    second = TrainArgs(files, [], str(root / "examples2"), str(root / "model2"),
                       hparams={**first.hparams, **FROZEN}, warm_start_dir=first.model_dir)
    metrics = next_track_train.run_fn(second)
    assert metrics["warm_started_from"] == first.model_dir and metrics["new_tracks"] == 5

    old, old_rows = _embedding(first.model_dir, 10, first.hparams)
    new, new_rows = _embedding(second.model_dir, 15, second.hparams)
    assert new.tokens[:10] == old.tokens and sorted(new.tokens[10:]) == [f"t{i}" for i in range(10, 15)]
    np.testing.assert_allclose(new_rows[:12], old_rows, atol=1e-5)  # padding, OOV, 10 known tracks
    assert not np.allclose(new_rows[12:], 0.0)  # new tracks start from a fresh initialisation


def test_next_track_warm_start_is_skipped_when_shapes_differ(first_model):
    root, first = first_model
    files = [str(p) for p in (root / "examples1" / "Split-train").iterdir()]
    other = TrainArgs(files, [], str(root / "examples1"), str(root / "model3"),
                      hparams={**first.hparams, "lstm_units": 8, "epochs": 1},
                      warm_start_dir=first.model_dir)
    assert next_track_train.run_fn(other)["warm_started_from"] is None


def _write_segments(folder, labels, per_label=6, frames=20, n_mels=8):
    os.makedirs(folder / "Split-train", exist_ok=True)
    path = str(folder / "Split-train" / "data-00000-of-00001.tfrecord.gz")
    rng = np.random.default_rng(1)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for label, genre in enumerate(labels):
            for index in range(per_label):
                log_mel = rng.normal(size=(frames, n_mels)).astype(np.float32)
                log_mel[:, label] += 3.0
                feature = {
                    "log_mel": tf.train.Feature(float_list=tf.train.FloatList(value=log_mel.ravel())),
                    "frames": tf.train.Feature(int64_list=tf.train.Int64List(value=[frames])),
                    "n_mels": tf.train.Feature(int64_list=tf.train.Int64List(value=[n_mels])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    "genre": tf.train.Feature(bytes_list=tf.train.BytesList(value=[genre.encode()])),
                    "track_id": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[f"{genre}-{index}".encode()])),
                    "artist": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b""])),
                    "segment_index": tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature))
                             .SerializeToString())
    (folder / "labels.txt").write_text("".join(f"{g}\n" for g in labels))
    return [path]


def test_genre_starts_from_the_checkpoint_only_when_labels_match(tmp_path):
    from musicrec.models.features import AudioFeatureParams

    params = AudioFeatureParams(n_mels=8)
    hparams = {"epochs": 2, "lstm_units": 8, "embedding_dim": 4, "batch_size": 8}
    files = _write_segments(tmp_path / "ex", ["a", "b", "c"])
    first = TrainArgs(files, [], str(tmp_path / "ex"), str(tmp_path / "m1"), hparams=hparams,
                      feature_params=params)
    genre_train.run_fn(first)
    second = TrainArgs(files, [], str(tmp_path / "ex"), str(tmp_path / "m2"),
                       hparams={**hparams, **FROZEN}, feature_params=params,
                       warm_start_dir=first.model_dir)
    assert genre_train.run_fn(second)["warm_started_from"] == first.model_dir
    import h5py

    def lstm_kernel(model_dir):
        path = os.path.join(model_dir, "checkpoint", "model.weights.h5")
        with h5py.File(path) as handle:
            found = []
            handle.visititems(lambda name, obj: found.append(np.array(obj))
                              if "lstm" in name and hasattr(obj, "shape") and obj.ndim == 2 else None)
            return found[0]

    np.testing.assert_allclose(lstm_kernel(second.model_dir), lstm_kernel(first.model_dir), atol=1e-5)

    relabelled = _write_segments(tmp_path / "ex2", ["a", "b", "d"])
    third = TrainArgs(relabelled, [], str(tmp_path / "ex2"), str(tmp_path / "m3"),
                      hparams={**hparams, "epochs": 1}, feature_params=params,
                      warm_start_dir=first.model_dir)
    assert genre_train.run_fn(third)["warm_started_from"] is None
