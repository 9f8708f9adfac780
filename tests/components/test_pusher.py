"""Tests of the pusher: versions, pruning, models.config and warmup requests, on real SavedModels."""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

# The tiny SavedModels are shared with the serving tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "serving"))
from test_serving import export_lookup, export_scorer  # noqa: E402

from musicrec.components import pusher
from musicrec.components.base import Artifact
from musicrec.serving.client import PredictionClient
from musicrec.serving.config import read_model_config
from musicrec.serving.server import LocalModelServer
from musicrec.serving.warmup import read_warmup_requests, warmup_path
from musicrec.serving.wire import list_versions


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, str]:
    """Model artifact URIs as the trainer writes them: <uri>/serving/ holds the SavedModel."""
    root = tmp_path_factory.mktemp("trained")
    export_scorer(str(root / "scorer" / "serving"), weight=1.0)
    export_lookup(str(root / "lookup" / "serving"))

    class AnyRank(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    module = AnyRank()
    tf.saved_model.save(module, str(root / "any_rank" / "serving"), signatures={"serving_default": module.serve})
    return {name: str(root / name) for name in ("scorer", "lookup", "any_rank")}


def run_pusher(model_uri: str, serving_base: str, model_name: str, out: str, blessed: bool = True,
               **params) -> dict:
    outputs = {"pushed_model": Artifact("PushedModel", out)}
    os.makedirs(out, exist_ok=True)
    pusher.run({"model": Artifact("Model", model_uri),
                "evaluation": Artifact("ModelEvaluation", "unused", {"blessed": blessed, "reason": "test"})},
               outputs, {"serving_base": serving_base, "model_name": model_name, **params})
    with open(os.path.join(out, "push.json"), encoding="utf-8") as handle:
        record = json.load(handle)
    assert record == outputs["pushed_model"].properties
    return record


def test_push_writes_version_warmup_and_models_config(trained, tmp_path):
    base = str(tmp_path / "serving")
    scorer = run_pusher(trained["scorer"], base, "scorer", str(tmp_path / "p1"))
    lookup = run_pusher(trained["lookup"], base, "lookup", str(tmp_path / "p2"))

    assert scorer["pushed"] and scorer["version"] == 1 and scorer["warmup"] is True
    assert sorted(os.listdir(base)) == ["lookup", "models.config", "scorer"]
    assert read_model_config(os.path.join(base, "models.config")) == {
        "lookup": os.path.join(base, "lookup"), "scorer": os.path.join(base, "scorer")}
    assert lookup["models_config"] == os.path.join(base, "models.config")
    (log,) = read_warmup_requests(scorer["path"])
    request = log.predict_log.request
    assert request.model_spec.name == "scorer" and request.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["x"]), np.zeros((1, 3), np.float32))
    (lookup_log,) = read_warmup_requests(lookup["path"])
    assert tf.make_ndarray(lookup_log.predict_log.request.inputs["genre"]).tolist() == [b""]

    # The server reads the written config and replays the warmup requests on load.
    from musicrec.serving.config import read_model_entries

    with LocalModelServer(read_model_entries(os.path.join(base, "models.config")), port=0,
                          poll_wait_seconds=0) as server:
        with PredictionClient(server.address) as client:
            assert client.predict("lookup", {"genre": np.array(["pop"])})["echo"].tolist() == [b"pop"]


def test_keep_versions_prunes_the_oldest(trained, tmp_path):
    base = str(tmp_path / "serving")
    records = [run_pusher(trained["scorer"], base, "scorer", str(tmp_path / f"p{index}"),
                          keep_versions=2, warmup=False) for index in range(3)]
    assert [record["version"] for record in records] == [1, 2, 3]
    assert [record["pruned_versions"] for record in records] == [[], [], [1]]
    assert list_versions(os.path.join(base, "scorer")) == [2, 3]
    assert sorted(os.listdir(os.path.join(base, "scorer"))) == ["2", "3"]  # no leftovers
    assert records[0]["warmup"] is False and not os.path.exists(warmup_path(records[2]["path"]))
    with pytest.raises(ValueError, match="keep_versions"):
        run_pusher(trained["scorer"], base, "scorer", str(tmp_path / "bad"), keep_versions=0)


def test_default_keeps_five_versions(trained, tmp_path):
    base = str(tmp_path / "serving")
    for index in range(6):
        run_pusher(trained["scorer"], base, "scorer", str(tmp_path / f"p{index}"), warmup=False)
    assert list_versions(os.path.join(base, "scorer")) == [2, 3, 4, 5, 6]


def test_unusable_warmup_is_skipped_with_a_reason_and_the_push_still_happens(trained, tmp_path):
    record = run_pusher(trained["any_rank"], str(tmp_path / "serving"), "any_rank", str(tmp_path / "p"))
    assert record["pushed"] and record["warmup"] is False
    assert "unknown rank" in record["warmup_skipped_reason"]
    assert not os.path.exists(warmup_path(record["path"]))


def test_not_blessed_pushes_nothing(trained, tmp_path):
    base = tmp_path / "serving"
    record = run_pusher(trained["scorer"], str(base), "scorer", str(tmp_path / "p"), blessed=False)
    assert record["pushed"] is False and "not blessed" in record["reason"]
    assert not base.exists()
