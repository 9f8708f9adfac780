"""The REST API's HTTP server: fixed threads, idle connections, backlog, body framing and limits."""
from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_serving import export_scorer  # noqa: E402  (shared tiny models)

from musicrec.serving.rest_client import RestClient
from musicrec.serving.http_transport import LISTEN_BACKLOG, HttpResponse, HttpServer
from musicrec.serving.server import LocalModelServer
from musicrec.serving.server_options import BatchingOptions


class Recorder:
    """A handler that holds each request ``seconds`` and records how many ran at once, on which threads."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.running = self.most = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, request) -> HttpResponse:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
        return HttpResponse(200, json.dumps({"method": request.method, "target": request.target,
                                             "bytes": len(request.body)}).encode())


@pytest.fixture()
def serve():
    servers = []

    def start(handler, num_threads: int = 2, max_body_bytes: int = 1024) -> HttpServer:
        server = HttpServer("127.0.0.1", 0, handler, num_threads, max_body_bytes)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def post(port: int, body: bytes = b"{}", headers: dict | None = None, connection=None) -> tuple[int, bytes]:
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/v1/x", body=body, headers=headers or {})
    response = connection.getresponse()
    return response.status, response.read()


def raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_handlers_run_on_a_fixed_pool_whatever_the_connections(serve):
    recorder = Recorder(seconds=0.05)
    server = serve(recorder, num_threads=2)
    with futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: post(server.port)[0], range(48)))  # a new connection each
    assert statuses == [200] * 48
    assert recorder.most == 2 and len(recorder.threads) == 2


def test_idle_keep_alive_connections_hold_no_thread(serve):
    server = serve(Recorder(), num_threads=1)
    idle = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10) for _ in range(5)]
    for connection in idle:
        assert post(server.port, connection=connection)[0] == 200  # then left open, idle
    started = time.monotonic()
    assert post(server.port)[0] == 200  # the one thread is free for a sixth connection
    assert time.monotonic() - started < 5
    for connection in idle:  # and the idle ones are still usable
        assert post(server.port, connection=connection)[0] == 200
        connection.close()


def test_the_listen_backlog_is_libevents(serve):
    if shutil.which("ss") is None:
        pytest.skip("ss is not installed")
    server = serve(Recorder())
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"], capture_output=True, text=True).stdout
    # For a listening socket ss prints the backlog as Send-Q (kernels cap it at net.core.somaxconn).
    backlog = int(listing.split()[2])
    with open("/proc/sys/net/core/somaxconn", encoding="ascii") as handle:
        assert backlog == min(LISTEN_BACKLOG, int(handle.read()))


def test_chunked_gzip_and_expect_continue_bodies_are_read(serve):
    server = serve(Recorder(), max_body_bytes=1024)
    answer = raw(server.port, b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n"
                              b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.split(b"\r\n\r\n", 1)[1])["bytes"] == 11
    assert json.loads(post(server.port, gzip.compress(b"x" * 1000), {"Content-Encoding": "gzip"})[1])["bytes"] == 1000
    answer = raw(server.port, b"POST /v1/x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
                              b"Connection: close\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /v1/x HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", b"429"),
    (b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n", b"429"),
    (b"POST /v1/x HTTP/1.1\r\nContent-Length: nope\r\n\r\n", b"400"),
    (b"POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    (b"POST /v1/x HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", b"400"),
    (b"GET /v1/x HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", b"431"),
    (b"NONSENSE\r\n\r\n", b"400"),
])
def test_malformed_or_oversized_requests_get_a_status_and_a_closed_connection(serve, request_bytes, status):
    server = serve(Recorder(), max_body_bytes=1024)
    answer = raw(server.port, request_bytes)
    assert answer.split(b" ")[1] == status and b"Connection: close" in answer
    assert post(server.port)[0] == 200  # and the server keeps serving


def test_a_gzip_bomb_stops_at_the_body_limit(serve):
    server = serve(Recorder(), max_body_bytes=1024)
    assert post(server.port, gzip.compress(b"\0" * 10**7), {"Content-Encoding": "gzip"})[0] == 429


def test_a_rest_call_past_rest_api_timeout_in_ms_is_504(tmp_path):
    export_scorer(str(tmp_path / "scorer" / "1"), weight=1.0)
    # A request waits up to batch_timeout_micros for others to join its batch: longer than the timeout.
    batching = BatchingOptions(max_batch_size=64, batch_timeout_micros=400_000, num_batch_threads=1)
    with LocalModelServer({"scorer": str(tmp_path / "scorer")}, port=0, rest_port=0, poll_wait_seconds=0,
                          batching=batching, rest_timeout_ms=100) as server:
        status, body = RestClient(server.rest_url, retries=0).request(
            "POST", "/v1/models/scorer:predict", {"instances": np.ones((1, 3)).tolist()})
        assert status == 504 and "Deadline Exceeded" in body["error"]
