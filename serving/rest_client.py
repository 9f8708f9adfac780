"""Client of TF Serving's REST API (real binary or ``LocalModelServer``).

Example
-------
>>> rest = RestClient("http://127.0.0.1:8501")                  # doctest: +SKIP
>>> rest.predict("next_track", instances=[["t1", "t2"]])        # doctest: +SKIP

A call that found the server unavailable (HTTP 503 or a refused/reset
connection) is retried with exponential backoff; other failures raise
``ServingError`` with the gRPC status code the HTTP status stands for.
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import time
import urllib.parse
from typing import Any

import grpc
import numpy as np

from musicrec.serving.errors import ServingError
from musicrec.serving.wire import DEFAULT_REST_URL


# TF Serving's HTTP statuses back to gRPC codes (the inverse of rest.HTTP_STATUS,
# picking the most common code where several share a status).
_GRPC_CODE_OF_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def _json_value(value: Any) -> Any:
    """ndarray / bytes → JSON-ready lists; bytes become ``{"b64": ...}``."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (bytes, np.bytes_)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


class RestClient:
    """Blocking client of TF Serving's REST API, with retries on 503 / refused connections.

    Parameters
    ----------
    base_url : str
        ``http://host:port`` of the REST API (``--rest_api_port``).
    timeout_seconds : float
        Socket timeout of each attempt, in seconds.
    retries : int
        Extra attempts after HTTP 503 or a refused/reset connection, with
        exponential backoff; other failures are not retried.
    backoff_seconds : float
        Sleep before the first retry; doubles on each later one, up to
        ``max_backoff_seconds``.
    """

    def __init__(self, base_url: str = DEFAULT_REST_URL, timeout_seconds: float = 10.0,
                 retries: int = 3, backoff_seconds: float = 0.1, max_backoff_seconds: float = 2.0) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or not parsed.hostname or parsed.port is None:
            raise ValueError(f"base_url must look like http://host:port, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host, self._port = parsed.hostname, parsed.port
        self.timeout_seconds = timeout_seconds
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    def _pause(self, attempt: int) -> None:
        time.sleep(min(self.backoff_seconds * 2**attempt, self.max_backoff_seconds))

    @staticmethod
    def model_path(model_name: str, version: int | None = None, label: str | None = None) -> str:
        """``/v1/models/{name}[/versions/{v}|/labels/{l}]``."""
        path = f"/v1/models/{urllib.parse.quote(model_name, safe='')}"
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{urllib.parse.quote(label, safe='')}"
        return path

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One call (with retries); returns (HTTP status, decoded JSON or text) without raising on 4xx/5xx."""
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(self.retries + 1):
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_seconds)
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                status = response.status
                content_type = response.getheader("Content-Type", "")
            except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError,
                    http.client.RemoteDisconnected) as error:
                if attempt == self.retries:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"{method} {self.base_url}{path}: {error}") from None
                self._pause(attempt)
                continue
            except (socket.timeout, TimeoutError):
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"{method} {self.base_url}{path}: no answer in {self.timeout_seconds:g} s") from None
            finally:
                connection.close()
            if status == 503 and attempt < self.retries:
                self._pause(attempt)
                continue
            if content_type.startswith("application/json"):
                return status, json.loads(raw)
            return status, raw.decode("utf-8", errors="replace")
        raise AssertionError("unreachable")

    def _checked(self, method: str, path: str, body: Any = None) -> Any:
        status, decoded = self.request(method, path, body)
        if status != 200:
            message = decoded.get("error", decoded) if isinstance(decoded, dict) else decoded
            raise ServingError(_GRPC_CODE_OF_HTTP.get(status, grpc.StatusCode.UNKNOWN),
                               f"{method} {self.base_url}{path}: HTTP {status}: {message}")
        return decoded

    def get_model_status(self, model_name: str, version: int | None = None,
                         label: str | None = None) -> list[dict[str, Any]]:
        """``model_version_status`` entries, as TF Serving's JSON prints them."""
        return self._checked("GET", self.model_path(model_name, version, label))["model_version_status"]

    def get_model_metadata(self, model_name: str, version: int | None = None,
                           label: str | None = None) -> dict[str, Any]:
        """The metadata JSON: ``{"model_spec": ..., "metadata": {"signature_def": ...}}``."""
        return self._checked("GET", self.model_path(model_name, version, label) + "/metadata")

    def predict(self, model_name: str, instances: Any = None, inputs: Any = None,
                signature_name: str | None = None, version: int | None = None,
                label: str | None = None) -> Any:
        """``:predict`` in the row (``instances``) or columnar (``inputs``) format.

        numpy arrays are converted to lists and bytes to ``{"b64": ...}``.

        Returns
        -------
        Any
            ``predictions`` (row format) or ``outputs`` (columnar format).
        """
        if (instances is None) == (inputs is None):
            raise ValueError("give exactly one of instances or inputs")
        body: dict[str, Any] = {}
        if signature_name is not None:
            body["signature_name"] = signature_name
        key = "instances" if instances is not None else "inputs"
        body[key] = _json_value(instances if instances is not None else inputs)
        decoded = self._checked("POST", self.model_path(model_name, version, label) + ":predict", body)
        return decoded["predictions" if key == "instances" else "outputs"]
