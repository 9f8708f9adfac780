"""Fault test: the server process is killed (SIGKILL) mid-load and restarted on the
same ports; gRPC and REST clients with retries still complete every request.

Runs against ``python -m musicrec.serving`` and, when env TFS_BINARY names a
``tensorflow_model_server`` binary, against that too (skipped otherwise).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_serving import export_scorer  # noqa: E402
from test_serving_contract import free_port  # noqa: E402

from musicrec.serving.client import PredictionClient
from musicrec.serving.rest_client import RestClient
from musicrec.demo import stop_process

X = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
REQUESTS_PER_CLIENT = 30
KILL_AFTER_REQUESTS = 20  # all clients together, before the kill


def local_command(base: str, port: int, rest_port: int) -> list[str]:
    return [sys.executable, "-m", "musicrec.serving", f"--port={port}", f"--rest_api_port={rest_port}",
            "--model_name=scorer", f"--model_base_path={base}"]


def tfs_command(base: str, port: int, rest_port: int) -> list[str]:
    return [os.environ["TFS_BINARY"], f"--port={port}", f"--rest_api_port={rest_port}",
            "--model_name=scorer", f"--model_base_path={base}"]


@pytest.mark.parametrize("command_for", [
    pytest.param(local_command, id="local"),
    pytest.param(tfs_command, id="tfs", marks=pytest.mark.skipif(
        not os.environ.get("TFS_BINARY"), reason="set TFS_BINARY to a tensorflow_model_server binary")),
])
def test_clients_with_retries_survive_a_killed_and_restarted_server(command_for, tmp_path):
    base = str(tmp_path / "scorer")
    export_scorer(os.path.join(base, "1"), weight=1.0)
    port, rest_port = free_port(), free_port()
    command = command_for(base, port, rest_port)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    completed = [0, 0, 0, 0]
    failures: list[BaseException] = []

    def send(index: int) -> None:
        # Generous retries: a restart costs a TensorFlow import and a model load.
        if index < 3:
            client = PredictionClient(f"127.0.0.1:{port}", timeout_seconds=10, retries=60,
                                      backoff_seconds=0.1, max_backoff_seconds=0.5)
            call = lambda: float(client.predict("scorer", {"x": X})["total"][0])  # noqa: E731
        else:
            client = RestClient(f"http://127.0.0.1:{rest_port}", timeout_seconds=10, retries=60,
                                backoff_seconds=0.1, max_backoff_seconds=0.5)
            call = lambda: client.predict("scorer", inputs={"x": X.tolist()})["total"][0]  # noqa: E731
        try:
            for _ in range(REQUESTS_PER_CLIENT):
                assert call() == pytest.approx(13.0)
                completed[index] += 1
                time.sleep(0.02)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    try:
        senders = [threading.Thread(target=send, args=(index,)) for index in range(4)]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 120
        while sum(completed) < KILL_AFTER_REQUESTS:
            assert time.monotonic() < deadline and not failures, failures
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        done_at_kill = sum(completed)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=environment)
        for sender in senders:
            sender.join(timeout=180)
        assert not failures, failures
        assert completed == [REQUESTS_PER_CLIENT] * 4
        assert done_at_kill < 4 * REQUESTS_PER_CLIENT, "the kill came after all requests"
    finally:
        stop_process(process, timeout_seconds=20)
