"""The optional bulk-inference nodes after the pushers, and their lineage in ML Metadata.

Wiring is checked on the pipeline `create_pipeline` builds; lineage by running a
real bulk_inferrer node with the LocalRunner after a stand-in pusher (a component
that publishes an existing SavedModel as the pusher does), so the Beam job, the
runner's MLMD records and its cache are the real ones without training a model.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from musicrec.components import bulk_inferrer
from musicrec.components.base import ComponentSpec
from musicrec.pipeline import metadata as mlmd_store
from musicrec.pipeline.config import ConfigError, make_config
from musicrec.pipeline.pipeline import _bulk_inference_nodes, create_pipeline
from musicrec.pipeline.runner import LocalRunner, Node, Pipeline

pytestmark = pytest.mark.timeout(240)

VOCAB = [f"track-{i}" for i in range(8)]


def _ids(pipeline):
    return [node.id for node in pipeline.ordered()]


def test_bulk_inference_is_off_by_default(tmp_path):
    pipeline = create_pipeline(make_config(), str(tmp_path), audio_dir="a", playlog_paths=["l"])
    assert not [node for node in pipeline.nodes if node.spec.name == "bulk_inferrer"]


def test_each_job_follows_its_models_pusher_and_reads_the_runs_inputs(tmp_path):
    config = make_config({"bulk_inference": {"jobs": ["tag", "recommend", "embeddings"], "top_n": 7}})
    pipeline = create_pipeline(config, str(tmp_path), audio_dir=str(tmp_path / "audio"),
                               playlog_paths=[str(tmp_path / "logs")])
    ids = _ids(pipeline)
    nodes = {node.id: node for node in pipeline.nodes}
    for job, pusher in (("tag", "pusher_genre"), ("recommend", "pusher_next_track"),
                        ("embeddings", "pusher_next_track")):
        node = nodes[f"bulk_inferrer_{job}"]
        assert ids.index(node.id) > ids.index(pusher)
        (ref,) = node.inputs.values()
        assert (ref.node_id, ref.output_name) == (pusher, "pushed_model")
        assert node.params["job"] == job
    assert nodes["bulk_inferrer_tag"].params["audio_dir"] == str(tmp_path / "audio")
    assert nodes["bulk_inferrer_tag"].data_paths == [str(tmp_path / "audio")]
    assert nodes["bulk_inferrer_recommend"].params["playlog_paths"] == [str(tmp_path / "logs")]
    assert nodes["bulk_inferrer_recommend"].params["top_n"] == 7
    assert nodes["bulk_inferrer_embeddings"].data_paths == []


def test_a_job_without_its_input_is_left_out(tmp_path):
    config = make_config({"bulk_inference": {"jobs": ["tag", "recommend"]}})
    pipeline = create_pipeline(config, str(tmp_path), audio_dir=str(tmp_path))
    assert [n.id for n in pipeline.nodes if n.spec.name == "bulk_inferrer"] == ["bulk_inferrer_tag"]


@pytest.mark.parametrize("section, message", [
    ({"jobs": ["tags"]}, "bulk_inference.jobs"),
    ({"jobs": ["tag", "tag"]}, "bulk_inference.jobs"),
    ({"exclude": "all"}, "bulk_inference.exclude"),
    ({"top_n": 0}, "bulk_inference"),
])
def test_bad_bulk_inference_config_is_rejected(section, message):
    with pytest.raises(ConfigError, match=message):
        make_config({"bulk_inference": section})


# --------------------------------------------------------------------------- a real run


class NextTrackStandIn(tf.Module):
    """``track_keys [batch, length]`` → the 5 vocabulary tracks nearest the session's mean vector
    (a user plays 3, so 2 are left after history exclusion)."""

    def __init__(self):
        super().__init__()
        self.keys = tf.constant(VOCAB)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.keys, tf.range(len(VOCAB), dtype=tf.int64)), -1)
        self.vectors = tf.Variable(np.random.default_rng(0).normal(size=(len(VOCAB), 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.string, name="track_keys")])
    def serve(self, track_keys):
        ids = self.table.lookup(track_keys)
        known = tf.cast(ids >= 0, tf.float32)[..., tf.newaxis]
        session = tf.reduce_sum(tf.gather(self.vectors, tf.maximum(ids, 0)) * known, axis=1)
        scores, best = tf.math.top_k(tf.matmul(session, self.vectors, transpose_b=True), 5)
        return {"track_keys": tf.gather(self.keys, best), "scores": scores}


def publish(inputs, outputs, params):
    """Stand-in pusher: ``push.json`` naming the pushed version, as the pusher writes it."""
    record = {"pushed": True, "model_name": "next_track", "version": 1, "path": params["path"],
              "model_base_path": os.path.dirname(params["path"])}
    with open(outputs["pushed_model"].path("push.json"), "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    outputs["pushed_model"].properties.update(record)


PUBLISH = ComponentSpec("pusher", inputs={}, outputs={"pushed_model": "PushedModel"}, executor=publish)


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk_pipeline")
    model_path = str(root / "serving" / "next_track" / "1")
    module = NextTrackStandIn()
    tf.saved_model.save(module, model_path, signatures={"serving_default": module.serve})
    plays = root / "plays.csv"
    plays.write_text("user_id,timestamp,track_id\n" + "".join(
        f"u{u},{1_700_000_000 + 60 * i},{VOCAB[(u + i) % len(VOCAB)]}\n" for u in range(5) for i in range(3))
        + "u9,not-a-time,track-1\n")
    config = make_config({"bulk_inference": {"jobs": ["recommend"], "top_n": 2}})
    push = Node("pusher_next_track", PUBLISH, params={"path": model_path})
    nodes = _bulk_inference_nodes(config, {"next_track": push}, {"recommend": {
        "playlog_paths": [str(plays)], "playlog_format": "auto", "session_gap_seconds": 1800}})
    pipeline = Pipeline("musicrec", str(root / "runs"), [push, *nodes], write_report=False)
    first = LocalRunner(report=False).run(pipeline)
    second = LocalRunner(report=False).run(pipeline)
    store = mlmd_store.MetadataStore(mlmd_store.connection_config(None, str(root / "runs")))
    return {"first": first, "second": second, "store": store, "plays": str(plays), "model": model_path}


def test_a_pipeline_bulk_run_links_predictions_to_the_pushed_model_and_the_data(recorded_run):
    store = recorded_run["store"]
    result = recorded_run["first"].artifact("bulk_inferrer_recommend", "inference_result")
    assert result.properties["users"] == 5 and result.properties["users_recommended"] == 5
    assert result.properties["dead_letters"] == 1  # the bad row, reconciled in the manifest
    (execution,) = [e for e in store.executions(recorded_run["first"].run_id)
                    if store.execution_type_name(e) == "bulk_inferrer"]
    assert execution.last_known_state == mlmd_store.State.COMPLETE
    inputs, outputs = store.io(execution.id)
    pushed = recorded_run["first"].artifact("pusher_next_track", "pushed_model")
    assert inputs["next_track_model"].mlmd_id == pushed.mlmd_id
    assert inputs["data"].type_name == bulk_inferrer.DATA_TYPE
    assert inputs["data"].properties["paths"] == [recorded_run["plays"]]
    assert outputs["inference_result"].uri == result.uri
    assert os.path.isfile(os.path.join(result.uri, "recommendations.csv"))
    upstream = {artifact.mlmd_id for _, artifact in store.upstream(outputs["inference_result"].mlmd_id)}
    assert pushed.mlmd_id in upstream


def test_an_unchanged_rerun_reuses_the_predictions(recorded_run):
    assert recorded_run["second"].states["bulk_inferrer_recommend"] == "cached"
    assert recorded_run["second"].artifact("bulk_inferrer_recommend", "inference_result").uri == \
        recorded_run["first"].artifact("bulk_inferrer_recommend", "inference_result").uri
