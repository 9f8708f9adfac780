"""Loading model versions: retries, error codes, labels, warmup and stopping, on musicrec's server."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
import pytest

from musicrec.serving import flags
from musicrec.serving.config import ModelEntry, check_version_labels
from musicrec.serving.errors import SavedModelError, ServingError
from musicrec.serving.load_retries import LoadRetries
from musicrec.serving.model_registry import ModelLoadError, ModelRegistry
from musicrec.serving.server_options import ModelLoadOptions, parse_grpc_channel_arguments


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FlakyLoader:
    """Loads any version but the ones in ``broken``, which fail with DATA_LOSS; counts the tries."""

    def __init__(self) -> None:
        self.broken: set[int] = set()
        self.tries: dict[int, int] = {}

    def __call__(self, name: str, version: int, path: str):
        self.tries[version] = self.tries.get(version, 0) + 1
        if version in self.broken:
            raise SavedModelError(grpc.StatusCode.DATA_LOSS, f"Can't parse {path}/saved_model.pb as binary proto")
        return f"{name} v{version}"


def add_version(base, version: int) -> None:
    (base / str(version)).mkdir(parents=True)
    (base / str(version) / "saved_model.pb").write_bytes(b"")


def registry_with(tmp_path, max_retries: int, interval_seconds: float = 60.0):
    clock, loader = FakeClock(), FlakyLoader()
    add_version(tmp_path / "m", 1)
    registry = ModelRegistry({"m": str(tmp_path / "m")}, poll_wait_seconds=0, loader=loader,
                             retries=LoadRetries(max_retries, interval_seconds, clock=clock))
    registry.load_initial()
    return registry, loader, clock


def state(registry: ModelRegistry, version: int) -> tuple[str, grpc.StatusCode]:
    (status,) = registry.status("m", version)
    return status.state, status.error_code


def test_a_failed_version_is_retried_after_the_interval_and_loads_once_fixed(tmp_path):
    registry, loader, clock = registry_with(tmp_path, max_retries=5)
    loader.broken.add(2)
    add_version(tmp_path / "m", 2)
    registry.poll_once()
    assert loader.tries[2] == 1 and state(registry, 2) == ("LOADING", grpc.StatusCode.OK)
    assert registry.served_versions() == {"m": 1}  # the old version keeps serving
    clock.now = 59.0
    registry.poll_once()
    assert loader.tries[2] == 1  # a poll does not retry before the interval
    loader.broken.clear()  # the fixed copy is renamed over the broken one
    clock.now = 60.0
    registry.poll_once()
    assert loader.tries[2] == 2 and state(registry, 2) == ("AVAILABLE", grpc.StatusCode.OK)
    assert registry.served_versions() == {"m": 2} and state(registry, 1)[0] == "END"


def test_after_the_last_retry_a_version_ends_with_its_load_error_until_it_reappears(tmp_path):
    registry, loader, clock = registry_with(tmp_path, max_retries=1)
    loader.broken.add(2)
    add_version(tmp_path / "m", 2)
    registry.poll_once()
    clock.now = 60.0
    registry.poll_once()
    assert loader.tries[2] == 2 and state(registry, 2) == ("END", grpc.StatusCode.DATA_LOSS)
    assert "as binary proto" in registry.status("m", 2)[0].error_message
    clock.now = 10_000.0
    registry.poll_once()
    assert loader.tries[2] == 2  # given up, as TF Serving's harness in its error state
    (tmp_path / "m" / "2" / "saved_model.pb").rename(tmp_path / "pb")  # gone for a poll...
    registry.poll_once()
    (tmp_path / "pb").rename(tmp_path / "m" / "2" / "saved_model.pb")  # ...and back: tried afresh
    registry.poll_once()
    assert loader.tries[2] == 3


def test_startup_waits_through_the_retries_then_fails_with_the_load_error(tmp_path):
    loader = FlakyLoader()
    loader.broken.add(1)
    add_version(tmp_path / "m", 1)
    registry = ModelRegistry({"m": str(tmp_path / "m")}, poll_wait_seconds=0, loader=loader,
                             retries=LoadRetries(max_retries=2, interval_seconds=0.05))
    with pytest.raises(ModelLoadError, match="as binary proto"):
        registry.load_initial()
    assert loader.tries[1] == 3
    assert state(registry, 1) == ("END", grpc.StatusCode.DATA_LOSS)


def test_a_label_may_only_name_an_available_version_unless_allowed():
    entries = [ModelEntry("m", "/m", labels={"stable": 2})]
    with pytest.raises(ServingError) as raised:
        check_version_labels(entries, {"m": [1]}, {})
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    check_version_labels(entries, {"m": [1, 2]}, {})
    check_version_labels(entries, {"m": [1]}, {}, allow_unavailable=True)
    with pytest.raises(ServingError):  # moving an existing label still needs the version
        check_version_labels(entries, {"m": [1]}, {"m": {"stable": 1}}, allow_unavailable=True)


def test_labels_in_a_startup_config_need_the_flag(tmp_path):
    add_version(tmp_path / "m", 1)
    entries = [ModelEntry("m", str(tmp_path / "m"), labels={"stable": 1})]
    with pytest.raises(ModelLoadError, match="--allow_version_labels_for_unavailable_models"):
        ModelRegistry(entries, poll_wait_seconds=0, loader=FlakyLoader()).load_initial()
    allowed = ModelRegistry(entries, poll_wait_seconds=0, loader=FlakyLoader(), allow_unavailable_labels=True)
    allowed.load_initial()
    assert allowed.resolve_label("m", "stable") == 1


def test_tf_serving_loading_flags_parse(tmp_path):
    parsed = flags.parse_flags([f"--model_base_path={tmp_path}", "--max_num_load_retries=2",
                                "--load_retry_interval_micros=500", "--enable_model_warmup=false",
                                "--enable_signature_method_name_check", "--rest_api_num_threads=3",
                                "--rest_api_timeout_in_ms=100", "--allow_version_labels_for_unavailable_models",
                                "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=x"])
    assert parsed.loading == ModelLoadOptions(2, 500, False, True, True)
    assert (parsed.rest_api_num_threads, parsed.rest_api_timeout_in_ms) == (3, 100)
    assert parsed.grpc_channel_arguments == [("grpc.max_connection_age_ms", 2000), ("grpc.lb_policy_name", "x")]
    defaults = flags.parse_flags([f"--model_base_path={tmp_path}"])
    assert defaults.loading == ModelLoadOptions()  # TF Serving's: 5 retries a minute apart, warmup on
    assert defaults.loading.max_num_load_retries == 5
    assert defaults.loading.load_retry_interval_micros == 60_000_000
    server = flags.server_from_flags(defaults)
    assert server.rest_threads == server.max_workers == 4 * len(os.sched_getaffinity(0))
    for bad in ("--max_num_load_retries=-1", "--rest_api_num_threads=0", "--grpc_channel_arguments=novalue"):
        with pytest.raises(SystemExit):
            flags.parse_flags([f"--model_base_path={tmp_path}", bad])
    with pytest.raises(ValueError):
        parse_grpc_channel_arguments("a=1,b")


def test_sigterm_while_loading_stops_the_server_cleanly(tmp_path):
    """The handler is installed before the models load: SIGTERM during the load retries exits 0."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    command = [sys.executable, "-m", "musicrec.serving", "--port=0", "--model_name=m",
               f"--model_base_path={tmp_path / 'm'}", "--max_num_load_retries=100",
               "--load_retry_interval_micros=60000000"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        for line in process.stderr:
            if re.search(r"retry 1 of 100 in 60 s", line):
                break
        else:
            pytest.fail("the server never reported a load retry")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - sent < 30  # not the minute the retry would have waited
        assert "stopped while loading model 'm'" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
