"""REST under connection churn: 32 clients, each opening a new connection per request.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_rest_connections.py                     # 60 s per mode
    .venv/bin/python benchmarks/bench_rest_connections.py --seconds 10        # a quick run
    .venv/bin/python benchmarks/bench_rest_connections.py --workdir demo-run  # next_track a demo run pushed

The server runs as ``python -m musicrec.serving`` with ``--rest_api_port``
(as users run it, its default REST threads), serving ``next_track`` (an
untrained stand-in with the real signature unless ``--workdir``); the
clients are threads of this process sending one-session ``:predict``
requests in the row format, back to back. Mode ``new_connection``: every
request on a new TCP connection (``Connection: close``), the load that used
to overflow the listen backlog (9–17 resets per 320 requests with a backlog
of 5). Reference, in the same run: mode ``keep_alive``, the same clients
each reusing one connection. The two modes take turns in 10 s windows
(``--seconds`` each in all), so both see the same background load; the
figure that compares across machines is new_connection over keep_alive
requests/s.

Counted per mode: answered requests, ``resets`` (a connection refused, reset
or closed without an answer) and ``errors`` (any other failure: a status
other than 200, an unreadable answer, a timeout). Both must be 0; the exit
status is 1 otherwise. The 1-minute load average before and after is
recorded with the figures: the machine is shared.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench_serving_load import build_stand_ins, free_port, request_inputs  # noqa: E402  (run as a script)
from common import short_machine, write_result  # noqa: E402
from musicrec.serving.rest_client import RestClient  # noqa: E402
from musicrec.serving.errors import ServingError  # noqa: E402
from musicrec.serving import wire  # noqa: E402
from musicrec.serving.wire import list_versions  # noqa: E402

NAME = "rest_connections"
MODEL = "next_track"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "rest_connections.json")
MODES = ("new_connection", "keep_alive")
RESETS = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
          http.client.RemoteDisconnected)


class RestServerProcess:
    """``python -m musicrec.serving`` with REST on free ports, stopped with SIGTERM."""

    def __init__(self, base_path: str, extra_flags: list[str]) -> None:
        self.rest_port = free_port()
        command = [sys.executable, "-m", "musicrec.serving", f"--port={free_port()}",
                   f"--rest_api_port={self.rest_port}", f"--model_name={MODEL}", f"--model_base_path={base_path}",
                   "--file_system_poll_wait_seconds=0", *extra_flags]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        rest = RestClient(f"http://127.0.0.1:{self.rest_port}", retries=0)
        deadline = time.monotonic() + 180
        while True:
            try:
                rest.get_model_status(MODEL)
                return
            except ServingError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("the server did not become ready")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def load_window(port: int, body: bytes, clients: int, seconds: float, new_connection: bool) -> dict[str, Any]:
    """``clients`` threads sending ``body`` for ``seconds``; counts answers, resets and errors."""
    counts = {"requests": 0, "resets": 0, "errors": 0}
    first_failures: list[str] = []
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients + 1)
    stop_at = [time.perf_counter() + 3600]
    headers = {"Content-Type": "application/json"}
    if new_connection:
        headers["Connection"] = "close"

    def count(key: str, failure: str | None = None) -> None:
        with lock:
            counts[key] += 1
            if failure and len(first_failures) < 5:
                first_failures.append(failure)

    def client_loop() -> None:
        connection = None
        start_barrier.wait()
        while time.perf_counter() < stop_at[0]:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("POST", f"/v1/models/{MODEL}:predict", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200 or "predictions" not in json.loads(answer):
                    count("errors", f"HTTP {response.status}: {answer[:200]!r}")
                else:
                    count("requests")
            except RESETS as error:
                count("resets", repr(error))
                connection.close()
                connection = None
                continue
            except Exception as error:  # timeouts, bad JSON: anything else is an error
                count("errors", repr(error))
                connection.close()
                connection = None
                continue
            if new_connection:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start_barrier.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    return {**counts, "seconds": time.perf_counter() - began, "first_failures": first_failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="a musicrec workdir whose serving/ holds a pushed next_track")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per mode (default 60)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--window-seconds", type=float, default=10.0, help="length of each alternating window")
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="the server's TF intra- and inter-op threads (default 1; 0 = TF's default)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="result JSON path")
    args = parser.parse_args(argv)
    server_flags = []
    if args.tf_threads:
        server_flags = [f"--tensorflow_intra_op_parallelism={args.tf_threads}",
                        f"--tensorflow_inter_op_parallelism={args.tf_threads}"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as scratch:
        if args.workdir:
            serving_base, source = wire.serving_base(os.path.abspath(args.workdir)), "pushed by a demo run"
        else:
            serving_base, source = os.path.join(scratch, "serving"), "untrained stand-in (real signature)"
            build_stand_ins(serving_base, models=(MODEL,))
        versions = list_versions(os.path.join(serving_base, MODEL))
        if not versions:
            parser.error(f"no version of {MODEL} under {serving_base}")
        keys = request_inputs(MODEL, os.path.join(serving_base, MODEL, str(versions[-1])))["track_keys"]
        body = json.dumps({"instances": [[key.decode() for key in keys[0]]]}).encode()
        server = RestServerProcess(os.path.join(serving_base, MODEL), server_flags)
        try:
            load_window(server.rest_port, body, args.clients, 2.0, new_connection=False)  # warm up
            windows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            for _ in range(max(1, round(args.seconds / args.window_seconds))):
                for mode in MODES:
                    windows[mode].append(load_window(server.rest_port, body, args.clients,
                                                     min(args.window_seconds, args.seconds),
                                                     new_connection=mode == "new_connection"))
        finally:
            server.stop()
    modes = {}
    for mode, measured in windows.items():
        totals = {key: sum(window[key] for window in measured) for key in ("requests", "resets", "errors")}
        seconds = sum(window["seconds"] for window in measured)
        modes[mode] = {**totals, "seconds": seconds, "requests_per_second": totals["requests"] / seconds,
                       "first_failures": [failure for window in measured for failure in window["first_failures"]][:5]}
    ratio = modes["new_connection"]["requests_per_second"] / modes["keep_alive"]["requests_per_second"]
    load_after = os.getloadavg()[0]
    result = write_result(args.out, NAME, {
        "clients": args.clients,
        "seconds_per_mode": args.seconds,
        "window_seconds": args.window_seconds,
        "server_flags": server_flags,
        "model": f"{MODEL}: {source}",
        "modes": modes,
        "new_connection_over_keep_alive_qps": ratio,
        "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
    })
    churn = modes["new_connection"]
    print(f"{NAME}: {args.clients} clients, new connection per request: {churn['requests_per_second']:.0f} "
          f"requests/s, {churn['resets']} resets, {churn['errors']} errors "
          f"({ratio:.2f}x keep-alive's {modes['keep_alive']['requests_per_second']:.0f} requests/s, "
          f"{modes['keep_alive']['resets']} resets, {modes['keep_alive']['errors']} errors); "
          f"{args.seconds:g} s per mode; load {load_before:.1f} -> {load_after:.1f}; "
          f"{short_machine(result['machine'])} -> {args.out}")
    failures = sum(mode["resets"] + mode["errors"] for mode in modes.values())
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
