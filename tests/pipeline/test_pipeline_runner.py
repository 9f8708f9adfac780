"""The runner's contract: dependency order, atomic publishing, clear failures."""
import json
import os

import pytest

from musicrec.components.base import ComponentSpec
from musicrec.components.pusher import push
from musicrec.serving.wire import list_versions
from musicrec.pipeline.config import ConfigError, load_config, make_config
from musicrec.pipeline.runner import LocalRunner, Node, Pipeline, PipelineRunError


def _writer(inputs, outputs, params):
    text = "".join(open(a.path("value.txt")).read() for a in inputs.values()) + params["text"]
    with open(outputs["out"].path("value.txt"), "w") as handle:
        handle.write(text)
    if params.get("fail"):
        raise RuntimeError("boom")


def _spec(n_inputs):
    return ComponentSpec("writer", {f"in{i}": "Text" for i in range(n_inputs)}, {"out": "Text"}, _writer)


def test_runs_in_dependency_order_whatever_the_listing_order(tmp_path):
    a = Node("a", _spec(0), params={"text": "a"})
    b = Node("b", _spec(1), inputs={"in0": a.outputs["out"]}, params={"text": "b"})
    c = Node("c", _spec(2), inputs={"in0": a.outputs["out"], "in1": b.outputs["out"]},
             params={"text": "c"})
    result = LocalRunner().run(Pipeline("p", str(tmp_path), [c, b, a]), run_id="r1")
    assert open(result.artifact("c", "out").path("value.txt")).read() == "aabc"
    record = json.load(open(tmp_path / "r1" / "run.json"))
    assert record["state"] == "complete"
    assert {k: v["state"] for k, v in record["components"].items()} == {
        "a": "complete", "b": "complete", "c": "complete"}


def test_a_failed_component_publishes_nothing_and_is_recorded(tmp_path):
    a = Node("a", _spec(0), params={"text": "a"})
    b = Node("b", _spec(1), inputs={"in0": a.outputs["out"]}, params={"text": "b", "fail": True})
    with pytest.raises(PipelineRunError, match="component b failed: boom"):
        LocalRunner().run(Pipeline("p", str(tmp_path), [a, b]), run_id="r1")
    assert os.path.isdir(tmp_path / "r1" / "a" / "out")
    assert not os.path.exists(tmp_path / "r1" / "b" / "out")
    record = json.load(open(tmp_path / "r1" / "run.json"))
    assert record["state"] == "failed"
    assert record["components"]["b"]["error"] == "RuntimeError: boom"


def test_wiring_errors_are_caught_before_running(tmp_path):
    a = Node("a", _spec(0), params={"text": "a"})
    cycle_a = Node("x", _spec(1), params={"text": "x"})
    cycle_b = Node("y", _spec(1), inputs={"in0": cycle_a.outputs["out"]}, params={"text": "y"})
    cycle_a.inputs = {"in0": cycle_b.outputs["out"]}
    with pytest.raises(ValueError, match="cycle"):
        Pipeline("p", str(tmp_path), [cycle_a, cycle_b]).ordered()
    wrong_type = ComponentSpec("w", {"in0": "Model"}, {"out": "Text"}, _writer)
    b = Node("b", wrong_type, inputs={"in0": a.outputs["out"]}, params={"text": "b"})
    with pytest.raises(PipelineRunError, match="is a Text, expected Model"):
        LocalRunner().run(Pipeline("p", str(tmp_path), [a, b]))


def test_config_rejects_unknown_keys_with_their_path(tmp_path):
    with pytest.raises(ConfigError, match=r"playlogs\.session_gap: unknown key"):
        make_config({"playlogs": {"session_gap": 60}})
    with pytest.raises(ConfigError, match=r"audio\.num_shards: expected int"):
        make_config({"audio": {"num_shards": "two"}})
    with pytest.raises(ConfigError, match=r"audio\.features"):
        make_config({"audio": {"features": {"n_mels": 0}}})
    with pytest.raises(ConfigError, match=r"next_track_model\.evaluation_max_sessions"):
        make_config({"next_track_model": {"evaluation_max_sessions": -1}})
    path = tmp_path / "c.yaml"
    path.write_text("playlogs:\n  session_gap_seconds: 600\ngenre_model:\n  hparams: {epochs: 2}\n")
    config = load_config(str(path))
    assert config["playlogs"]["session_gap_seconds"] == 600
    assert config["playlogs"]["min_session_length"] == 2
    assert config["genre_model"]["hparams"] == {"epochs": 2}


def test_config_parses_yaml_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(Exception, match="python/object"):
        load_config(str(path))


def test_pusher_adds_increasing_versions_and_ignores_staging(tmp_path):
    model = tmp_path / "export"
    model.mkdir()
    (model / "saved_model.pb").write_bytes(b"pb")
    base = tmp_path / "serving" / "genre"
    assert push(str(model), str(base))[0] == 1
    (base / ".tmp-7").mkdir()
    version, path = push(str(model), str(base))
    assert version == 2 and os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert list_versions(str(base)) == [1, 2]
    with pytest.raises(FileNotFoundError):
        push(str(tmp_path / "missing"), str(base))


def test_config_validates_spans_tolerances_and_the_metadata_store(tmp_path, monkeypatch):
    from musicrec.pipeline.metadata import connection_config

    with pytest.raises(ConfigError, match=r"spans\.policy: expected one of latest, window, all"):
        make_config({"spans": {"policy": "newest"}})
    with pytest.raises(ConfigError, match=r"spans\.window"):
        make_config({"spans": {"window": 0}})
    with pytest.raises(ConfigError, match=r"next_track_model\.baseline_tolerance"):
        make_config({"next_track_model": {"baseline_tolerance": -0.1}})
    with pytest.raises(ConfigError, match=r"metadata\.mysql"):
        make_config({"metadata": {"mysql": {"host": "db", "pasword": "x"}}})
    sqlite = connection_config(make_config()["metadata"], str(tmp_path))
    assert sqlite.sqlite.filename_uri == str(tmp_path / "metadata.sqlite")
    monkeypatch.setenv("MLMD_PW", "s3cret")
    config = make_config({"metadata": {"mysql": {"host": "db.internal", "database": "mlmd",
                                                 "user": "musicrec", "password_env": "MLMD_PW"}}})
    mysql = connection_config(config["metadata"], str(tmp_path)).mysql
    assert (mysql.host, mysql.port, mysql.database, mysql.user, mysql.password) == (
        "db.internal", 3306, "mlmd", "musicrec", "s3cret")
