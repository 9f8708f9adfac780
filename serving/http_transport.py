"""A small HTTP/1.1 server: one event loop for the sockets, a fixed pool of threads for requests.

TF Serving's REST API runs on libevent (``util/net_http/server/internal/
evhttp_server.cc``): one event loop accepts connections (``listen`` backlog
128, libevent's) and reads whole requests, and a fixed pool of
``--rest_api_num_threads`` threads (4 per CPU by default,
``model_servers/server.h``) runs the handlers (``http_server.cc``). An idle
keep-alive connection therefore costs no thread, and a burst of new
connections waits in the backlog instead of being reset. This module does
the same with ``asyncio``: the loop parses requests (``Content-Length`` or
chunked bodies, ``Expect: 100-continue``, gzip-encoded bodies, keep-alive)
and hands each complete one to the pool.

Limits: a request head over ``MAX_HEAD_BYTES`` gets 431; a body (after
gunzip) over ``max_body_bytes`` gets 429 RESOURCE_EXHAUSTED, unread, and the
connection is closed; a connection idle for ``idle_timeout_seconds`` is closed.
"""
from __future__ import annotations

import asyncio
import http
import json
import logging
import socket
import threading
import zlib
from dataclasses import dataclass, field
from typing import Callable

from musicrec.serving.worker_pool import LifoWorkerPool

LOGGER = logging.getLogger(__name__)

LISTEN_BACKLOG = 128  # libevent's evhttp_bind_socket_with_handle
MAX_HEAD_BYTES = 64 * 1024
DEFAULT_IDLE_TIMEOUT_SECONDS = 60.0


@dataclass
class HttpRequest:
    """One parsed request: ``target`` is the path and query as sent (still %-encoded)."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class HttpResponse:
    """What a handler answers; ``close`` ends the connection after it."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


class _Refused(Exception):
    """A request the loop answers itself (malformed, too large) before closing the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_error(status: int, message: str, close: bool = False) -> HttpResponse:
    """``{"error": message}`` with ``status``, as TF Serving words its errors."""
    return HttpResponse(status, json.dumps({"error": message}).encode("utf-8"), close=close)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Unknown"


def _encode(response: HttpResponse, keep_alive: bool, head_only: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}",
             f"Content-Type: {response.content_type}", f"Content-Length: {len(response.body)}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class HttpServer:
    """Serves ``handler`` on ``host:port`` until ``stop``.

    Parameters
    ----------
    host, port : str, int
        Address to bind (port 0 picks a free one, see ``port``).
    handler : callable
        ``handler(HttpRequest) -> HttpResponse``; runs on a pool thread and
        may block.
    num_threads : int
        Pool threads running handlers (``--rest_api_num_threads``); further
        complete requests queue.
    max_body_bytes : int
        Largest request body, decompressed, in bytes.
    idle_timeout_seconds : float
        How long a connection may wait for (the rest of) a request.
    """

    def __init__(self, host: str, port: int, handler: Callable[[HttpRequest], HttpResponse], num_threads: int,
                 max_body_bytes: int, idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS) -> None:
        if num_threads <= 0:
            raise ValueError("num_threads must be positive")
        self._handler = handler
        self._max_body_bytes = max_body_bytes
        self._idle_timeout = idle_timeout_seconds
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        # Lets a restarted server bind past its predecessor's TIME_WAIT
        # connections; Linux still refuses a port another socket listens on.
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self._pool = LifoWorkerPool(num_threads, thread_name_prefix="rest")
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest-api-loop", daemon=True)

    def start(self) -> None:
        """Listen and answer in the background."""
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        started.result()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_connection, sock=self._socket, backlog=LISTEN_BACKLOG,
                                                  limit=MAX_HEAD_BYTES)

    def stop(self) -> None:
        """Stop accepting, close every connection and the threads (handlers running finish)."""
        if not self._thread.is_alive():
            self._socket.close()
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._pool.shutdown(wait=False)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass  # the client went away or idled out
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._idle_timeout)
            except asyncio.IncompleteReadError as error:
                if error.partial.strip():
                    writer.write(_encode(json_error(400, "incomplete request head"), False, False))
                return
            except asyncio.LimitOverrunError:
                writer.write(_encode(json_error(431, f"request head over {MAX_HEAD_BYTES} bytes"), False, False))
                await writer.drain()
                return
            try:
                request, keep_alive = _parse_head(head)
                request.body = await asyncio.wait_for(self._read_body(request, reader, writer), self._idle_timeout)
            except _Refused as refused:
                writer.write(_encode(json_error(refused.status, refused.message), False, False))
                await writer.drain()
                return
            response = await loop.run_in_executor(self._pool, self._answer, request)
            keep_alive = keep_alive and not response.close
            writer.write(_encode(response, keep_alive, request.method == "HEAD"))
            await writer.drain()
            if not keep_alive:
                return

    def _answer(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._handler(request)
        except Exception as error:  # a bug must become a 500, not a dropped connection
            LOGGER.exception("REST request failed unexpectedly")
            return json_error(500, f"{type(error).__name__}: {error}")

    async def _read_body(self, request: HttpRequest, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bytes:
        headers = request.headers
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = 0
        if not chunked and "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _Refused(400, f"bad Content-Length: {headers['content-length']!r}") from None
            if length < 0:
                raise _Refused(400, f"bad Content-Length: {length}")
            if length > self._max_body_bytes:
                raise _Refused(429, f"request body of {length} bytes exceeds the "
                                    f"{self._max_body_bytes}-byte limit")
        if (chunked or length) and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if chunked:
            body = await self._read_chunks(reader)
        else:
            body = await reader.readexactly(length) if length else b""
        if "gzip" in headers.get("content-encoding", "").lower() and body:
            body = self._gunzip(body)
        return body

    async def _read_chunks(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Refused(400, f"bad chunk size line: {size_line[:40]!r}") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailer fields, ignored
                return bytes(body)
            if len(body) + size > self._max_body_bytes:
                raise _Refused(429, f"chunked request body exceeds the {self._max_body_bytes}-byte limit")
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _Refused(400, "chunk not followed by CRLF")

    def _gunzip(self, body: bytes) -> bytes:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            plain = inflater.decompress(body, self._max_body_bytes + 1)
        except zlib.error as error:
            raise _Refused(400, f"cannot gunzip the request body: {error}") from None
        if len(plain) > self._max_body_bytes:
            raise _Refused(429, f"gunzipped request body exceeds the {self._max_body_bytes}-byte limit")
        return plain


def _parse_head(head: bytes) -> tuple[HttpRequest, bool]:
    """Request line and header fields → (request without body, keep-alive wanted)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _Refused(400, f"malformed request line: {head[:80]!r}") from None
    if not version.startswith("HTTP/1."):
        raise _Refused(505, f"unsupported protocol {version!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, separator, value = line.partition(":")
        if not separator or not name.strip():
            raise _Refused(400, f"malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return HttpRequest(method, target, headers), keep_alive
