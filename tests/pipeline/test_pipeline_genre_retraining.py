"""The genre branch on spanned audio: span recording, baseline comparison, confusion matrix."""
import json
import os

import pytest

from musicrec import demo_data
from musicrec.demo import TINY_OVERRIDES
from musicrec.pipeline.config import make_config
from musicrec.pipeline.pipeline import create_pipeline
from musicrec.pipeline.runner import LocalRunner

pytestmark = pytest.mark.timeout(600)

SPAN = "2026-11-24"
OVERRIDES = {"seed": 3, "genre_model": {**TINY_OVERRIDES["genre_model"],
                                        "min_accuracy_over_chance": 0.0}}
RETRAINED = {**OVERRIDES, "genre_model": {**OVERRIDES["genre_model"], "hparams": {
    **TINY_OVERRIDES["genre_model"]["hparams"], "epochs": 4}}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("genre"))
    data = demo_data.generate(os.path.join(workdir, "data"), demo_data.tiny_config(seed=3))
    audio_root = os.path.join(workdir, "audio")
    os.makedirs(audio_root)
    os.rename(data.audio_dir, os.path.join(audio_root, f"span={SPAN}"))
    first = LocalRunner().run(create_pipeline(make_config(OVERRIDES), workdir, audio_dir=audio_root))
    second = LocalRunner().run(create_pipeline(make_config(RETRAINED), workdir, audio_dir=audio_root))
    return workdir, audio_root, first, second


def test_the_audio_example_gen_reads_the_latest_span_and_records_it(runs):
    _, _, first, second = runs
    examples = first.artifact("audio_example_gen", "examples")
    assert examples.properties["spans"] == [SPAN] and examples.properties["span"] == SPAN
    assert examples.properties["tracks"] == 24
    assert second.states["audio_example_gen"] == "cached"


def test_a_retrained_genre_model_is_compared_with_the_blessed_one_on_the_same_data(runs):
    workdir, _, first, second = runs
    assert first.artifact("pusher_genre", "pushed_model").properties["version"] == 1
    assert second.states["trainer_genre"] == "complete"
    report = json.load(open(second.artifact("evaluator_genre", "evaluation").path("metrics.json")))
    assert report["baseline_model"]["uri"] == first.artifact("trainer_genre", "model").uri
    comparison = report["blessing"]["comparison"]
    assert comparison["metric"] == "track accuracy" and comparison["tolerance"] == 0.02
    first_report = json.load(open(first.artifact("evaluator_genre", "evaluation").path("metrics.json")))
    # Same test data, same model: the baseline's numbers equal the first run's own evaluation.
    assert comparison["baseline"] == first_report["metrics"]["track_accuracy"]
    blessed = comparison["candidate"] >= comparison["baseline"] - 0.02
    assert report["blessing"]["blessed"] == blessed
    push = second.artifact("pusher_genre", "pushed_model").properties
    assert push["pushed"] == blessed
    versions = sorted(v for v in os.listdir(os.path.join(workdir, "serving", "genre")) if v.isdigit())
    assert versions == (["1", "2"] if blessed else ["1"])


def test_the_genre_report_has_a_confusion_matrix(runs):
    _, _, first, _ = runs
    metrics = json.load(open(first.artifact("evaluator_genre", "evaluation").path("metrics.json")))
    matrix = metrics["metrics"]["confusion_matrix"]
    assert len(matrix) == len(metrics["metrics"]["labels"])
    assert sum(map(sum, matrix)) == metrics["metrics"]["n_tracks"]
    assert sum(matrix[i][i] for i in range(len(matrix))) == round(
        metrics["metrics"]["track_accuracy"] * metrics["metrics"]["n_tracks"])
    text = open(first.report_path).read()
    assert "true \\ predicted" in text and "Training curves" in text


def test_a_multi_span_policy_is_refused_for_spanned_audio(runs):
    workdir, audio_root, _, _ = runs
    with pytest.raises(ValueError, match="use policy 'latest' for spanned audio"):
        create_pipeline(make_config({"spans": {"policy": "window", "window": 2}}), workdir,
                        audio_dir=audio_root)
