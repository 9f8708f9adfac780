"""`musicrec run` wires only the stages for the inputs given."""
import pytest

from musicrec.pipeline.config import make_config
from musicrec.pipeline.pipeline import create_pipeline


def _ids(pipeline):
    return [node.id for node in pipeline.ordered()]


def test_audio_alone_runs_only_the_genre_branch(tmp_path):
    pipeline = create_pipeline(make_config(), str(tmp_path), audio_dir=str(tmp_path))
    assert _ids(pipeline) == ["audio_example_gen", "trainer_genre", "evaluator_genre", "pusher_genre"]


def test_logs_alone_run_only_the_next_track_branch(tmp_path):
    pipeline = create_pipeline(make_config(), str(tmp_path), playlog_paths=[str(tmp_path)])
    assert _ids(pipeline) == ["playlog_example_gen", "trainer_next_track", "evaluator_next_track",
                              "final_fit_next_track", "pusher_next_track"]
    evaluator = next(node for node in pipeline.nodes if node.id == "evaluator_next_track")
    assert evaluator.params["evaluation_max_sessions"] == 2000


def test_both_branches_push_to_the_workdir_serving_base(tmp_path):
    pipeline = create_pipeline(make_config(), str(tmp_path), audio_dir="a", playlog_paths=["l"])
    pushers = {n.params["model_name"]: n.params["serving_base"] for n in pipeline.nodes
               if n.spec.name == "pusher"}
    assert pushers == {"genre": str(tmp_path / "serving"), "next_track": str(tmp_path / "serving")}


def test_no_inputs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="give audio"):
        create_pipeline(make_config(), str(tmp_path))
