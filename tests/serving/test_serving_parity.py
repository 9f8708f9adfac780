"""The serving contract, continued: what a TF Serving client relies on beyond the core routes.

Run, like ``test_serving_contract.py``, against musicrec's server and, with
env ``TFS_BINARY`` set, against a real ``tensorflow_model_server``. Each test
names the TF Serving 2.17.1 source file (under ``tensorflow_serving/``) whose
behaviour it asserts.
"""
from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import sys
import time
from urllib.parse import urlsplit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_serving import export_scorer  # noqa: E402  (shared tiny models)
# The contract's models, server and REST client: one server per backend and module.
from test_serving_contract import (  # noqa: E402,F401  (fixtures)
    BACKENDS,
    METRICS_PATH,
    X,
    expected_total,
    model_base,
    rest,
    server,
)

from musicrec.serving.client import PredictionClient
from musicrec.serving.errors import ServingError

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture()
def stub(server):
    channel = grpc.insecure_channel(server.grpc_target)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def example(*values: float) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=values))}))


def raw_http(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             encode_chunked: bool = False) -> tuple[int, bytes]:
    url = urlsplit(server.rest_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=encode_chunked)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ------------------------------------------------------------------------- gRPC Predict


def test_predict_outputs_are_in_typed_fields_and_decode_with_make_ndarray(stub):
    """servables/tensorflow/predict_util.cc: RunPredict serializes outputs kAsProtoField
    (Tensor::AsProtoField: float_val, int_val, int64_val, string_val), not tensor_content."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "scorer"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))
    total = stub.Predict(request, timeout=10).outputs["total"]
    assert total.tensor_content == b""
    np.testing.assert_allclose(list(total.float_val), expected_total(2.0), rtol=1e-6)
    np.testing.assert_allclose(tf.make_ndarray(total), expected_total(2.0), rtol=1e-6)

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lookup"
    request.inputs["genre"].CopyFrom(tf.make_tensor_proto(np.array([b"jazz", b"pop"])))
    outputs = stub.Predict(request, timeout=10).outputs
    assert list(outputs["ids"].int64_val) == [2, 3] and outputs["ids"].tensor_content == b""
    assert list(outputs["echo"].string_val) == [b"jazz", b"pop"]

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ints"
    request.inputs["k"].CopyFrom(tf.make_tensor_proto(np.array([3, -4], np.int32)))
    doubled = stub.Predict(request, timeout=10).outputs["doubled"]
    assert list(doubled.int_val) == [6, -8] and tf.make_ndarray(doubled).dtype == np.int32


def test_the_musicrec_client_reads_typed_fields(server):
    """servables/tensorflow/predict_util.cc: the client decodes what the server sends."""
    with PredictionClient(server.grpc_target, timeout_seconds=10, retries=0) as client:
        outputs = client.predict("scorer", {"x": X})
        assert outputs["scores"].dtype == np.float32 and outputs["scores"].shape == (2, 2)
        np.testing.assert_allclose(outputs["total"], expected_total(2.0), rtol=1e-6)


@pytest.mark.parametrize("rpc", ["Predict", "Classify", "Regress", "GetModelMetadata"])
def test_an_empty_model_name_is_invalid_argument(stub, rpc):
    """model_servers/server_core.cc: ServableRequestFromModelSpec; a request without any
    ModelSpec: predict_impl.cc, classification_service.cc, regression_service.cc."""
    make = {"Predict": predict_pb2.PredictRequest, "Classify": classification_pb2.ClassificationRequest,
            "Regress": regression_pb2.RegressionRequest,
            "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest}[rpc]
    request = make()
    if rpc == "GetModelMetadata":
        request.metadata_field.append("signature_def")
    error = rpc_error(lambda: getattr(stub, rpc)(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details() == "Missing ModelSpec"
    request.model_spec.SetInParent()
    error = rpc_error(lambda: getattr(stub, rpc)(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "ModelSpec has no name specified."


# ------------------------------------------------------- Classify, Regress, MultiInference


def test_classify_and_regress_a_tf2_export_by_its_signature_shape(stub):
    """servables/tensorflow/classifier.cc and regressor.cc: without --enable_signature_method_name_check
    (server.h: false) a signature qualifies by its "inputs" and "classes"/"scores" or "outputs"."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "examples"
    request.input.example_list.examples.extend([example(5, 5, 5), example(-5, -5, -5)])
    response = stub.Classify(request, timeout=10)
    assert (response.model_spec.name, response.model_spec.signature_name) == ("examples", "serving_default")
    assert response.model_spec.version.value == 1
    rows = [[(entry.label, entry.score) for entry in row.classes] for row in response.result.classifications]
    assert [[label for label, _ in row] for row in rows] == [["calm", "loud"]] * 2
    assert rows[0][1][1] > 0.99 and rows[1][0][1] > 0.99

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "examples"
    request.model_spec.signature_name = "regress"
    request.input.example_list_with_context.context.CopyFrom(example(1, 1, 1))
    request.input.example_list_with_context.examples.extend([example(1, 2, 3), tf.train.Example()])
    response = stub.Regress(request, timeout=10)
    assert response.model_spec.signature_name == "regress"
    # The context's x fills the example that has none; an example's own x wins.
    assert [result.value for result in response.result.regressions] == pytest.approx([6.0, 3.0])


@pytest.mark.parametrize("rpc, model, signature, message", [
    ("Classify", "scorer", "", "No classification inputs found in SignatureDef"),
    ("Regress", "scorer", "", "Expected one output Tensor."),
    ("Regress", "examples", "", "Expected one output Tensor."),
    ("Regress", "examples", "nope", "No signature was found with the name: nope"),
    ("Classify", "examples", "regress", "Expected classification signature outputs to contain at least one of"),
])
def test_classify_and_regress_refuse_other_signatures(stub, rpc, model, signature, message):
    """servables/tensorflow/classifier.cc (PreProcessClassification, GetClassificationSignatureDef) and
    regressor.cc (PreProcessRegression): INVALID_ARGUMENT, e.g. for musicrec's predict-only models."""
    request = (classification_pb2.ClassificationRequest() if rpc == "Classify"
               else regression_pb2.RegressionRequest())
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.input.example_list.examples.add().CopyFrom(example(1, 2, 3))
    error = rpc_error(lambda: getattr(stub, rpc)(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


def test_classify_with_no_examples_is_invalid_argument(stub):
    """servables/tensorflow/util.cc: InputToSerializedExampleTensor, "Input is empty."."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "examples"
    error = rpc_error(lambda: stub.Classify(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "Input is empty" in error.details()


def test_multi_inference_runs_classify_and_regress_tasks_on_the_same_examples(stub):
    """servables/tensorflow/multi_inference.cc: TensorFlowMultiInferenceRunner::Infer."""
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("serving_default", CLASSIFY), ("regress", REGRESS)):
        task = request.tasks.add()
        task.model_spec.name = "examples"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend([example(1, 2, 3), example(-1, 0, 0)])
    results = stub.MultiInference(request, timeout=10).results
    assert [result.WhichOneof("result") for result in results] == ["classification_result", "regression_result"]
    assert [result.model_spec.signature_name for result in results] == ["serving_default", "regress"]
    assert len(results[0].classification_result.classifications) == 2
    assert [value.value for value in results[1].regression_result.regressions] == pytest.approx([6.0, -1.0])


@pytest.mark.parametrize("tasks, code, message", [
    ([("examples", "serving_default", "tensorflow/serving/predict")], grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name"),
    ([("examples", "serving_default", CLASSIFY), ("scorer", "regress", REGRESS)],
     grpc.StatusCode.INVALID_ARGUMENT, "must access the same model name"),
    ([("examples", "regress", REGRESS), ("examples", "regress", REGRESS)], grpc.StatusCode.INVALID_ARGUMENT,
     "Duplicate evaluation of signature: regress"),
    ([("scorer", "serving_default", CLASSIFY)], grpc.StatusCode.INVALID_ARGUMENT,
     "No classification inputs found"),
    ([], grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
])
def test_multi_inference_errors(stub, tasks, code, message):
    """servables/tensorflow/multi_inference.cc, multi_inference_helper.cc (the first task's spec)."""
    request = inference_pb2.MultiInferenceRequest()
    for model, signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name, task.method_name = model, signature, method
    request.input.example_list.examples.add().CopyFrom(example(1, 2, 3))
    error = rpc_error(lambda: stub.MultiInference(request, timeout=10))
    assert error.code() == code and message in error.details()


# ------------------------------------------------------------------------------ REST


def test_rest_classify_and_regress(rest):
    """model_servers/http_rest_api_handler.cc (ProcessClassifyRequest, ProcessRegressRequest) and
    util/json_tensor.cc (FillClassifyRegressRequestFromJson, MakeJsonFrom{Classification,Regression}Result)."""
    status, body = rest.request("POST", "/v1/models/examples:classify",
                                {"examples": [{"x": [5.0, 5.0, 5.0]}, {"x": [-5.0, -5.0, -5.0]}]})
    assert status == 200
    assert [[label for label, _ in row] for row in body["results"]] == [["calm", "loud"]] * 2
    assert body["results"][0][1][1] > 0.99
    status, body = rest.request("POST", "/v1/models/examples/versions/1:regress",
                                {"signature_name": "regress", "context": {"x": [1.0, 1.0, 1.0]},
                                 "examples": [{"x": [1.0, 2.0, 3.5]}, {}]})
    assert status == 200 and body["results"] == pytest.approx([6.5, 3.0])


@pytest.mark.parametrize("path, body, message", [
    ("/v1/models/scorer:classify", {"examples": [{"x": [1.0, 2.0, 3.0]}]}, "No classification inputs found"),
    ("/v1/models/scorer:regress", {"examples": [{"x": [1.0, 2.0, 3.0]}]}, "Expected one output Tensor."),
    ("/v1/models/examples:classify", {"instances": [1]}, "'examples' is expected and was not found"),
    ("/v1/models/examples:classify", {"examples": []}, "'examples' value is an empty array"),
    ("/v1/models/examples:classify", {"examples": [{"x": [1.0, "a"]}]}, "Unexpected element type in feature: x"),
])
def test_rest_classify_and_regress_errors_are_400(rest, path, body, message):
    """util/json_tensor.cc (AddValueToFeature, FillClassifyRegressRequestFromJson), classifier.cc, regressor.cc."""
    status, decoded = rest.request("POST", path, body)
    assert status == 400 and message in decoded["error"]


@pytest.mark.parametrize("value", [2**31, 2**32 + 5, -(2**31) - 1, 1.5, "7", True])
def test_rest_json_values_outside_int32_are_not_of_expected_type(rest, value):
    """util/json_tensor.cc: AddValueToTensor takes only rapidjson IsInt() values for DT_INT32."""
    status, decoded = rest.request("POST", "/v1/models/ints:predict", {"instances": [value]})
    assert status == 400 and "is not of expected type: int32" in decoded["error"]
    assert rest.predict("ints", instances=[2**31 - 1, -(2**31)]) is not None
    assert rest.predict("ints", inputs=[5, -3]) == [10, -6]


def test_rest_unknown_signature_is_400_and_a_failed_precondition_maps_to_400(rest):
    """model_servers/http_rest_api_handler.cc (GetInfoMap: INVALID_ARGUMENT) and http_server.cc
    (ToHTTPStatusCode: kFailedPrecondition → BAD_REQUEST)."""
    status, decoded = rest.request("POST", "/v1/models/scorer:predict",
                                   {"signature_name": "nope", "instances": [[1.0, 2.0, 3.0]]})
    assert status == 400
    assert decoded["error"] == 'Serving signature name: "nope" not found in signature def'


def test_rest_names_and_labels_are_percent_decoded_and_routes_case_insensitive(rest):
    """model_servers/http_rest_api_util.cc: DecodeArg (curl_easy_unescape) on name and label; the route
    regexes are (?i)."""
    assert rest.request("GET", "/v1/models/sc%6frer/versions/1")[0] == 200
    status, body = rest.request("POST", "/v1/models/scorer/labels/st%61ble:predict", {"instances": X.tolist()})
    assert status == 200 and [row["total"] for row in body["predictions"]] == pytest.approx(expected_total(1.0))
    assert rest.request("GET", "/V1/MODELS/scorer/VERSIONS/2")[0] == 200


@pytest.mark.parametrize("method, path, status", [
    ("POST", "/v1/models/scorer:predict?debug=1", 400),   # the query is part of the path matched
    ("GET", "/v1/models/scorer?debug=1", 404),             # ... so the model is named "scorer?debug=1"
    ("GET", f"{METRICS_PATH}?debug=1", 400),               # "Unexpected path"
    ("GET", "/v1/models", 400),                            # "Missing model name in request."
    ("GET", "/v1/nope", 400),                              # "Malformed request"
    ("PUT", "/v1/models/scorer", 400),                     # "Malformed request"
    ("GET", "/v2/models/scorer", 404),                     # not the handler's /v1/.* paths
])
def test_rest_query_strings_and_other_paths(rest, method, path, status):
    """util/net_http/server/internal/evhttp_request.cc (uri_path() is path and query),
    http_rest_api_util.cc (ParseModelInfo), http_rest_api_handler.cc, http_server.cc."""
    assert rest.request(method, path, {"instances": X.tolist()} if method != "GET" else None)[0] == status


def test_rest_accepts_chunked_and_gzip_bodies(server):
    """util/net_http/server/internal/evhttp_request.cc: libevent reads chunked bodies; ReadRequestBytes
    gunzips a body sent with Content-Encoding: gzip."""
    payload = json.dumps({"instances": X.tolist()}).encode()
    status, body = raw_http(server, "POST", "/v1/models/scorer:predict", iter([payload[:10], payload[10:]]),
                            {"Content-Type": "application/json"}, encode_chunked=True)
    assert status == 200, body
    assert [row["total"] for row in json.loads(body)["predictions"]] == pytest.approx(expected_total(2.0))
    status, body = raw_http(server, "POST", "/v1/models/scorer:predict", gzip.compress(payload),
                            {"Content-Encoding": "gzip"})
    assert status == 200, body


def test_rest_cors_preflight(server):
    """model_servers/http_server.cc: OPTIONS needs an http(s) Origin header."""
    assert raw_http(server, "OPTIONS", "/v1/models/scorer:predict", headers={"Origin": "https://a.b"})[0] == 200
    assert raw_http(server, "OPTIONS", "/v1/models/scorer:predict")[0] == 400


# --------------------------------------------------------------------------- metrics


def _metric(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_request_latency_counts_successes_with_tf_serving_labels(rest, server):
    """model_servers/prediction_service_impl.cc (gRPC: latency of OK requests, API "Predict"),
    http_server.cc (REST: latency of OK requests, API the URL's method, "predict"), servables/tensorflow/util.cc
    (request_count by status)."""
    latency = ":tensorflow:serving:request_latency_count"
    grpc_labels = 'model_name="ints",API="Predict",entrypoint="GRPC"'
    rest_labels = 'model_name="ints",API="predict",entrypoint="REST"'
    count = ":tensorflow:serving:request_count"
    before = rest.request("GET", METRICS_PATH)[1]
    with PredictionClient(server.grpc_target, timeout_seconds=10, retries=0) as client:
        for _ in range(3):
            client.predict("ints", {"k": np.array([1], np.int32)})
        for _ in range(2):
            with pytest.raises(ServingError):
                client.predict("ints", {"k": np.array([1.0], np.float32)})
    rest.predict("ints", instances=[1])
    assert rest.request("POST", "/v1/models/ints:predict", {"instances": ["x"]})[0] == 400
    after = rest.request("GET", METRICS_PATH)[1]
    assert _metric(after, latency, grpc_labels) - _metric(before, latency, grpc_labels) == 3
    assert _metric(after, latency, rest_labels) - _metric(before, latency, rest_labels) == 1
    ok, invalid = 'model_name="ints",status="OK"', 'model_name="ints",status="INVALID_ARGUMENT"'
    assert _metric(after, count, ok) - _metric(before, count, ok) == 4
    assert _metric(after, count, invalid) - _metric(before, count, invalid) == 3


# ------------------------------------------------------------- labels, loads, retries


def _config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@pytest.mark.parametrize("start", BACKENDS)
def test_a_label_on_a_version_not_available_is_failed_precondition(start, model_base, tmp_path):
    """model_servers/server_core.cc: UpdateModelVersionLabelMap checks labels against AVAILABLE versions."""
    shutil.copy(os.path.join(model_base, "monitoring.config"), tmp_path / "monitoring.config")
    scorer = f'name: "scorer" base_path: "{model_base}/scorer" model_platform: "tensorflow"'
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ {scorer} model_version_policy {{ all {{}} }} }} }}')
    running = start(str(tmp_path / "models.config"),
                    extra_flags=["--allow_version_labels_for_unavailable_models=false"])
    try:
        with PredictionClient(running.grpc_target, timeout_seconds=30, retries=0) as client:
            error = pytest.raises(ServingError, client.reload_config, _config(
                f'model_config_list {{ config {{ {scorer} version_labels {{ key: "next" value: 7 }} }} }}')).value
            assert error.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "Request to assign label to version 7 of model scorer" in error.message
            with pytest.raises(ServingError) as unknown:
                client.predict("scorer", {"x": X}, label="next")
            assert unknown.value.code == grpc.StatusCode.INVALID_ARGUMENT

            client.reload_config(_config(f'model_config_list {{ config {{ {scorer} model_version_policy {{ all {{}} }} '
                                         f'version_labels {{ key: "next" value: 1 }} }} }}'))
            np.testing.assert_allclose(client.predict("scorer", {"x": X}, label="next")["total"], expected_total(1.0))
    finally:
        running.stop()


@pytest.mark.parametrize("start", BACKENDS)
def test_a_failed_version_is_retried_and_loads_once_fixed_without_a_restart(start, tmp_path):
    """core/loader_harness.cc and util/retrier.cc: a failed load is retried --max_num_load_retries times,
    --load_retry_interval_micros apart, reporting LOADING meanwhile; each retry reads the folder afresh."""
    base = tmp_path / "scorer"
    export_scorer(str(base / "1"), weight=1.0)
    export_scorer(str(tmp_path / "staging"), weight=2.0)
    good = tmp_path / "good_saved_model.pb"
    shutil.copy(tmp_path / "staging" / "saved_model.pb", good)
    (tmp_path / "staging" / "saved_model.pb").write_bytes(b"not a protobuf")
    (tmp_path / "models.config").write_text(
        f'model_config_list {{ config {{ name: "scorer" base_path: "{base}" model_platform: "tensorflow" }} }}')
    (tmp_path / "monitoring.config").write_text("")
    interval_seconds = 2
    running = start(str(tmp_path / "models.config"), poll_seconds=0.2,
                    extra_flags=["--max_num_load_retries=1000",
                                 f"--load_retry_interval_micros={interval_seconds * 1_000_000}"])
    try:
        with PredictionClient(running.grpc_target, timeout_seconds=10, retries=0) as client:
            os.rename(tmp_path / "staging", base / "2")  # a broken version 2 appears
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get_model_status("scorer", version=2)[0]["state"] == "LOADING":
                        break
                except ServingError:
                    pass
                assert time.monotonic() < deadline, "version 2 was never tried"
                time.sleep(0.1)
            time.sleep(interval_seconds + 0.5)  # at least one retry has failed
            status = client.get_model_status("scorer", version=2)[0]
            assert status["state"] == "LOADING" and status["error_code"] == grpc.StatusCode.OK
            np.testing.assert_allclose(client.predict("scorer", {"x": X})["total"], expected_total(1.0))

            fixed_at = time.monotonic()
            os.rename(good, base / "2" / "saved_model.pb")  # the fixed copy renamed over the broken one
            # Within one retry interval, plus the load itself on a shared machine: the next retry
            # reads the fixed file.
            while client.get_model_status("scorer", version=2)[0]["state"] != "AVAILABLE":
                assert time.monotonic() - fixed_at < interval_seconds + 15, "the fixed version never loaded"
                time.sleep(0.1)
            np.testing.assert_allclose(client.predict("scorer", {"x": X})["total"], expected_total(2.0))
    finally:
        running.stop()
