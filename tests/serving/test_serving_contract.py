"""One contract for both model servers: musicrec's LocalModelServer and, when env
TFS_BINARY names a ``tensorflow_model_server`` binary, the real one (skipped otherwise).

Every test talks to the server only through gRPC and REST, so a client cannot
tell the two apart: every RPC and REST route, the status codes, the version
policy and labels, and hot reload under traffic with zero failed requests.
Each test names the TF Serving 2.17.1 source file (under
``tensorflow_serving/``) whose behaviour it asserts; ``test_serving_parity.py``
continues the contract.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serving_example_models import export_examples_model, export_ints  # noqa: E402
from test_serving import export_lookup, export_scorer  # noqa: E402  (shared tiny models)

from musicrec.demo import stop_process
from musicrec.serving import flags
from musicrec.serving.client import PredictionClient
from musicrec.serving.rest_client import RestClient
from musicrec.serving.errors import ServingError

MAX_MESSAGE_BYTES = 256 * 1024
METRICS_PATH = "/monitoring/prometheus/metrics"
X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)
CLASS_LABELS = [b"calm", b"loud"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def export_classifier(export_dir: str) -> None:
    """A classification signature: serialized tf.Example with float "x" [3] → classes, scores [n, 2].

    TF2 exports every signature with the predict method name, so the method
    is rewritten to ``tensorflow/serving/classify`` in saved_model.pb, which
    is what makes TF Serving's Classify accept it.
    """
    class Classifier(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            features = tf.io.parse_example(inputs, {"x": tf.io.FixedLenFeature([3], tf.float32)})
            loud = tf.sigmoid(tf.reduce_sum(features["x"], axis=1))
            scores = tf.stack([1.0 - loud, loud], axis=1)
            classes = tf.tile(tf.constant([CLASS_LABELS]), [tf.shape(inputs)[0], 1])
            return {"classes": classes, "scores": scores}

    module = Classifier()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": module.classify})
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    saved_model.meta_graphs[0].signature_def["serving_default"].method_name = "tensorflow/serving/classify"
    with open(path, "wb") as handle:
        handle.write(saved_model.SerializeToString())


def config_text(base: str) -> str:
    """scorer: versions 1 and 2 (policy all, labels); latest_scorer: same folder, default policy;
    examples and ints: see serving_example_models."""
    return f"""
model_config_list {{
  config {{
    name: "scorer" base_path: "{base}/scorer" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "latest_scorer" base_path: "{base}/scorer" model_platform: "tensorflow" }}
  config {{ name: "lookup" base_path: "{base}/lookup" model_platform: "tensorflow" }}
  config {{ name: "classifier" base_path: "{base}/classifier" model_platform: "tensorflow" }}
  config {{ name: "examples" base_path: "{base}/examples" model_platform: "tensorflow" }}
  config {{ name: "ints" base_path: "{base}/ints" model_platform: "tensorflow" }}
}}
"""


@dataclass
class RunningServer:
    """A started server of either kind: addresses and how to stop it."""

    kind: str
    grpc_target: str
    rest_url: str
    stop: Callable[[], None]


def common_flags(config_path: str, poll_seconds: float, extra_flags: Sequence[str]) -> list[str]:
    """TF Serving flags both backends get: the config, monitoring, polling, limits.

    Labels in a startup config need ``--allow_version_labels_for_unavailable_models``
    (``model_servers/server_core.cc``, ``UpdateModelVersionLabelMap``).
    """
    monitoring = os.path.join(os.path.dirname(config_path), "monitoring.config")
    return [f"--model_config_file={config_path}", f"--monitoring_config_file={monitoring}",
            f"--file_system_poll_wait_seconds={max(1, int(poll_seconds)) if poll_seconds else 0}",
            f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_MESSAGE_BYTES}",
            "--allow_version_labels_for_unavailable_models=true", *extra_flags]


def start_local(config_path: str, poll_seconds: float = 0.0, extra_flags: Sequence[str] = ()) -> RunningServer:
    """``python -m musicrec.serving``'s own flag parsing and server, in this process."""
    parsed = flags.parse_flags([*common_flags(config_path, poll_seconds, extra_flags), "--rest_api_port=1",
                                f"--max_message_bytes={MAX_MESSAGE_BYTES}"])
    # The local server polls faster than the whole seconds TF Serving takes.
    parsed = dataclasses.replace(parsed, port=0, file_system_poll_wait_seconds=poll_seconds)
    server = flags.server_from_flags(parsed)
    server.requested_rest_port = 0  # any free port, picked when binding
    server.start()
    return RunningServer("local", server.address, server.rest_url, lambda: server.stop(grace_seconds=1))


def start_tfs(config_path: str, poll_seconds: float = 0.0, extra_flags: Sequence[str] = ()) -> RunningServer:
    binary = os.environ["TFS_BINARY"]
    port, rest_port = free_port(), free_port()
    command = [binary, f"--port={port}", f"--rest_api_port={rest_port}",
               *common_flags(config_path, poll_seconds, extra_flags)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop() -> None:
        stop_process(process, timeout_seconds=20)

    target = f"127.0.0.1:{port}"
    with PredictionClient(target, timeout_seconds=2, retries=0) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.get_model_status("scorer")
                break
            except ServingError:
                if time.monotonic() > deadline or process.poll() is not None:
                    stop()
                    raise RuntimeError(f"{binary} did not become ready")
                time.sleep(0.5)
    return RunningServer("tfs", target, f"http://127.0.0.1:{rest_port}", stop)


BACKENDS = [
    pytest.param(start_local, id="local"),
    pytest.param(start_tfs, id="tfs", marks=pytest.mark.skipif(
        not os.environ.get("TFS_BINARY"), reason="set TFS_BINARY to a tensorflow_model_server binary")),
]


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("contract")
    export_scorer(str(base / "scorer" / "1"), weight=1.0)
    export_scorer(str(base / "scorer" / "2"), weight=2.0)
    export_lookup(str(base / "lookup" / "1"))
    export_classifier(str(base / "classifier" / "1"))
    export_examples_model(str(base / "examples" / "1"))
    export_ints(str(base / "ints" / "1"))
    (base / "models.config").write_text(config_text(str(base)))
    (base / "monitoring.config").write_text(
        f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    return str(base)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, model_base) -> RunningServer:
    running = request.param(os.path.join(model_base, "models.config"))
    yield running
    running.stop()


@pytest.fixture()
def client(server):
    with PredictionClient(server.grpc_target, timeout_seconds=10, retries=0) as prediction_client:
        yield prediction_client


@pytest.fixture()
def rest(server):
    return RestClient(server.rest_url, timeout_seconds=10, retries=0)


def expected_total(weight: float) -> np.ndarray:
    # export_scorer: scores = x @ (weight everywhere) + 0.5, total = sum of the 2 scores.
    return 2 * (X.sum(axis=1) * weight + 0.5)


def grpc_error(call) -> ServingError:
    with pytest.raises(ServingError) as raised:
        call()
    return raised.value


# ----------------------------------------------------------------------- gRPC Predict


def test_predict_latest_specific_and_labelled_versions(client):
    """model_servers/server_core.cc: ServableRequestFromModelSpec, GetModelVersionForLabel."""
    np.testing.assert_allclose(client.predict("scorer", {"x": X})["total"], expected_total(2.0), rtol=1e-6)
    np.testing.assert_allclose(client.predict("scorer", {"x": X}, version=1)["total"], expected_total(1.0))
    np.testing.assert_allclose(client.predict("scorer", {"x": X}, label="stable")["total"], expected_total(1.0))
    np.testing.assert_allclose(client.predict("scorer", {"x": X}, label="canary")["total"], expected_total(2.0))


def test_latest_policy_serves_only_the_newest_version(client):
    """core/servable_state_monitor.cc and sources/storage_path/file_system_storage_path_source.cc:
    the default policy aspires the highest version only."""
    np.testing.assert_allclose(client.predict("latest_scorer", {"x": X})["total"], expected_total(2.0))
    error = grpc_error(lambda: client.predict("latest_scorer", {"x": X}, version=1))
    assert error.code == grpc.StatusCode.NOT_FOUND


def test_response_names_model_version_and_signature(server):
    """servables/tensorflow/predict_util.cc: RunPredict's MakeModelSpec."""
    channel = grpc.insecure_channel(server.grpc_target)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "scorer"
    request.model_spec.version_label = "stable"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
    channel.close()
    assert (response.model_spec.name, response.model_spec.version.value) == ("scorer", 1)
    assert response.model_spec.signature_name == "serving_default"


def test_string_inputs_and_outputs(client):
    """servables/tensorflow/predict_util.cc: string tensors in, string tensors out."""
    outputs = client.predict("lookup", {"genre": np.array(["jazz", "metal"])})
    assert outputs["echo"].tolist() == [b"jazz", b"[UNK]"]


@pytest.mark.parametrize(
    "model, inputs, kwargs, code",
    [
        ("nope", {"x": X}, {}, grpc.StatusCode.NOT_FOUND),
        ("scorer", {"x": X}, {"version": 9}, grpc.StatusCode.NOT_FOUND),
        ("scorer", {"x": X}, {"label": "nope"}, grpc.StatusCode.INVALID_ARGUMENT),
        ("scorer", {}, {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("scorer", {"x": X.astype(np.float64)}, {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("scorer", {"x": np.ones((2, 4), np.float32)}, {}, grpc.StatusCode.INVALID_ARGUMENT),
        ("scorer", {"x": X}, {"signature_name": "nope"}, grpc.StatusCode.FAILED_PRECONDITION),
        ("scorer", {"x": X}, {"output_filter": ["nope"]}, grpc.StatusCode.INVALID_ARGUMENT),
        ("scorer", {"x": np.zeros((MAX_MESSAGE_BYTES // 12 + 100, 3), np.float32)}, {},
         grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
    ids=["unknown-model", "unknown-version", "unknown-label", "missing-input", "dtype", "shape",
         "signature", "output-filter", "oversized"],
)
def test_predict_error_codes(client, model, inputs, kwargs, code):
    """servables/tensorflow/predict_util.cc (FAILED_PRECONDITION for a signature, INVALID_ARGUMENT
    for inputs and output_filter), model_servers/server_core.cc (NOT_FOUND, unknown label)."""
    assert grpc_error(lambda: client.predict(model, inputs, **kwargs)).code == code
    assert client.predict("scorer", {"x": X})["total"].shape == (2,)  # still serving


# ------------------------------------------------------- gRPC Classify, metadata, status


def test_classify_on_a_classification_signature(client):
    """servables/tensorflow/classifier.cc: RunClassify, PostProcessClassificationResult."""
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=values))}))
        for values in ([5.0, 5.0, 5.0], [-5.0, -5.0, -5.0])]
    results = client.classify("classifier", examples)
    assert [[label for label, _ in row] for row in results] == [["calm", "loud"]] * 2
    assert results[0][1][1] > 0.99 and results[1][0][1] > 0.99


def test_classify_on_a_predict_signature_is_invalid_argument(client):
    """servables/tensorflow/classifier.cc: PreProcessClassification refuses a signature without "inputs"."""
    example = tf.train.Example()
    assert grpc_error(lambda: client.classify("scorer", [example])).code == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_metadata(client):
    """servables/tensorflow/get_model_metadata_impl.cc."""
    summary = client.get_model_metadata("scorer", version=1)
    assert summary["serving_default"]["inputs"] == {"x": ("float32", (None, 3))}
    assert grpc_error(lambda: client.get_model_metadata("nope")).code == grpc.StatusCode.NOT_FOUND


def test_get_model_status_lists_versions_and_ignores_labels(client):
    """model_servers/get_model_status_impl.cc: the name and the version are read, a label is not."""
    statuses = client.get_model_status("scorer")
    assert sorted((entry["version"], entry["state"]) for entry in statuses) == [(1, "AVAILABLE"), (2, "AVAILABLE")]
    assert all(entry["error_code"] == grpc.StatusCode.OK for entry in statuses)
    for label in ("canary", "nope"):
        assert sorted(entry["version"] for entry in client.get_model_status("scorer", label=label)) == [1, 2]
    assert grpc_error(lambda: client.get_model_status("nope")).code == grpc.StatusCode.NOT_FOUND
    assert grpc_error(lambda: client.get_model_status("scorer", version=9)).code == grpc.StatusCode.NOT_FOUND


# -------------------------------------------------------------------------------- REST


def test_rest_status_routes(rest):
    """model_servers/http_rest_api_handler.cc (ProcessModelStatusRequest), http_rest_api_util.cc
    (ToJsonString); the label goes to GetModelStatus, which ignores it (get_model_status_impl.cc)."""
    assert sorted(entry["version"] for entry in rest.get_model_status("scorer")) == ["1", "2"]
    assert rest.get_model_status("scorer", version=1) == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]
    assert sorted(entry["version"] for entry in rest.get_model_status("scorer", label="canary")) == ["1", "2"]


def test_rest_metadata_routes(rest):
    """model_servers/http_rest_api_handler.cc (ProcessModelMetadataRequest), http_rest_api_util.cc."""
    for kwargs, version in (({}, "2"), ({"version": 1}, "1"), ({"label": "stable"}, "1")):
        metadata = rest.get_model_metadata("scorer", **kwargs)
        assert metadata["model_spec"]["name"] == "scorer"
        assert metadata["model_spec"]["version"] == version
        signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
        assert signature["method_name"] == "tensorflow/serving/predict"


def test_rest_predict_row_and_columnar_formats(rest):
    """util/json_tensor.cc: FillPredictRequestFromJson, MakeJsonFromTensors."""
    rows = rest.predict("scorer", instances=X.tolist())
    assert [row["total"] for row in rows] == pytest.approx(expected_total(2.0).tolist())
    named_rows = rest.predict("scorer", instances=[{"x": row} for row in X.tolist()], version=1)
    assert [row["total"] for row in named_rows] == pytest.approx(expected_total(1.0).tolist())
    columns = rest.predict("scorer", inputs={"x": X.tolist()}, label="stable")
    assert columns["total"] == pytest.approx(expected_total(1.0).tolist())
    assert np.array(columns["scores"]).shape == (2, 2)
    unnamed = rest.predict("scorer", inputs=X.tolist())
    assert unnamed["total"] == pytest.approx(expected_total(2.0).tolist())


def test_rest_predict_binary_strings(rest):
    """util/json_tensor.cc: {"b64": ...} values of string inputs."""
    rows = rest.predict("lookup", instances=["jazz", {"b64": "cm9jaw=="}])  # b64 of "rock"
    assert [row["echo"] for row in rows] == ["jazz", "rock"]
    assert rest.predict("lookup", inputs=[b"pop"])["echo"] == ["pop"]


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", "/v1/models/nope", None, 404),
        ("GET", "/v1/models/scorer/versions/9", None, 404),
        ("GET", "/v1/models/nope/metadata", None, 404),
        ("POST", "/v1/models/nope:predict", {"instances": [[1, 2, 3]]}, 404),
        ("POST", "/v1/models/scorer/labels/nope:predict", {"instances": [[1, 2, 3]]}, 400),
        ("POST", "/v1/models/scorer:predict", {"instances": [[1, 2]]}, 400),
        ("POST", "/v1/models/scorer:predict", {"instances": [["a", "b", "c"]]}, 400),
        ("POST", "/v1/models/scorer:predict", {"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, 400),
        ("POST", "/v1/models/scorer:predict", {"signature_name": "nope", "instances": [[1, 2, 3]]}, 400),
        ("POST", "/v1/models/scorer:predict", {"instances": [{"y": [1, 2, 3]}]}, 400),
    ],
    ids=["unknown-model", "unknown-version", "unknown-metadata", "predict-unknown-model", "unknown-label",
         "shape", "dtype", "both-formats", "signature", "wrong-name"],
)
def test_rest_errors_are_json_with_tf_serving_status(rest, method, path, body, status):
    """model_servers/http_server.cc (ToHTTPStatusCode), http_rest_api_handler.cc (GetInfoMap: an unknown
    signature is INVALID_ARGUMENT), util/json_tensor.cc (MakeJsonFromStatus)."""
    got_status, decoded = rest.request(method, path, body)
    assert got_status == status
    assert isinstance(decoded, dict) and set(decoded) == {"error"} and decoded["error"]


def test_rest_malformed_json_is_bad_request(server):
    """util/json_tensor.cc: ParseJson."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(server.rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("POST", "/v1/models/scorer:predict", body=b"{not json",
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 400 and "error" in json.loads(response.read())
    connection.close()


def test_prometheus_metrics(rest, client):
    """util/prometheus_exporter.cc, servables/tensorflow/util.cc (request_count)."""
    client.predict("scorer", {"x": X})
    status, text = rest.request("GET", METRICS_PATH)
    assert status == 200
    assert ":tensorflow:serving:request_count" in text and 'model_name="scorer"' in text


# ------------------------------------------------------------- hot reload and reloads


@pytest.mark.parametrize("start", BACKENDS)
def test_hot_reload_under_traffic_then_broken_version_is_reported(start, tmp_path):
    """core/aspired_versions_manager.cc (a new version loads before the old unloads), core/loader_harness.cc
    (a failed load ends in END with its error; no retries here), tsl env.cc ReadBinaryProto (DATA_LOSS)."""
    base = tmp_path / "scorer"
    export_scorer(str(base / "1"), weight=1.0)
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "scorer" base_path: "{base}" model_platform: "tensorflow" }} }}')
    (tmp_path / "monitoring.config").write_text("")
    running = start(str(tmp_path / "models.config"), poll_seconds=0.2, extra_flags=["--max_num_load_retries=0"])
    grpc_client = PredictionClient(running.grpc_target, timeout_seconds=10, retries=0)
    rest_client = RestClient(running.rest_url, timeout_seconds=10, retries=0)
    try:
        stop_traffic = threading.Event()
        seen: list[float] = []

        def traffic(use_rest: bool) -> int:
            sent = 0
            while not stop_traffic.is_set():
                if use_rest:
                    seen.append(rest_client.predict("scorer", inputs={"x": X.tolist()})["total"][0])
                else:
                    seen.append(float(grpc_client.predict("scorer", {"x": X})["total"][0]))
                sent += 1
            return sent

        with futures.ThreadPoolExecutor(max_workers=3) as pool:
            senders = [pool.submit(traffic, use_rest) for use_rest in (False, False, True)]
            export_scorer(str(tmp_path / "staging"), weight=2.0)
            os.rename(tmp_path / "staging", base / "2")  # the pusher's rename
            deadline = time.monotonic() + 30
            while grpc_client.predict("scorer", {"x": X})["total"][0] != pytest.approx(expected_total(2.0)[0]):
                assert time.monotonic() < deadline, "version 2 was never served"
                time.sleep(0.1)
            time.sleep(0.3)  # some traffic on the new version too
            stop_traffic.set()
            sent = sum(sender.result() for sender in senders)  # re-raises any failed request
        assert sent > 0
        assert set(np.round(seen, 3)) <= set(np.round([expected_total(1.0)[0], expected_total(2.0)[0]], 3))
        deadline = time.monotonic() + 30
        while [entry["state"] for entry in grpc_client.get_model_status("scorer", version=1)] != ["END"]:
            assert time.monotonic() < deadline, "version 1 was never unloaded"
            time.sleep(0.1)

        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"not a protobuf")
        deadline = time.monotonic() + 30
        while True:
            try:
                broken = grpc_client.get_model_status("scorer", version=3)[0]
                if broken["error_code"] != grpc.StatusCode.OK:
                    break
            except ServingError:
                pass
            assert time.monotonic() < deadline, "the broken version was never reported"
            time.sleep(0.1)
        assert broken["state"] == "END" and broken["error_message"]
        assert broken["error_code"] == grpc.StatusCode.DATA_LOSS
        np.testing.assert_allclose(grpc_client.predict("scorer", {"x": X})["total"], expected_total(2.0))
    finally:
        grpc_client.close()
        running.stop()


@pytest.mark.parametrize("start", BACKENDS)
def test_reload_config_adds_and_removes_models_and_changes_policy(start, model_base, tmp_path):
    """model_servers/model_service_impl.cc (HandleReloadConfigRequest), model_servers/server_core.cc."""
    config_path = tmp_path / "models.config"
    shutil.copy(os.path.join(model_base, "monitoring.config"), tmp_path / "monitoring.config")
    config_path.write_text(
        f'model_config_list {{ config {{ name: "scorer" base_path: "{model_base}/scorer" '
        f'model_platform: "tensorflow" }} }}')
    running = start(str(config_path))
    try:
        with PredictionClient(running.grpc_target, timeout_seconds=30, retries=0) as grpc_client:
            assert grpc_error(lambda: grpc_client.predict("lookup", {"genre": np.array(["pop"])})).code == \
                grpc.StatusCode.NOT_FOUND
            new_config = model_server_config_pb2.ModelServerConfig()
            text_format.Parse(
                f'model_config_list {{ config {{ name: "scorer" base_path: "{model_base}/scorer" '
                f'model_platform: "tensorflow" model_version_policy {{ specific {{ versions: 1 }} }} }} '
                f'config {{ name: "lookup" base_path: "{model_base}/lookup" model_platform: "tensorflow" }} }}',
                new_config)
            grpc_client.reload_config(new_config)
            assert grpc_client.predict("lookup", {"genre": np.array(["pop"])})["echo"].tolist() == [b"pop"]
            deadline = time.monotonic() + 30
            while True:  # TF Serving unloads the no longer wanted version asynchronously
                try:
                    grpc_client.predict("scorer", {"x": X}, version=2)
                except ServingError as error:
                    assert error.code == grpc.StatusCode.NOT_FOUND
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
            np.testing.assert_allclose(grpc_client.predict("scorer", {"x": X})["total"], expected_total(1.0))

            only_lookup = model_server_config_pb2.ModelServerConfig()
            text_format.Parse(
                f'model_config_list {{ config {{ name: "lookup" base_path: "{model_base}/lookup" '
                f'model_platform: "tensorflow" }} }}', only_lookup)
            grpc_client.reload_config(only_lookup)
            deadline = time.monotonic() + 30
            while True:
                try:
                    grpc_client.predict("scorer", {"x": X})
                except ServingError as error:
                    assert error.code == grpc.StatusCode.NOT_FOUND
                    break
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        running.stop()
