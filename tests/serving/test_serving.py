"""Tests of musicrec.serving: a real gRPC server in-process on 127.0.0.1, real SavedModels."""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from musicrec.serving import flags
from musicrec.serving.client import PredictionClient
from musicrec.serving.config import (
    model_server_command,
    parse_model_config,
    read_model_config,
    write_model_config,
)
from musicrec.serving.errors import ServingError
from musicrec.serving.model_registry import ModelLoadError
from musicrec.serving.wire import list_versions, read_signature_defs
from musicrec.serving.server import LocalModelServer
from musicrec.serving.server_options import ModelLoadOptions

MAX_MESSAGE_BYTES = 256 * 1024
VOCABULARY = ["rock", "jazz", "pop"]


def export_scorer(export_dir: str, weight: float) -> None:
    """Functional model: input "x" [batch, 3] → {"scores": [batch, 2], "total": [batch]}."""
    x = keras.Input(shape=(3,), name="x")
    scores = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant(weight),
        bias_initializer=keras.initializers.Constant(0.5),
        name="dense",
    )(x)
    total = keras.layers.Lambda(lambda values: keras.ops.sum(values, axis=-1), name="total")(scores)
    keras.Model(x, {"scores": scores, "total": total}).export(export_dir, verbose=False)


def export_lookup(export_dir: str) -> None:
    """String model: input "genre" [batch] → {"ids": int64 [batch], "echo": string [batch]}."""
    genre = keras.Input(shape=(), dtype="string", name="genre")
    ids = keras.layers.StringLookup(vocabulary=VOCABULARY, name="to_id")(genre)
    echo = keras.layers.StringLookup(vocabulary=VOCABULARY, invert=True, name="to_genre")(ids)
    keras.Model(genre, {"ids": ids, "echo": echo}).export(export_dir, verbose=False)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("serving")
    export_scorer(str(base / "scorer" / "1"), weight=1.0)
    export_scorer(str(base / "scorer" / "2"), weight=2.0)
    # An unfinished push: a valid model under a temporary name must be ignored.
    export_scorer(str(base / "scorer" / ".tmp-3"), weight=3.0)
    export_lookup(str(base / "lookup" / "1"))
    return str(base)


@pytest.fixture(scope="module")
def server(model_base):
    local_server = LocalModelServer(
        {"scorer": os.path.join(model_base, "scorer"), "lookup": os.path.join(model_base, "lookup")},
        port=0,
        max_message_bytes=MAX_MESSAGE_BYTES,
        poll_wait_seconds=0,
    )
    local_server.start()
    yield local_server
    local_server.stop(grace_seconds=1)


@pytest.fixture()
def client(server):
    with PredictionClient(server.address, timeout_seconds=10, retries=0) as prediction_client:
        yield prediction_client


@pytest.fixture()
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def call_saved_model(export_dir: str, **inputs) -> dict[str, np.ndarray]:
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    return {name: tensor.numpy() for name, tensor in signature(**inputs).items()}


def served_version(stub, model_name: str, x: np.ndarray, version: int | None = None) -> int:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return stub.Predict(request, timeout=10).model_spec.version.value


X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=np.float32)


def test_predict_matches_saved_model_and_serves_latest_version(client, stub, model_base):
    outputs = client.predict("scorer", {"x": X})

    expected = call_saved_model(os.path.join(model_base, "scorer", "2"), x=tf.constant(X))
    assert set(outputs) == {"scores", "total"}
    np.testing.assert_allclose(outputs["scores"], expected["scores"], rtol=1e-6)
    np.testing.assert_allclose(outputs["total"], expected["total"], rtol=1e-6)
    assert served_version(stub, "scorer", X) == 2


def test_response_model_spec_names_model_version_and_signature(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "scorer"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X))

    response = stub.Predict(request, timeout=10)

    assert response.model_spec.name == "scorer"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


def test_specific_version_not_served_under_latest_policy_is_not_found(client):
    with pytest.raises(ServingError) as raised:
        client.predict("scorer", {"x": X}, version=1)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "Specific(scorer, 1)" in raised.value.message


def test_specific_served_version_on_request(client, stub, model_base):
    outputs = client.predict("scorer", {"x": X}, version=2)

    expected = call_saved_model(os.path.join(model_base, "scorer", "2"), x=tf.constant(X))
    np.testing.assert_allclose(outputs["scores"], expected["scores"], rtol=1e-6)
    assert served_version(stub, "scorer", X, version=2) == 2


def test_unknown_model_is_not_found(client):
    with pytest.raises(ServingError) as raised:
        client.predict("nope", {"x": X})
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "Servable not found for request: Latest(nope)" in raised.value.message


def test_string_inputs_and_outputs(client, model_base):
    genres = np.array(["jazz", "metal", "rock"])

    outputs = client.predict("lookup", {"genre": genres})

    expected = call_saved_model(os.path.join(model_base, "lookup", "1"), genre=tf.constant(genres))
    np.testing.assert_array_equal(outputs["ids"], expected["ids"])
    assert outputs["echo"].dtype.kind == "S"
    np.testing.assert_array_equal(outputs["echo"], expected["echo"].astype(np.bytes_))
    assert outputs["echo"][0] == b"jazz"


def test_output_filter_returns_only_requested_outputs(client):
    outputs = client.predict("scorer", {"x": X}, output_filter=["total"])
    assert set(outputs) == {"total"}

    with pytest.raises(ServingError) as raised:
        client.predict("scorer", {"x": X}, output_filter=["missing"])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({}, "Missing but required: {x}"),
        ({"x": X, "y": X}, "Sent extra: {y}"),
        ({"x": X.astype(np.float64)}, "to be float32 but float64 is provided"),
        ({"x": np.array(["a", "b"])}, "to be float32 but string is provided"),
        ({"x": np.ones((2, 4), np.float32)}, "has shape [2, 4]"),
        ({"x": np.ones((3,), np.float32)}, "has shape [3]"),
    ],
    ids=["missing", "extra", "float64", "string", "width", "rank"],
)
def test_bad_inputs_are_invalid_argument(client, inputs, message):
    with pytest.raises(ServingError) as raised:
        client.predict("scorer", inputs)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.message


def _raw_predict_error(stub, proto) -> grpc.RpcError:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "scorer"
    request.inputs["x"].CopyFrom(proto)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, timeout=10)
    return raised.value


def test_malformed_tensor_proto_is_invalid_argument(stub):
    truncated = tf.make_tensor_proto(X)
    truncated.tensor_content = truncated.tensor_content[:-4]

    error = _raw_predict_error(stub, truncated)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: x" in error.details()


def test_tiny_proto_claiming_a_huge_shape_is_refused(stub):
    # One repeated value may fill a whole shape; 10^9 rows must not be allocated.
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0])
    huge.tensor_shape.dim.add().size = 10**9
    huge.tensor_shape.dim.add().size = 3

    error = _raw_predict_error(stub, huge)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over the" in error.details()


def test_unknown_signature_lists_available_ones(client):
    with pytest.raises(ServingError) as raised:
        client.predict("scorer", {"x": X}, signature_name="classify")
    # TF Serving answers FAILED_PRECONDITION for an unknown signature key.
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "serving_default" in raised.value.message


def test_oversized_request_is_resource_exhausted(client, server):
    rows = MAX_MESSAGE_BYTES // (3 * 4) + 1000
    with pytest.raises(ServingError) as raised:
        client.predict("scorer", {"x": np.zeros((rows, 3), np.float32)})
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server survives and keeps answering.
    assert client.predict("scorer", {"x": X})["total"].shape == (2,)


def test_get_model_metadata_returns_signature_def_map_from_disk(stub, model_base):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "scorer"
    request.metadata_field.append("signature_def")

    response = stub.GetModelMetadata(request, timeout=10)

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert response.model_spec.name == "scorer"
    assert response.model_spec.version.value == 2
    on_disk = read_signature_defs(os.path.join(model_base, "scorer", "2"))
    assert dict(signature_map.signature_def) == on_disk


def test_client_metadata_summary_names_inputs_outputs_and_dtypes(client):
    assert client.get_model_metadata("scorer") == {
        name: {
            "inputs": {"x": ("float32", (None, 3))},
            "outputs": {"scores": ("float32", (None, 2)), "total": ("float32", (None,))},
        }
        for name in ("serve", "serving_default")
    }
    lookup = client.get_model_metadata("lookup")["serving_default"]
    assert lookup["inputs"] == {"genre": ("string", (None,))}
    assert lookup["outputs"] == {"ids": ("int64", (None,)), "echo": ("string", (None,))}


def test_metadata_field_other_than_signature_def_is_invalid(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "scorer"
    request.metadata_field.append("tags")
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModelMetadata(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_classify_and_regress_on_a_predict_signature_are_invalid_argument(stub):
    # TF Serving checks the signature's shape (classifier.cc, regressor.cc) before the input.
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "scorer"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Classify(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No classification inputs found in SignatureDef" in raised.value.details()
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "scorer"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Regress(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "Expected one output Tensor."


def test_temporary_folders_are_not_versions(model_base):
    assert list_versions(os.path.join(model_base, "scorer")) == [1, 2]
    assert list_versions(os.path.join(model_base, "absent")) == []


def test_default_bind_address_is_loopback(server):
    assert server.host == "127.0.0.1"
    listening = _listening_addresses(server.port)
    if listening is None:
        pytest.skip("/proc/net/tcp is not available")
    assert listening, "nothing listens on the server's port"
    assert all(ipaddress.ip_address(address).is_loopback for address in listening), listening


def _listening_addresses(port: int) -> set[str] | None:
    """Addresses in LISTEN state on ``port``, from /proc/net/tcp{,6} (Linux).

    IPv4-mapped IPv6 addresses (gRPC binds those) come back as plain IPv4.
    """
    addresses: set[str] = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table_path, encoding="ascii") as table:
                rows = table.read().splitlines()[1:]
        except OSError:
            return None
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            hex_ip, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            # The kernel prints each 32-bit word of the address in host order.
            raw = b"".join(bytes.fromhex(hex_ip[i:i + 8])[::-1] for i in range(0, len(hex_ip), 8))
            address = ipaddress.ip_address(raw)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            addresses.add(str(address))
    return addresses


def test_new_version_is_picked_up_and_broken_version_keeps_old(tmp_path, caplog):
    base = tmp_path / "scorer"
    export_scorer(str(base / "1"), weight=1.0)
    local_server = LocalModelServer({"scorer": str(base)}, port=0, poll_wait_seconds=0.1)
    local_server.start()
    try:
        channel = grpc.insecure_channel(local_server.address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert served_version(stub, "scorer", X) == 1

        # Requests keep flowing while the version switches: none may fail.
        seen_versions: list[int] = []
        stop_traffic = threading.Event()

        def traffic() -> None:
            while not stop_traffic.is_set():
                seen_versions.append(served_version(stub, "scorer", X))

        with futures.ThreadPoolExecutor(max_workers=3) as pool:
            senders = [pool.submit(traffic) for _ in range(3)]
            # The pusher's protocol: write under a temporary name, then rename.
            export_scorer(str(base / ".tmp-2"), weight=2.0)
            os.rename(base / ".tmp-2", base / "2")
            deadline = time.monotonic() + 15
            while served_version(stub, "scorer", X) != 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            stop_traffic.set()
            for sender in senders:
                sender.result()  # re-raises any failed request
        assert served_version(stub, "scorer", X) == 2
        assert seen_versions and set(seen_versions) <= {1, 2}
        expected = call_saved_model(str(base / "2"), x=tf.constant(X))
        with PredictionClient(local_server.address) as client:
            np.testing.assert_allclose(client.predict("scorer", {"x": X})["scores"], expected["scores"])

        (base / "3").mkdir()
        (base / "3" / "saved_model.pb").write_bytes(b"not a protobuf")
        with caplog.at_level(logging.ERROR, logger="musicrec.serving.model_registry"):
            local_server.registry.poll_once()
        assert served_version(stub, "scorer", X) == 2
        assert any("scorer version 3" in record.getMessage() for record in caplog.records)
        channel.close()
    finally:
        local_server.stop(grace_seconds=1)


def test_broken_initial_version_fails_start_clearly(tmp_path):
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "1" / "saved_model.pb").write_bytes(b"\x00garbage")
    local_server = LocalModelServer({"broken": str(tmp_path / "broken")}, port=0,
                                    loading=ModelLoadOptions(max_num_load_retries=0))
    with pytest.raises(ModelLoadError, match=r"'broken' version 1"):
        local_server.start()


def test_client_retries_unavailable_then_raises(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    with PredictionClient(f"127.0.0.1:{free_port}", timeout_seconds=1, retries=1, backoff_seconds=0.01) as client:
        with pytest.raises(ServingError) as raised:
            client.predict("scorer", {"x": X})
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_wait_until_ready(client):
    assert "serving_default" in client.wait_until_ready("scorer", timeout_seconds=5)
    with pytest.raises(ServingError) as raised:
        client.wait_until_ready("absent", timeout_seconds=0.3, poll_seconds=0.1)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_model_config_round_trips(tmp_path):
    models = {"genre": str(tmp_path / "serving" / "genre"), "next_track": str(tmp_path / "next")}
    config_path = write_model_config(tmp_path / "conf" / "models.config", models)

    assert read_model_config(config_path) == models
    text = open(config_path, encoding="utf-8").read()
    assert 'model_platform: "tensorflow"' in text
    assert [name for name in os.listdir(tmp_path / "conf")] == ["models.config"]


@pytest.mark.parametrize(
    "text",
    ["model_config_list { config { name: 'a' } }",
     "model_config_list { config { name: 'a' base_path: '/x' } config { name: 'a' base_path: '/y' } }",
     "model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
     "not a proto {"],
    ids=["no-base-path", "duplicate", "platform", "syntax"],
)
def test_bad_model_config_is_rejected(text):
    with pytest.raises(ValueError):
        parse_model_config(text)


def test_model_server_command(tmp_path):
    config_path = str(tmp_path / "models.config")
    assert model_server_command(config_path, port=9000, rest_port=9001) == [
        "tensorflow_model_server", "--port=9000", "--rest_api_port=9001",
        f"--model_config_file={config_path}", "--file_system_poll_wait_seconds=1",
    ]
    single = model_server_command({"genre": str(tmp_path / "genre")}, port=8500, rest_port=0)
    assert f"--model_base_path={tmp_path / 'genre'}" in single and "--model_name=genre" in single
    with pytest.raises(ValueError):
        model_server_command({"a": "/a", "b": "/b"})


def test_flags_use_tf_serving_names(tmp_path):
    parsed = flags.parse_flags(
        ["--port=0", "--rest_api_port", "8501", "--model_name=genre",
         f"--model_base_path={tmp_path}", "--file_system_poll_wait_seconds=2"]
    )
    assert parsed.port == 0 and parsed.rest_api_port == 8501
    assert parsed.models == {"genre": str(tmp_path)}
    assert parsed.file_system_poll_wait_seconds == 2.0
    assert parsed.host == "127.0.0.1"

    config_path = write_model_config(tmp_path / "models.config", {"a": "/srv/a", "b": "/srv/b"})
    from_config = flags.parse_flags([f"--model_config_file={config_path}", "--host=0.0.0.0"])
    assert from_config.models == {"a": "/srv/a", "b": "/srv/b"}
    assert from_config.port == 8500 and from_config.host == "0.0.0.0"

    with pytest.raises(SystemExit):
        flags.parse_flags(["--port=0"])


def test_python_m_serving_runs_until_sigterm(model_base):
    command = [sys.executable, "-m", "musicrec.serving", "--port=0",
               "--model_name=lookup", f"--model_base_path={os.path.join(model_base, 'lookup')}"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        address = None
        for line in process.stderr:
            match = re.search(r"Serving lookup v1 on (127\.0\.0\.1:\d+)", line)
            if match:
                address = match.group(1)
                break
        assert address is not None, "server never reported its address"
        with PredictionClient(address) as client:
            assert client.predict("lookup", {"genre": np.array(["pop"])})["echo"].tolist() == [b"pop"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
