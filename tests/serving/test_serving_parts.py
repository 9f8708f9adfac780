"""Tests of the serving parts behind the contract: batching, REST JSON tensors,
warmup files, the batching/monitoring config files, metrics and the new flags."""
from __future__ import annotations

import base64
import logging
import os
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_serving import export_lookup, export_scorer  # noqa: E402

from musicrec.serving import flags
from musicrec.serving.batching import BatchScheduler
from musicrec.serving.client import PredictionClient
from musicrec.serving.errors import ServingError
from musicrec.serving.json_tensor import format_predict_response, json_to_array, parse_predict_body
from musicrec.serving.metrics import ServingMetrics
from musicrec.serving.model_registry import ModelLoadError
from musicrec.serving.loading import load_servable
from musicrec.serving.wire import read_signature_defs
from musicrec.serving.server import LocalModelServer
from musicrec.serving.server_options import (
    BatchingOptions,
    ModelLoadOptions,
    read_batching_parameters,
    read_monitoring_config,
)
from musicrec.serving.warmup import (
    build_predict_warmup,
    read_warmup_requests,
    warmup_path,
    write_warmup_requests,
)

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)


# ------------------------------------------------------------------------------ batching


class CountingModel:
    """execute(): doubles "x" row by row, records each call's batch size, sleeps a little."""

    def __init__(self, delay_seconds: float = 0.02) -> None:
        self.batch_sizes: list[int] = []
        self.delay_seconds = delay_seconds
        self._lock = threading.Lock()

    def __call__(self, arrays):
        with self._lock:
            self.batch_sizes.append(arrays["x"].shape[0])
        time.sleep(self.delay_seconds)
        return {"y": arrays["x"] * 2, "row_sum": arrays["x"].sum(axis=1)}


def test_concurrent_calls_share_batches_and_get_their_own_rows():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=1))
    model = CountingModel()
    results: dict[int, dict] = {}

    def call(index: int) -> None:
        rows = np.full((1 + index % 3, 4), float(index), np.float32)
        results[index] = scheduler.run(("m", 1, "sig"), model, {"x": rows})

    threads = [threading.Thread(target=call, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    scheduler.stop()

    for index, outputs in results.items():
        rows = 1 + index % 3
        np.testing.assert_array_equal(outputs["y"], np.full((rows, 4), 2.0 * index))
        np.testing.assert_array_equal(outputs["row_sum"], np.full(rows, 4.0 * index))
    assert len(results) == 12
    assert sum(model.batch_sizes) == sum(1 + index % 3 for index in range(12))
    assert max(model.batch_sizes) > 3, model.batch_sizes  # several requests were merged
    assert max(model.batch_sizes) <= 16


def test_batches_only_merge_equal_trailing_shapes():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=50_000, num_batch_threads=1))
    model = CountingModel(delay_seconds=0)
    outputs = {}

    def call(width: int) -> None:
        outputs[width] = scheduler.run(("m",), model, {"x": np.ones((1, width), np.float32)})

    threads = [threading.Thread(target=call, args=(width,)) for width in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outputs[2]["y"].shape == (1, 2) and outputs[3]["y"].shape == (1, 3)
    assert model.batch_sizes == [1, 1]


def test_an_idle_queue_does_not_hold_the_only_batch_thread():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, num_batch_threads=1))
    model = CountingModel(delay_seconds=0)
    scheduler.run(("genre",), model, {"x": np.ones((1, 2))})
    started = time.monotonic()
    outputs = scheduler.run(("next_track",), model, {"x": np.ones((1, 2))})
    assert time.monotonic() - started < 2.0
    np.testing.assert_array_equal(outputs["y"], np.full((1, 2), 2.0))


def test_batching_errors():
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4))
    model = CountingModel(delay_seconds=0)
    with pytest.raises(ServingError) as raised:
        scheduler.run(("m",), model, {"x": np.ones((5, 2), np.float32)})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT and "larger than maximum" in raised.value.message
    with pytest.raises(ServingError) as raised:
        scheduler.run(("m",), model, {"x": np.ones((2, 2)), "z": np.ones((3, 2))})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT

    def failing(arrays):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "model says no")

    with pytest.raises(ServingError, match="model says no"):
        scheduler.run(("other",), failing, {"x": np.ones((1, 2))})


def test_server_with_batching_answers_like_without(tmp_path):
    export_scorer(str(tmp_path / "scorer" / "1"), weight=1.0)
    plain = LocalModelServer({"scorer": str(tmp_path / "scorer")}, port=0, poll_wait_seconds=0)
    batched = LocalModelServer({"scorer": str(tmp_path / "scorer")}, port=0, poll_wait_seconds=0,
                               batching=BatchingOptions(max_batch_size=32, batch_timeout_micros=2000))
    with plain, batched:
        with PredictionClient(plain.address) as plain_client, PredictionClient(batched.address) as batched_client:
            expected = plain_client.predict("scorer", {"x": X})
            results = []
            threads = [threading.Thread(target=lambda: results.append(batched_client.predict("scorer", {"x": X})))
                       for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
    assert len(results) == 8
    for outputs in results:
        np.testing.assert_allclose(outputs["scores"], expected["scores"])
        np.testing.assert_allclose(outputs["total"], expected["total"])


def export_batch_rows(export_dir: str) -> None:
    """Input "x" [batch, 3] → {"rows": float32 [batch]}: each row gets the row count of the call it ran in."""
    x = keras.Input(shape=(3,), name="x")
    rows = keras.layers.Lambda(
        lambda values: keras.ops.sum(keras.ops.ones_like(values[:, :1])) * keras.ops.ones_like(values[:, 0]),
        name="rows")(x)
    keras.Model(x, {"rows": rows}).export(export_dir, verbose=False)


def test_with_batching_the_default_threads_let_full_batches_form(tmp_path):
    # Each call holds a gRPC thread while it waits for its batch: with the old
    # fixed 16 threads, 24 concurrent one-row calls could never fill a batch of 24.
    export_batch_rows(str(tmp_path / "rows" / "1"))
    options = BatchingOptions(max_batch_size=24, batch_timeout_micros=3_000_000, num_batch_threads=1)
    server = LocalModelServer({"rows": str(tmp_path / "rows")}, port=0, poll_wait_seconds=0, batching=options)
    assert server.max_workers == 24 * 2
    # Without batching, TF Serving's default: 4 threads per CPU (model_servers/server.h).
    assert LocalModelServer({"rows": str(tmp_path / "rows")}, port=0, poll_wait_seconds=0).max_workers == \
        4 * len(os.sched_getaffinity(0))
    results, errors = [], []
    with server, PredictionClient(server.address, timeout_seconds=30) as client:
        client.predict("rows", {"x": X[:1]})  # the first call of a servable traces; keep it out of the batch

        def one_row_call():
            try:
                results.append(float(client.predict("rows", {"x": X[:1]})["rows"][0]))
            except ServingError as error:
                errors.append(error)

        threads = [threading.Thread(target=one_row_call) for _ in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not errors
    # The batch closes when full, long before its 3 s timeout; one of 16 would have waited it out.
    assert results == [24.0] * 24


# ------------------------------------------------------------------------- JSON tensors


def tensor_info(dtype: int, dims: list[int]) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(dtype=dtype)
    for size in dims:
        info.tensor_shape.dim.add().size = size
    return info


def test_json_to_array_checks_types_and_raggedness():
    floats = tensor_info(types_pb2.DT_FLOAT, [-1, 2])
    np.testing.assert_array_equal(json_to_array([[1, 2.5], [3, 4]], floats, "x"),
                                  np.array([[1, 2.5], [3, 4]], np.float32))
    assert json_to_array([[1, 2]], floats, "x").dtype == np.float32
    strings = json_to_array(["a", {"b64": base64.b64encode(b"\x00\xff").decode()}],
                            tensor_info(types_pb2.DT_STRING, [-1]), "s")
    assert strings.tolist() == [b"a", b"\x00\xff"]
    for bad, info in (([[1, 2], [3]], floats), ([["a", 1]], floats), ([True], tensor_info(types_pb2.DT_INT64, [-1])),
                      ([1.5], tensor_info(types_pb2.DT_INT64, [-1])),
                     ([{"b64": "%%"}], tensor_info(types_pb2.DT_STRING, [-1]))):
        with pytest.raises(ServingError) as raised:
            json_to_array(bad, info, "x")
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_parse_predict_body_row_and_columnar():
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["a"].CopyFrom(tensor_info(types_pb2.DT_FLOAT, [-1]))
    signature.inputs["b"].CopyFrom(tensor_info(types_pb2.DT_STRING, [-1]))
    arrays, row_format = parse_predict_body({"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}, signature)
    assert row_format and arrays["a"].tolist() == [1.0, 2.0] and arrays["b"].tolist() == [b"x", b"y"]
    arrays, row_format = parse_predict_body({"inputs": {"a": [1, 2, 3], "b": ["z"]}}, signature)
    assert not row_format and arrays["a"].shape == (3,) and arrays["b"].shape == (1,)
    for body in ({"instances": [1, 2]}, {"instances": [{"a": 1, "b": "x"}, {"a": 2}]}, {}, {"instances": []}):
        with pytest.raises(ServingError):
            parse_predict_body(body, signature)


def test_format_predict_response_shapes_and_binary_outputs():
    outputs = {"p": np.array([0.1, 0.25], np.float32), "name_bytes": np.array([b"\xff", b"a"], dtype=object)}
    rows = format_predict_response(outputs, row_format=True)["predictions"]
    assert rows == [{"p": 0.1, "name_bytes": {"b64": "/w=="}}, {"p": 0.25, "name_bytes": {"b64": "YQ=="}}]
    assert format_predict_response({"p": outputs["p"]}, row_format=True) == {"predictions": [0.1, 0.25]}
    assert format_predict_response({"p": outputs["p"]}, row_format=False) == {"outputs": [0.1, 0.25]}
    with pytest.raises(ServingError):
        format_predict_response({"a": np.zeros(2), "b": np.zeros(3)}, row_format=True)


# ------------------------------------------------------------------------------- warmup


def test_warmup_file_round_trips_and_is_replayed_on_load(tmp_path):
    export_dir = str(tmp_path / "lookup" / "1")
    export_lookup(export_dir)
    log = build_predict_warmup(read_signature_defs(export_dir), "lookup")
    assert log.predict_log.request.inputs["genre"].dtype == types_pb2.DT_STRING
    write_warmup_requests(export_dir, [log, log])
    assert [entry.SerializeToString() for entry in read_warmup_requests(export_dir)] == [log.SerializeToString()] * 2
    # The file is a plain TFRecord of PredictionLogs, as TF Serving reads it.
    assert sum(1 for _ in tf.data.TFRecordDataset(warmup_path(export_dir))) == 2
    load_servable("lookup", 1, export_dir)  # replays both


def test_failing_warmup_fails_the_load(tmp_path):
    export_dir = str(tmp_path / "scorer" / "1")
    export_scorer(export_dir, weight=1.0)
    log = build_predict_warmup(read_signature_defs(export_dir), "scorer")
    log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 5), np.float32)))
    write_warmup_requests(export_dir, [log])
    with pytest.raises(ValueError, match="warmup request 0"):
        load_servable("scorer", 1, export_dir)
    with pytest.raises(ModelLoadError, match="warmup request 0"):
        LocalModelServer({"scorer": str(tmp_path / "scorer")}, port=0, poll_wait_seconds=0,
                         loading=ModelLoadOptions(max_num_load_retries=0)).start()
    # --enable_model_warmup=false: the requests are not replayed, so the version loads.
    with LocalModelServer({"scorer": str(tmp_path / "scorer")}, port=0, poll_wait_seconds=0,
                          loading=ModelLoadOptions(enable_model_warmup=False)) as server:
        assert server.registry.served_versions() == {"scorer": 1}


# ---------------------------------------------------------------- option files, flags


def test_batching_and_monitoring_files(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 500 }\n"
                        "num_batch_threads { value: 2 }\npad_variable_length_inputs: false\n")
    assert read_batching_parameters(batching) == BatchingOptions(64, 500, 2, BatchingOptions().max_enqueued_batches)
    batching.write_text("max_batch_size { value: 0 }")
    with pytest.raises(ValueError, match="max_batch_size"):
        read_batching_parameters(batching)
    batching.write_text("no_such_field: 1")
    with pytest.raises(ValueError):
        read_batching_parameters(batching)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    assert read_monitoring_config(monitoring) == "/monitoring/prometheus/metrics"
    monitoring.write_text('prometheus_config { enable: false path: "/m" }')
    assert read_monitoring_config(monitoring) is None


def test_new_flags_parse(tmp_path):
    (tmp_path / "b.config").write_text("max_batch_size { value: 8 }")
    (tmp_path / "m.config").write_text('prometheus_config { enable: true path: "/metrics" }')
    parsed = flags.parse_flags([
        f"--model_base_path={tmp_path}", "--rest_api_port=8501", "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'b.config'}", f"--monitoring_config_file={tmp_path / 'm.config'}"])
    assert parsed.batching.max_batch_size == 8 and parsed.metrics_path == "/metrics"
    assert parsed.rest_api_port == 8501
    # Default with batching: a full batch of 8 for each of the 4 batch threads plus one filling.
    assert parsed.grpc_max_threads is None and flags.server_from_flags(parsed).max_workers == 8 * (4 + 1)
    threads = flags.parse_flags([f"--model_base_path={tmp_path}", "--grpc_max_threads=4"])
    assert flags.server_from_flags(threads).max_workers == 4
    with pytest.raises(SystemExit):
        flags.parse_flags([f"--model_base_path={tmp_path}", "--grpc_max_threads=0"])
    assert flags.parse_flags([f"--model_base_path={tmp_path}", "--enable_batching=false"]).batching is None
    with pytest.raises(SystemExit):
        flags.parse_flags([f"--model_base_path={tmp_path}", "--enable_batching",
                           f"--batching_parameters_file={tmp_path / 'missing'}"])


def test_metrics_render_counts_errors_histogram_and_versions():
    metrics = ServingMetrics(lambda: {"genre": [3, 4]})
    metrics.record("genre", "Predict", "GRPC", grpc.StatusCode.OK, 0.001)
    metrics.record("genre", "Predict", "REST", grpc.StatusCode.NOT_FOUND, 0.0001)
    text = metrics.render()
    assert ':tensorflow:serving:request_count{model_name="genre",status="OK"} 1' in text
    assert 'request_error_count{model_name="genre",API="Predict",entrypoint="REST",status="NOT_FOUND"} 1' in text
    assert 'request_latency_bucket{model_name="genre",API="Predict",entrypoint="GRPC",le="1600"} 1' in text
    assert 'request_latency_bucket{model_name="genre",API="Predict",entrypoint="GRPC",le="800"} 0' in text
    assert ':tensorflow:serving:model_version_loaded{model_name="genre",version="4"} 1' in text


# ------------------------------------------------------------- REST limits, config reload


def test_rest_refuses_an_oversized_body_unread_and_keeps_serving(tmp_path):
    import http.client

    from musicrec.serving.rest_client import RestClient

    export_scorer(str(tmp_path / "scorer" / "1"), weight=1.0)
    with LocalModelServer({"scorer": str(tmp_path / "scorer")}, port=0, rest_port=0, poll_wait_seconds=0,
                          max_message_bytes=4096) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
        connection.putrequest("POST", "/v1/models/scorer:predict")
        connection.putheader("Content-Length", str(10**9))  # never sent
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 429  # RESOURCE_EXHAUSTED, as TF Serving maps it
        assert "exceeds" in response.read().decode()
        connection.close()
        rest = RestClient(server.rest_url, retries=0)
        assert rest.predict("scorer", inputs={"x": X.tolist()})["total"] == pytest.approx([13.0, 8.0])


def test_config_file_watcher_reloads_changed_models(tmp_path, caplog):
    from musicrec.serving.config import write_model_config

    export_scorer(str(tmp_path / "scorer" / "1"), weight=1.0)
    export_lookup(str(tmp_path / "lookup" / "1"))
    config_path = write_model_config(tmp_path / "models.config", {"scorer": str(tmp_path / "scorer")})
    parsed = flags.parse_flags([f"--model_config_file={config_path}", "--port=0",
                                "--model_config_file_poll_wait_seconds=1",
                                "--tensorflow_inter_op_parallelism=2"])
    assert parsed.tensorflow_inter_op_parallelism == 2
    with flags.server_from_flags(parsed) as server:
        watcher = flags._ConfigFileWatcher(server, config_path)
        watcher.check()  # unchanged: nothing happens
        assert server.registry.model_names == ["scorer"]
        write_model_config(config_path, {"lookup": str(tmp_path / "lookup")})
        watcher.check()
        assert server.registry.served_versions() == {"lookup": 1}
        with PredictionClient(server.address) as client:
            with pytest.raises(ServingError) as raised:
                client.predict("scorer", {"x": X})
            assert raised.value.code == grpc.StatusCode.NOT_FOUND
        # A label on a version that is not loaded is refused, as TF Serving logs a failed poll.
        with open(config_path, "w", encoding="utf-8") as handle:
            handle.write(f'model_config_list {{ config {{ name: "lookup" base_path: "{tmp_path / "lookup"}" '
                         'version_labels { key: "next" value: 9 } } }')
        with caplog.at_level(logging.ERROR, logger="musicrec.serving.flags"):
            watcher.check()
        assert "Request to assign label to version 9 of model lookup" in caplog.text
        assert server.registry.served_versions() == {"lookup": 1}


# --------------------------------------------------------------------------- TensorProto conversions


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
    np.arange(6, dtype=np.int64).reshape(1, 2, 3) - 3,
    np.array([[True, False]]),
    np.arange(4, dtype=np.float64),
    np.arange(4, dtype=np.uint8),
    np.array([[b"a", b""], [b"\xff\x00", "é".encode()]], dtype=object),
    np.array([["x", "é"]]),
    np.zeros((0, 3), np.float32),
])
def test_tensor_proto_fast_paths_match_tensorflow(array):
    from musicrec.serving.tensor_proto import make_tensor_proto, to_ndarray

    ours = make_tensor_proto(array)
    reference = tf.make_tensor_proto(array, dtype=tf.string if array.dtype.kind in "OSU" else None)

    assert ours == reference  # same wire encoding as TensorFlow's
    for proto in (ours, reference):
        decoded, expected = to_ndarray(proto), tf.make_ndarray(proto)
        assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
        assert decoded.tolist() == expected.tolist()


def test_tensor_proto_decoding_refuses_a_content_size_mismatch_and_broadcasts_like_tf():
    from tensorflow.core.framework import tensor_pb2

    from musicrec.serving.tensor_proto import make_tensor_proto, to_ndarray

    truncated = make_tensor_proto(np.ones((2, 3), np.float32))
    truncated.tensor_content = truncated.tensor_content[:-4]
    with pytest.raises(ValueError, match="tensor_content holds 20 bytes"):
        to_ndarray(truncated)

    one_value = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[2.5])
    one_value.tensor_shape.dim.add().size = 3
    np.testing.assert_array_equal(to_ndarray(one_value), [2.5, 2.5, 2.5])  # TF's fallback path
    one_string = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"k"])
    one_string.tensor_shape.dim.add().size = 2
    assert to_ndarray(one_string).tolist() == [b"k", b"k"]
