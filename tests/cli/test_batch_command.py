"""``musicrec batch``: the three jobs through the CLI, model resolution, and clear errors.

The models are small stand-ins written with ``tf.saved_model.save`` that
follow the serving contracts of docs/architecture.md (core ops only), so
these tests exercise the command and its Beam jobs without training;
tests/components/test_bulk_inferrer.py runs trained models against the gRPC server.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf

from musicrec import cli
from musicrec.models.features import AudioFeatureParams
from musicrec.models.genre.signatures import write_model_features

pytestmark = pytest.mark.timeout(300)

N_MELS = AudioFeatureParams().n_mels
GENRES = ["ambient", "noise", "tonal"]
VOCAB = [f"track-{i}" for i in range(12)]
K = 5


class GenreStandIn(tf.Module):
    """``log_mel [tracks, segments, frames, n_mels]`` → probabilities from a fixed projection of
    the mean frame of the track's real segments."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.projection = tf.Variable(rng.normal(size=(N_MELS, len(GENRES))).astype(np.float32) * 0.1)
        self.to_embedding = tf.Variable(rng.normal(size=(N_MELS, 4)).astype(np.float32))
        self.names = tf.constant(GENRES)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, N_MELS], tf.float32,
                                                name="log_mel")])
    def serve(self, log_mel):
        # The contract: padding segments (all 0.0) are left out of a track's answer.
        real = tf.cast(tf.reduce_any(tf.not_equal(log_mel, 0.0), axis=[2, 3]), tf.float32)
        mean_frame = (tf.reduce_sum(tf.reduce_mean(log_mel, axis=2) * real[..., None], axis=1)
                      / tf.maximum(tf.reduce_sum(real, axis=1, keepdims=True), 1.0))
        probabilities = tf.nn.softmax(tf.matmul(mean_frame, self.projection))
        batch = tf.shape(log_mel)[0]
        return {"probabilities": probabilities,
                "classes": tf.broadcast_to(self.names[tf.newaxis, :], [batch, len(GENRES)]),
                "genre": tf.gather(self.names, tf.argmax(probabilities, axis=-1)),
                "embedding": tf.matmul(mean_frame, self.to_embedding)}


class NextTrackStandIn(tf.Module):
    """``track_keys [batch, length]`` → top-``K`` by the dot product with the mean known-track embedding."""

    def __init__(self, with_embeddings: bool):
        super().__init__()
        rng = np.random.default_rng(1)
        self.keys = tf.constant(VOCAB)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.keys, tf.range(len(VOCAB), dtype=tf.int64)), -1)
        self.vectors = tf.Variable(rng.normal(size=(len(VOCAB), 3)).astype(np.float32))
        self.with_embeddings = with_embeddings

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="track_keys")])
    def serve(self, track_keys):
        scores, best = tf.math.top_k(tf.nn.softmax(self._session_scores(track_keys)), K)
        return {"track_keys": tf.gather(self.keys, best), "scores": scores}

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="track_keys"),
                                  tf.TensorSpec([None, None], tf.string, name="history_keys"),
                                  tf.TensorSpec([None], tf.int32, name="k"),
                                  tf.TensorSpec([None], tf.bool, name="exclude_seen")])
    def recommend(self, track_keys, history_keys, k, exclude_seen):
        """The contract of docs/architecture.md: seen tracks dropped on request, ``max(k)`` columns."""
        probabilities = tf.nn.softmax(self._session_scores(track_keys))
        seen = tf.concat([self.table.lookup(track_keys), self.table.lookup(history_keys)], axis=1)
        seen_mask = tf.reduce_max(tf.one_hot(seen, len(VOCAB)), axis=1) > 0  # -1 (unknown) is all zeros
        probabilities = tf.where(exclude_seen[:, None] & seen_mask, -1.0, probabilities)
        scores, best = tf.math.top_k(probabilities, tf.reduce_max(k))
        within = tf.range(tf.reduce_max(k))[None, :] < k[:, None]
        return {"track_keys": tf.where(within, tf.gather(self.keys, best), ""),
                "scores": tf.where(within, scores, 0.0)}

    def _session_scores(self, track_keys):
        ids = self.table.lookup(track_keys)
        known = tf.cast(ids >= 0, tf.float32)[..., tf.newaxis]
        vectors = tf.gather(self.vectors, tf.maximum(ids, 0)) * known
        session = tf.reduce_sum(vectors, axis=1) / tf.maximum(tf.reduce_sum(known, axis=1), 1.0)
        return tf.matmul(session, self.vectors, transpose_b=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="track_keys")])
    def embed(self, track_keys):
        return {"embedding": tf.gather(self.vectors, tf.maximum(self.table.lookup(track_keys), 0))}


def save(module: tf.Module, path: str, extra: dict | None = None) -> str:
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve, **(extra or {})})
    return path


def save_genre_stand_in(path: str) -> str:
    """A :class:`GenreStandIn` SavedModel with the default log-mel features stored with it."""
    save(GenreStandIn(), path)
    write_model_features(path, "log_mel", AudioFeatureParams())
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_cli")
    serving = root / "work" / "serving"
    save_genre_stand_in(str(serving / "genre" / "1"))
    save(NextTrackStandIn(False), str(serving / "next_track" / "1"))
    newest = NextTrackStandIn(True)
    save(newest, str(serving / "next_track" / "2"), {"track_embeddings": newest.embed,
                                                      "recommend": newest.recommend})
    # What the pipeline records for a push: the pushed version and the model folder it came from.
    model_dir = root / "work" / "runs" / "r1" / "trainer_next_track" / "model"
    (model_dir / "checkpoint").mkdir(parents=True)
    (model_dir / "checkpoint" / "tokens.txt").write_text("".join(f"{key}\n" for key in VOCAB))
    (root / "work" / "runs" / "r1" / "run.json").write_text(json.dumps({"components": {"pusher_next_track": {
        "component": "pusher", "inputs": {"model": str(model_dir)},
        "outputs": {"pushed_model": {"properties": {"path": str(serving / "next_track" / "2")}}}}}}))

    catalogue = root / "catalogue"  # flat: no genre folders
    catalogue.mkdir()
    rng = np.random.default_rng(2)
    for number in range(3):
        sf.write(str(catalogue / f"clip{number}.wav"),
                 (0.3 * rng.standard_normal(22050 * (4 + number))).astype(np.float32), 22050)
    (catalogue / "broken.mp3").write_bytes(b"ID3" + bytes(100))
    plays = root / "plays.csv"
    plays.write_text("user_id,timestamp,track_id\n" + "".join(
        f"u{u},{1_700_000_000 + 60 * i},{VOCAB[(u + i) % len(VOCAB)]}\n" for u in range(4) for i in range(3)))
    return {"root": root, "work": str(root / "work"), "catalogue": str(catalogue), "plays": str(plays)}


def test_tag_a_flat_folder_with_the_served_genre_model_and_its_own_features(workdir, capsys):
    out = str(workdir["root"] / "tags")
    # A config with other features: tagging reads the model's stored ones (64 bands) instead.
    config = workdir["root"] / "other-features.yaml"
    config.write_text("genre_model: {frontend: log_mel}\naudio: {features: {n_mels: 32}}\n")
    assert cli.main(["batch", "tag", "--workdir", workdir["work"], "--audio", workdir["catalogue"],
                     "--out", out, "--top-genres", "2", "--config", str(config)]) == 0
    assert "inputs=4 tracks=3 dead_letters=1" in capsys.readouterr().out
    summary = pd.read_csv(os.path.join(out, "tags.csv"))
    assert sorted(summary["track_id"]) == ["clip0", "clip1", "clip2"]
    assert set(summary["genre"]) <= set(GENRES) and (summary["label"].isna()).all()
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["model"]["name"] == "genre" and manifest["model"]["version"] == 1
    assert manifest["dead_letters_per_reason"] == {"corrupt audio": 1}
    assert manifest["feature_params"] == AudioFeatureParams().to_dict()
    assert not [name for name in os.listdir(workdir["root"]) if ".tmp-" in name]


def test_recommend_for_every_user_and_embeddings_of_the_vocabulary(workdir, capsys):
    out = str(workdir["root"] / "recs")
    assert cli.main(["batch", "recommend", "--workdir", workdir["work"], "--playlogs", workdir["plays"],
                     "--out", out, "--top-n", "2", "--beam-arg=--direct_num_workers=1"]) == 0
    assert json.load(open(os.path.join(out, "manifest.json")))["signature"] == "recommend"
    older = os.path.join(workdir["work"], "serving", "next_track", "1")
    assert cli.main(["batch", "recommend", "--saved-model", older, "--playlogs", workdir["plays"],
                     "--out", out + "-older", "--top-n", "2"]) == 0
    assert json.load(open(os.path.join(out + "-older", "manifest.json")))["signature"] == "serving_default"
    for folder in (out, out + "-older"):
        recommendations = pd.read_csv(os.path.join(folder, "recommendations.csv"))
        assert sorted(set(recommendations["user_id"])) == ["u0", "u1", "u2", "u3"]
        assert recommendations.groupby("user_id")["rank"].max().eq(2).all()
        for user, rows in recommendations.groupby("user_id"):
            played = {VOCAB[(int(user[1:]) + i) % len(VOCAB)] for i in range(3)}
            assert not played & set(rows["track_key"])

    out = str(workdir["root"] / "embeddings")
    assert cli.main(["batch", "embeddings", "--workdir", workdir["work"], "--out", out]) == 0
    assert open(os.path.join(out, "embedding_keys.txt")).read().split() == VOCAB
    matrix = np.load(os.path.join(out, "embeddings.npy"))
    expected = tf.saved_model.load(os.path.join(workdir["work"], "serving", "next_track", "2")).signatures[
        "track_embeddings"](track_keys=tf.constant(VOCAB))["embedding"].numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    assert json.load(open(os.path.join(out, "manifest.json")))["tracks"] == len(VOCAB)


def test_clear_errors(workdir, capsys):
    older = os.path.join(workdir["work"], "serving", "next_track", "1")
    out = str(workdir["root"] / "never")
    assert cli.main(["batch", "embeddings", "--saved-model", older, "--out", out]) == 2
    assert "no 'track_embeddings' signature" in capsys.readouterr().err
    assert not os.path.exists(out) and not [n for n in os.listdir(workdir["root"]) if ".tmp-" in n]
    assert cli.main(["batch", "tag", "--workdir", str(workdir["root"]), "--audio", workdir["catalogue"],
                     "--out", out]) == 2
    assert "no pushed version" in capsys.readouterr().err
    assert cli.main(["batch", "recommend", "--workdir", workdir["work"], "--playlogs", workdir["plays"],
                     "--out", workdir["catalogue"]]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["batch", "tag", "--workdir", workdir["work"], "--out", out])  # no --audio/--metadata


def _bulk_executions(store, node_id: str):
    return [e for e in store.executions() if store.execution_type_name(e) == "bulk_inferrer"
            and e.custom_properties["node_id"].string_value == node_id]


def test_a_batch_run_with_a_workdir_is_recorded_in_ml_metadata(workdir, capsys):
    from musicrec.components.base import Artifact
    from musicrec.pipeline import metadata as mlmd_store

    store = mlmd_store.MetadataStore(mlmd_store.connection_config(None, os.path.join(workdir["work"], "runs")))
    version = os.path.join(workdir["work"], "serving", "next_track", "2")
    pushed = Artifact("PushedModel", str(workdir["root"] / "push-record"),  # as the pusher records a push
                      {"model_name": "next_track", "version": 2, "pushed": True, "path": version})
    store.put_artifact(pushed)
    out = str(workdir["root"] / "recs-recorded")
    assert cli.main(["batch", "recommend", "--workdir", workdir["work"], "--playlogs", workdir["plays"],
                     "--out", out, "--top-n", "2"]) == 0
    (execution,) = [e for e in _bulk_executions(store, "batch_recommend")
                    if store.io(e.id)[1].get("inference_result", Artifact("", "")).uri == out]
    assert execution.last_known_state == mlmd_store.State.COMPLETE
    inputs, outputs = store.io(execution.id)
    assert inputs["next_track_model"].mlmd_id == pushed.mlmd_id
    assert inputs["data"].properties["paths"] == [workdir["plays"]]
    assert outputs["inference_result"].properties["users_recommended"] == 4

    keys = workdir["root"] / "repeated-keys.txt"
    keys.write_text("track-1\ntrack-1\n")
    failed_before = len(_bulk_executions(store, "batch_embeddings"))
    assert cli.main(["batch", "embeddings", "--workdir", workdir["work"], "--keys", str(keys),
                     "--out", str(workdir["root"] / "never-embedded")]) == 2
    assert "repeat" in capsys.readouterr().err
    runs = _bulk_executions(store, "batch_embeddings")[failed_before:]
    assert [e.last_known_state for e in runs] == [mlmd_store.State.FAILED]
    assert "repeat" in runs[0].custom_properties["error"].string_value
