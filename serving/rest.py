"""TF Serving's REST API, routed and answered as ``model_servers/http_rest_api_handler.cc`` does.

Routes (``{spec}`` is ``{name}``, ``{name}/versions/{v}`` or ``{name}/labels/{l}``;
matched case-insensitively, name and label ``%xx``-decoded):

- ``GET /v1/models/{spec}``: model status, ``{"model_version_status": [...]}``;
- ``GET /v1/models/{spec}/metadata``: ``{"model_spec": ..., "metadata": {"signature_def": ...}}``;
- ``POST /v1/models/{spec}:predict``: see ``json_tensor`` for the bodies;
- ``POST /v1/models/{spec}:classify`` and ``:regress``: see ``example_json``;
- ``GET <metrics path>``: Prometheus text, when monitoring is enabled.

As in TF Serving (``http_rest_api_util.cc``, ``evhttp_request.cc``) the
routes are matched against the path *with* its query string, so
``...:predict?x=1`` is a malformed request (400) and ``GET
/v1/models/m?x=1`` asks for a model named ``m?x=1`` (404). Other paths than
``/v1/...`` and the metrics path get 404. Errors are ``{"error":
"<message>"}`` with the HTTP status TF Serving maps each gRPC code to
(``http_server.cc``; FAILED_PRECONDITION is 400 there, not 412). Transport,
limits and threads: ``http_transport``.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, regression_pb2

from musicrec.serving import example_inference
from musicrec.serving.core import ServingCore, model_status_response
from musicrec.serving.errors import ServingError
from musicrec.serving.example_json import (
    classification_json,
    fill_example_request,
    parse_json_object,
    regression_json,
    signature_name_of,
)
from musicrec.serving.http_transport import HttpRequest, HttpResponse, HttpServer, json_error
from musicrec.serving.json_tensor import format_predict_response, parse_predict_body
from musicrec.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from musicrec.serving.wire import DEFAULT_SIGNATURE_NAME

LOGGER = logging.getLogger(__name__)

# model_servers/http_rest_api_util.cc: kPredictionApiGegex, kModelStatusApiRegex,
# and http_rest_api_util.h's kHTTPRestApiHandlerPathRegex (what the handler takes).
_PREDICTION_API = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE)
_MODEL_STATUS_API = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_HANDLED_PATHS = re.compile(r"/v1/.*", re.IGNORECASE)
_INT64_MAX = 2**63 - 1

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
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _proto_json(message) -> dict[str, Any]:
    # TF Serving prints proto field names and default values (e.g. "error_message": "").
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, including_default_value_fields=True
    )


class _Route:
    """What ``ParseModelInfo`` read from a request line."""

    __slots__ = ("matched", "name", "version", "label", "method", "metadata")

    def __init__(self, match: re.Match | None, post: bool) -> None:
        self.matched = match is not None
        groups = match.groups() if match is not None else (None,) * 4
        # DecodeArg (curl_easy_unescape): %xx in the name and the label, not '+'.
        self.name = unquote(groups[0], errors="replace") if groups[0] else ""
        self.label = unquote(groups[2], errors="replace") if groups[2] else None
        self.version = None
        if groups[1]:
            if int(groups[1]) > _INT64_MAX:
                raise _invalid(f"Failed to convert version: {groups[1]} to numeric.")
            self.version = int(groups[1])
        self.method = (groups[3] or "") if post else ""
        self.metadata = not post and groups[3] == "metadata"


class RestApi:
    """TF Serving's REST API as an ``HttpRequest`` → ``HttpResponse`` handler.

    Parameters
    ----------
    core : ServingCore
        What answers the requests.
    metrics_path : str or None
        Path of the Prometheus metrics, or None to not serve them.
    timeout_ms : int
        ``--rest_api_timeout_in_ms``: a model call that ends later is answered
        504 DEADLINE_EXCEEDED; 0 or less: no timeout.
    """

    def __init__(self, core: ServingCore, metrics_path: str | None = None, timeout_ms: int = 30000) -> None:
        self._core = core
        self._metrics_path = metrics_path
        self._timeout_seconds = timeout_ms / 1000 if timeout_ms > 0 else None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.target.split("?", 1)[0].split("#", 1)[0]
        if self._metrics_path and path == self._metrics_path:
            return self._metrics(request.target)
        if not _HANDLED_PATHS.fullmatch(request.target):
            return json_error(404, f"Not Found: {request.method} {request.target}")
        if request.method == "OPTIONS":
            # A CORS preflight (http_server.cc), answered without the handler.
            if re.search(r"https?://", request.headers.get("origin", "")):
                return HttpResponse(200)
            return json_error(400, "Origin header is missing in CORS preflight")
        start = time.perf_counter()
        route = None
        try:
            route = self._route(request)
            body = self._dispatch(request, route)
        except ServingError as error:
            status, response = error.code, json_error(HTTP_STATUS.get(error.code, 500), error.message)
        else:
            status, response = grpc.StatusCode.OK, HttpResponse(200, json.dumps(body).encode("utf-8"))
        name, api = (route.name, route.method) if route is not None else ("", "")
        self._core.metrics.record(name, api, "REST", status, time.perf_counter() - start)
        return response

    def _metrics(self, target: str) -> HttpResponse:
        if target != self._metrics_path:
            message = f"Unexpected path: {target}. Should be {self._metrics_path}"
            return HttpResponse(400, message.encode("utf-8"), "text/plain")
        return HttpResponse(200, self._core.metrics.render().encode("utf-8"), METRICS_CONTENT_TYPE)

    @staticmethod
    def _route(request: HttpRequest) -> _Route:
        if request.method == "POST":
            return _Route(_PREDICTION_API.fullmatch(request.target), post=True)
        if request.method == "GET":
            return _Route(_MODEL_STATUS_API.fullmatch(request.target), post=False)
        return _Route(None, post=False)

    def _dispatch(self, request: HttpRequest, route: _Route) -> Any:
        deadline = time.monotonic() + self._timeout_seconds if self._timeout_seconds else None
        if request.method == "POST" and route.method == "predict":
            return self._predict(route, request.body, deadline)
        if request.method == "POST" and route.method in ("classify", "regress"):
            return self._classify_or_regress(route, request.body, deadline)
        if request.method == "GET" and route.matched:
            if not route.name:
                raise _invalid("Missing model name in request.")
            if route.metadata:
                return self._metadata(route)
            return _proto_json(model_status_response(self._core.registry.status(route.name, route.version)))
        raise _invalid(f"Malformed request: {request.method} {request.target}")

    def _metadata(self, route: _Route) -> dict[str, Any]:
        servable = self._core.servable(route.name, route.version, route.label)
        # TF Serving prints the packed SignatureDefMap unpacked, under the field name.
        return {
            "model_spec": {"name": route.name, "signature_name": "", "version": str(servable.version)},
            "metadata": {"signature_def": _proto_json(servable.signature_def_map())},
        }

    def _predict(self, route: _Route, raw: bytes, deadline: float | None) -> dict[str, Any]:
        body = parse_json_object(raw)
        signature_name = signature_name_of(body)
        servable = self._core.servable(route.name, route.version, route.label)
        key = signature_name or DEFAULT_SIGNATURE_NAME
        if key not in servable.signature_defs:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        signature = servable.signature_defs[key]
        if not signature.inputs:
            raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
        arrays, row_format = parse_predict_body(body, signature)
        call = servable.prepare_arrays(signature_name, arrays)
        return format_predict_response(self._core.run(servable, call, deadline), row_format)

    def _classify_or_regress(self, route: _Route, raw: bytes, deadline: float | None) -> dict[str, Any]:
        classify = route.method == "classify"
        request = classification_pb2.ClassificationRequest() if classify else regression_pb2.RegressionRequest()
        request.model_spec.name = route.name
        if route.version is not None:
            request.model_spec.version.value = route.version
        if route.label is not None:
            request.model_spec.version_label = route.label
        fill_example_request(raw, request)
        servable = self._core.servable(route.name, route.version, route.label)
        run = self._core.example_runner(servable, deadline)
        if classify:
            response = example_inference.classify(servable, request, run, self._core.check_method_name)
            return classification_json(response.result)
        response = example_inference.regress(servable, request, run, self._core.check_method_name)
        return regression_json(response.result)


class RestServer:
    """TF Serving's REST API for a ``ServingCore``, in the background.

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
    num_threads : int
        Threads answering requests (``--rest_api_num_threads``).
    timeout_ms : int
        ``--rest_api_timeout_in_ms`` (see ``RestApi``).
    """

    def __init__(self, core: ServingCore, host: str, port: int, max_body_bytes: int,
                 metrics_path: str | None = None, num_threads: int = 8, timeout_ms: int = 30000) -> None:
        self._http = HttpServer(host, port, RestApi(core, metrics_path, timeout_ms), num_threads, max_body_bytes)
        self.port = self._http.port

    def start(self) -> None:
        """Start answering in the background."""
        self._http.start()

    def stop(self) -> None:
        """Stop accepting requests and close the socket."""
        self._http.stop()
