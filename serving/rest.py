"""TF Serving's REST API on the standard library's ``ThreadingHTTPServer``.

Routes (``{spec}`` is ``{name}``, ``{name}/versions/{v}`` or ``{name}/labels/{l}``):

- ``GET /v1/models/{spec}``: model status, ``{"model_version_status": [...]}``;
- ``GET /v1/models/{spec}/metadata``: ``{"model_spec": ..., "metadata": {"signature_def": ...}}``;
- ``POST /v1/models/{spec}:predict``: see ``json_tensor`` for the bodies;
- ``GET <metrics path>``: Prometheus text, when monitoring is enabled.

Errors are ``{"error": "<message>"}`` with the HTTP status TF Serving maps
each gRPC code to (``INVALID_ARGUMENT`` → 400, ``NOT_FOUND`` → 404,
``FAILED_PRECONDITION`` → 412, ``RESOURCE_EXHAUSTED`` → 429, ...). A body
larger than ``max_body_bytes`` is refused unread with RESOURCE_EXHAUSTED.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format

from musicrec.serving.core import ServingCore, model_status_response
from musicrec.serving.errors import ServingError
from musicrec.serving.json_tensor import format_predict_response, parse_predict_body

LOGGER = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict)?$"
)

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _proto_json(message) -> dict[str, Any]:
    # TF Serving prints proto field names and default values (e.g. "error_message": "").
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


class _Handler(BaseHTTPRequestHandler):
    server: "_RestHTTPServer"
    protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving's server
    timeout = 60  # seconds an idle keep-alive connection keeps its thread

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (base class name)
        LOGGER.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode("utf-8"))

    def _send_error(self, error: ServingError) -> None:
        self._send_json(HTTP_STATUS.get(error.code, 500), {"error": error.message})

    def _malformed(self) -> ServingError:
        return ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"Malformed request: {self.command} {self.path}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        core = self.server.core
        if self.server.metrics_path and self.path == self.server.metrics_path:
            self._send(200, core.metrics.render().encode("utf-8"), "text/plain; version=0.0.4; charset=utf-8")
            return
        match = _ROUTE.match(self.path)
        if match is None or match["suffix"] == ":predict":
            self._send_error(self._malformed())
            return
        name, version, label = match["name"], match["version"], match["label"]
        version = int(version) if version is not None else None
        api = "GetModelMetadata" if match["suffix"] == "/metadata" else "GetModelStatus"
        try:
            with core.observe(name, api, "REST"):
                if match["suffix"] == "/metadata":
                    body = self._metadata(core, name, version, label)
                else:
                    body = _proto_json(model_status_response(core.registry.status(name, version, label)))
        except ServingError as error:
            self._send_error(error)
            return
        self._send_json(200, body)

    @staticmethod
    def _metadata(core: ServingCore, name: str, version: int | None, label: str | None) -> dict[str, Any]:
        servable = core.servable(name, version, label)
        # TF Serving prints the packed SignatureDefMap unpacked, under the field name.
        return {
            "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": _proto_json(servable.signature_def_map())},
        }

    def do_POST(self) -> None:  # noqa: N802
        match = _ROUTE.match(self.path)
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._send_json(411, {"error": "a Content-Length header is required"})
            return
        if length > self.server.max_body_bytes:
            self.close_connection = True  # the unread body would garble the next request
            self._send_error(ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request body of {length} bytes exceeds the {self.server.max_body_bytes}-byte limit",
            ))
            return
        raw = self.rfile.read(length)
        if match is None or match["suffix"] != ":predict":
            self._send_error(self._malformed())
            return
        name, version, label = match["name"], match["version"], match["label"]
        version = int(version) if version is not None else None
        try:
            with self.server.core.observe(name, "Predict", "REST"):
                body = self._predict(name, version, label, raw)
        except ServingError as error:
            self._send_error(error)
            return
        self._send_json(200, body)

    def _predict(self, name: str, version: int | None, label: str | None, raw: bytes) -> dict[str, Any]:
        try:
            request = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"JSON Parse error: {error}") from None
        if not isinstance(request, dict):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "JSON Value is not an object")
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "'signature_name' must be a string")
        core = self.server.core
        servable = core.servable(name, version, label)
        arrays, row_format = parse_predict_body(request, servable.signature(signature_name))
        call = servable.prepare_arrays(signature_name, arrays)
        outputs = core.run(servable, call)
        return format_predict_response(outputs, row_format)


class _RestHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # SO_REUSEADDR (Linux) still refuses a port another socket listens on, but
    # lets a restarted server bind past its predecessor's TIME_WAIT connections.
    allow_reuse_address = True

    def __init__(self, address, core: ServingCore, max_body_bytes: int, metrics_path: str | None) -> None:
        self.core = core
        self.max_body_bytes = max_body_bytes
        self.metrics_path = metrics_path
        if ":" in address[0]:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class RestServer:
    """TF Serving's REST API for a ``ServingCore``, on its own thread.

    Parameters
    ----------
    core : ServingCore
        What answers the requests.
    host, port : str, int
        Address to bind; port 0 picks a free one.
    max_body_bytes : int
        Largest request body accepted, in bytes.
    metrics_path : str or None
        Path of the Prometheus metrics, or None to not serve them.
    """

    def __init__(self, core: ServingCore, host: str, port: int, max_body_bytes: int,
                 metrics_path: str | None = None) -> None:
        self._httpd = _RestHTTPServer((host, port), core, max_body_bytes, metrics_path)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rest-api", daemon=True)

    def start(self) -> None:
        """Start answering in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
