"""The whole job on a tiny generated dataset: ingest → train → evaluate → push → serve → gRPC.

This is the walking skeleton's contract test. It trains tiny models, so it
checks wiring and formats, not accuracy (``make demo`` reports accuracy).
"""
import json
import os

import numpy as np
import pytest

from musicrec import cli, demo_data, pipeline_runs
from musicrec.demo import TINY_OVERRIDES, free_port, read_metadata, serving_process
from musicrec.serve_command import served_models
from musicrec.models.export_check import non_core_ops
from musicrec.models.audio_files import track_segments
from musicrec.models.genre.signatures import read_model_features
from musicrec.pipeline.config import feature_params, make_config
from musicrec.serving.client import PredictionClient

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("e2e"))
    data = demo_data.generate(os.path.join(workdir, "data"), demo_data.tiny_config(seed=3))
    config = make_config({"seed": 3, **TINY_OVERRIDES,
                          "genre_model": {**TINY_OVERRIDES["genre_model"],
                                          "min_accuracy_over_chance": 0.0},
                          "next_track_model": {**TINY_OVERRIDES["next_track_model"],
                                               "must_beat_baselines": False}})
    result = pipeline_runs.run_pipeline(config, workdir, audio_dir=data.audio_dir,
                                        playlog_paths=data.playlog_paths)
    return workdir, data, result


def test_every_stage_ran_and_both_models_were_pushed(pipeline_run):
    workdir, _, result = pipeline_run
    record = json.load(open(os.path.join(result.run_dir, "run.json")))
    assert record["state"] == "complete"
    assert sorted(record["components"], key=lambda c: record["components"][c]["order"]) == [
        "audio_example_gen", "trainer_genre", "evaluator_genre", "pusher_genre",
        "playlog_example_gen", "trainer_next_track", "evaluator_next_track", "final_fit_next_track",
        "pusher_next_track"]
    pushed = pipeline_runs.pushes(result)
    for name in ("genre", "next_track"):
        assert pushed[name]["pushed"] and pushed[name]["version"] == 1
        version_dir = os.path.join(workdir, "serving", name, "1")
        assert os.path.isfile(os.path.join(version_dir, "saved_model.pb"))
        assert non_core_ops(version_dir) == set()
    assert served_models(workdir).keys() == {"genre", "next_track"}


def test_evaluator_reports_model_and_baseline(pipeline_run):
    _, _, result = pipeline_run
    reports = pipeline_runs.evaluations(result)
    genre = reports["genre"]["metrics"]
    assert 0.0 <= genre["track_accuracy"] <= 1.0 and genre["n_tracks"] > 0
    next_track = reports["next_track"]["metrics"]
    assert next_track["n_predictions"] > 0
    assert set(next_track["baselines"]["popularity"]) >= {"hr@20", "mrr@20"}


def test_served_models_answer_predict_over_grpc(pipeline_run, capsys):
    workdir, data, result = pipeline_run
    metadata = read_metadata(data.metadata_csv)
    track_path = next(iter(metadata.values()))["path"]
    vocab = open(os.path.join(result.artifact("playlog_example_gen", "sessions").uri,
                              "vocab.txt")).read().split()
    port = free_port()
    with serving_process(workdir, port, ["genre", "next_track"]) as target:
        with PredictionClient(target, timeout_seconds=30) as client:
            # The served model's own features, as stored with it.
            _, params = read_model_features(os.path.join(workdir, "serving", "genre", "1"))
            assert params == feature_params(make_config())
            segments = track_segments(track_path, params)
            genre = client.predict("genre", {"log_mel": np.stack([segments, segments])})
            assert genre["probabilities"].shape == (2, len(data.genres))
            np.testing.assert_allclose(genre["probabilities"].sum(axis=1), 1.0, atol=1e-4)
            assert {g.decode() for g in genre["genre"]} <= set(data.genres)
            assert genre["embedding"].shape[0] == 2

            recs = client.predict("next_track", {"track_keys": np.array([vocab[:3]], dtype=object)})
            keys = [k.decode() for k in recs["track_keys"][0]]
            assert len(keys) == 20 and set(keys) <= set(vocab)
            assert np.all(np.diff(recs["scores"][0]) <= 1e-7)

        assert cli.main(["classify", "--server", target, "--json", track_path]) == 0
        assert cli.main(["recommend", "--server", target, "--json", "--k", "5", *vocab[:2]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    classified, recommended = lines[-2], lines[-1]
    assert classified["path"] == track_path and len(classified["top_genres"]) == 3
    assert classified["top_genres"][0]["genre"] in data.genres
    assert recommended["tracks"] == vocab[:2] and len(recommended["recommendations"]) == 5
