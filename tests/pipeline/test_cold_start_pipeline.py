"""The cold_start stage in the pipeline: wiring, the pushed model's catalogue, metrics, caching, lineage.

Tiny demo data and tiny models: this checks the stage's contract, not the
cold-start quality (``musicrec demo`` and benchmarks/README.md report that).
"""
import csv
import json
import os

import numpy as np
import pytest

from musicrec import demo_data, pipeline_runs
from musicrec.models.export_check import non_core_ops
from musicrec.models.next_track.hparams import CATALOGUE_RANKING
from musicrec.pipeline import metadata as md
from musicrec.pipeline.config import make_config
from musicrec.pipeline.pipeline import create_pipeline

pytestmark = pytest.mark.timeout(600)

TINY_MODELS = {
    "genre_model": {"hparams": {"epochs": 3, "embedding_dim": 16}, "min_accuracy_over_chance": 0.0},
    "next_track_model": {"hparams": {**CATALOGUE_RANKING, "epochs": 2, "lstm_units": 16, "embedding_dim": 8},
                         "must_beat_baselines": False},
}


def _ids(pipeline):
    return [node.id for node in pipeline.ordered()]


def test_cold_start_sits_between_the_next_track_trainer_and_evaluator_only_with_both_inputs(tmp_path):
    enabled = make_config({**TINY_MODELS, "cold_start": {"enabled": True, "eval_plays": "plays.csv"}})
    both = create_pipeline(enabled, str(tmp_path), audio_dir="a", playlog_paths=["l"])
    assert _ids(both) == ["audio_example_gen", "trainer_genre", "evaluator_genre", "pusher_genre",
                          "playlog_example_gen", "trainer_next_track", "cold_start",
                          "evaluator_next_track", "final_fit_next_track", "cold_start_final",
                          "pusher_next_track"]
    nodes = {node.id: node for node in both.nodes}
    sources = {name: ref.node_id for name, ref in nodes["cold_start"].inputs.items()}
    assert sources == {"examples": "playlog_example_gen", "model": "trainer_next_track",
                       "genre_model": "trainer_genre", "audio_examples": "audio_example_gen"}
    assert nodes["evaluator_next_track"].inputs["model"].node_id == "cold_start"
    assert nodes["final_fit_next_track"].inputs["model"].node_id == "trainer_next_track"
    assert nodes["cold_start_final"].inputs["model"].node_id == "final_fit_next_track"
    assert nodes["pusher_next_track"].inputs["model"].node_id == "cold_start_final"
    # The held-out plays file is data: its changes invalidate the cache.
    assert nodes["cold_start"].data_paths == [os.path.abspath("plays.csv")]

    assert "cold_start" not in _ids(create_pipeline(enabled, str(tmp_path), playlog_paths=["l"]))
    assert "cold_start" not in _ids(create_pipeline(enabled, str(tmp_path), audio_dir="a"))
    assert "cold_start" not in _ids(create_pipeline(make_config(), str(tmp_path), audio_dir="a",
                                                    playlog_paths=["l"]))


def _expected_cases(cold_plays_csv):
    """Held-out plays that follow another play of their session: one next-item case each."""
    with open(cold_plays_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sessions = {}
    for row in rows:
        sessions.setdefault(row["session_id"], []).append(row)
    return sum(row["held_out"] == "1" for plays in sessions.values()
               for row in sorted(plays, key=lambda r: r["timestamp"])[1:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("cold"))
    data = demo_data.generate(os.path.join(workdir, "data"), demo_data.tiny_config(seed=3))
    config = make_config({"seed": 3, **TINY_MODELS,
                          "cold_start": {"enabled": True, "eval_plays": data.cold_plays_csv}})
    first = pipeline_runs.run_pipeline(config, workdir, audio_dir=data.audio_dir,
                                       playlog_paths=data.playlog_paths)
    again = pipeline_runs.run_pipeline(config, workdir, audio_dir=data.audio_dir,
                                       playlog_paths=data.playlog_paths)
    return workdir, data, first, again


def test_the_pushed_next_track_model_can_recommend_the_tracks_without_plays(runs):
    import tensorflow as tf

    workdir, data, first, _ = runs
    assert data.cold_tracks
    sessions = first.artifact("playlog_example_gen", "sessions")
    played = set(open(sessions.path("vocab.txt")).read().split())
    assert played.isdisjoint(data.cold_tracks)  # really held out of every play log

    model = first.artifact("cold_start", "model")
    assert model.properties["cold_tracks"] == len(data.cold_tracks)
    assert model.properties["warm_tracks"] == len(played)
    assert pipeline_runs.pushes(first)["next_track"]["pushed"]
    version_dir = os.path.join(workdir, "serving", "next_track", "1")
    assert non_core_ops(version_dir) == set()
    served = tf.saved_model.load(version_dir)
    embeddings = served.signatures["track_embeddings"](
        track_keys=tf.constant(data.cold_tracks + ["not-a-track"]))["embedding"].numpy()
    assert np.all(np.any(embeddings[:-1] != 0, axis=1)) and np.all(embeddings[-1] == 0)


def test_the_evaluator_reports_cold_warm_and_random_hit_rates(runs):
    _, data, first, _ = runs
    metrics = pipeline_runs.evaluations(first)["next_track"]["metrics"]
    cold = metrics["cold_start"]
    assert cold["n_cases"] + cold["skipped_unknown_targets"] == _expected_cases(data.cold_plays_csv)
    assert cold["n_cases"] > 0 and cold["skipped_unknown_targets"] == 0
    assert cold["warm"]["hr@20"] == metrics["model"]["hr@20"]
    assert cold["catalogue_size"] == data.n_tracks
    assert cold["random"]["hr@20"] == pytest.approx(min(20, data.n_tracks) / data.n_tracks)
    assert 0.0 <= cold["cold"]["hr@20"] <= 1.0


def test_an_unchanged_rerun_is_all_cache_hits_and_lineage_sees_through_cold_start(runs):
    workdir, _, first, again = runs
    assert again.executed() == []
    assert again.states["cold_start"] == "cached"
    store = md.MetadataStore(md.connection_config(None, os.path.join(workdir, "runs")))
    answer = md.lineage_of_version(store, "next_track", 1)
    assert answer["model"] == first.artifact("cold_start_final", "model").uri
    assert answer["examples"] == first.artifact("playlog_example_gen", "sessions").uri


def test_cold_start_after_a_final_fit_that_did_not_refit_extends_nothing(tmp_path):
    from musicrec.components import cold_start
    from musicrec.components.base import Artifact

    unrefitted = Artifact("Model", str(tmp_path / "final_fit"), {"refitted": False})
    out = Artifact("Model", str(tmp_path / "cold_start"))
    os.makedirs(out.uri)
    cold_start.run({"model": unrefitted, "examples": Artifact("Sessions", str(tmp_path / "none")),
                    "genre_model": Artifact("Model", str(tmp_path / "none")),
                    "audio_examples": Artifact("AudioExamples", str(tmp_path / "none"))},
                   {"model": out}, {})
    record = json.load(open(out.path(cold_start.RECORD_FILENAME), encoding="utf-8"))
    assert record["extended"] is False and "not blessed" in record["reason"]
    assert out.properties["refitted"] is False and not os.path.exists(out.path("serving"))
