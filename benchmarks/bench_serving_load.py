"""Load on the local model server: 1, 8 and 32 concurrent gRPC clients, batching off and on.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_serving_load.py                        # 60 s per point, stand-in models
    .venv/bin/python benchmarks/bench_serving_load.py --seconds 10           # a quick run
    .venv/bin/python benchmarks/bench_serving_load.py --workdir demo-run     # models a demo run pushed

The server runs as ``python -m musicrec.serving`` in its own process (as
users run it), serving the ``genre`` and ``next_track`` SavedModels; the
clients are threads of this process, each sending one-example Predict
requests back to back for ``--seconds`` seconds per point (60 by default). Each point
reports p50/p99 latency, QPS and errors. Points: concurrency 1 and 8 against
a server without batching; then 32 against it and against a second server
started with ``--enable_batching``, the two taking turns in 10 s windows
(``--seconds`` each in all; ``alternating_points``) so that their QPS ratio
is not load drift.

Reference, measured in the same run on the same SavedModel and request: a
direct in-process call of the loaded ``serving_default`` signature, one at a
time, in a helper process that loads only that model with the server's TF
settings (``ReferenceProcess``), alternating 1 s windows with one gRPC client
of this process so both see the same background load (``paired_overhead``). The ratios are (a) the gRPC p50 minus
the in-process p50 at concurrency 1 (the serving overhead; no target: a bare
Python gRPC server alone costs about 2 ms on the 2-core machine) and (b)
batched over unbatched QPS at concurrency 32 (target ≥ 1.5). REST under
connection churn: ``bench_rest_connections.py``.
The reference is the plain ``loaded.signatures["serving_default"](**tensors)``
a user writes; the server runs the same function through its flat signature
on inputs it has already checked (``musicrec.serving.signature_call``), so
part of the overhead it saves is the keyword call's own Python. Each figure
carries the 1-minute load average it was measured under: the machine is shared.
In the same alternating windows the same client sends the same request to
two ``EchoServer``s, gRPC's server set up as the model server's but answering
with canned bytes: one at once (its p50 is the floor any Python gRPC server
pays) and one after making the reference's own model call (a bare model
server: its overhead is what the shortest Python gRPC server around the same
call pays; the model server's overhead beyond it is musicrec's request path).

TensorFlow's thread pools: both servers run with ``--tf-threads`` intra- and
inter-op threads (``--tensorflow_intra_op_parallelism`` /
``--tensorflow_inter_op_parallelism``, 1 by default) and the reference process
uses the same, so the overhead compares like with like. On a small
machine shared with other work one thread each is the fastest setting for
these small graphs: two-thread pools spend more on handing ops between
threads than the parallelism returns (``benchmarks/HISTORY.md``).

Without ``--workdir``, untrained stand-ins are built with the real model
code (``musicrec.models``) and the same signatures: latency does not depend
on the weights.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import short_machine, write_result  # noqa: E402  (run as a script)
from musicrec.serving.client import PredictionClient  # noqa: E402
from musicrec.serving.config import write_model_config  # noqa: E402
from musicrec.serving.errors import ServingError  # noqa: E402
from musicrec.serving import wire  # noqa: E402
from musicrec.serving.wire import list_versions  # noqa: E402

NAME = "serving_load"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", "serving_load.json")
MODELS = ("genre", "next_track")
# One batch thread: with one TF thread per pool a second concurrent batch only
# queues behind the first, while one batch forming as the other runs is free.
BATCHING_PARAMETERS = "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n" \
                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n"


# ------------------------------------------------------------------------- models


def build_stand_ins(serving_base: str, genres: int = 8, vocabulary_size: int = 2000,
                    models: tuple[str, ...] = MODELS) -> None:
    """Untrained SavedModels of ``models`` (genre, next_track) with the real signatures, as version 1."""
    from musicrec.models.export import export_serving_model
    from musicrec.models.features import AudioFeatureParams
    from musicrec.models.genre import model as genre_model
    from musicrec.models.genre.hparams import GenreHParams
    from musicrec.models.genre.signatures import GenreSignatures
    from musicrec.models.next_track import model as next_track_model
    from musicrec.models.next_track import serving as next_track_serving
    from musicrec.models.next_track.hparams import NextTrackHParams

    if "genre" in models:
        # The log-mel LSTM (a light stand-in), exported as run_fn exports it: per-track
        # signatures and the feature parameters stored with it.
        params = AudioFeatureParams()
        normalization = genre_model.new_normalization()
        normalization.adapt(np.random.default_rng(0).normal(size=(256, params.n_mels)).astype(np.float32))
        classifier = genre_model.build_classifier(params.n_mels, genres, GenreHParams(),
                                                  normalization)
        labels = [f"genre{i}" for i in range(genres)]
        export_serving_model(GenreSignatures(genre_model.build_serving_model(classifier, labels),
                                             labels, params),
                             os.path.join(serving_base, "genre", "1"), ["log_mel"],
                             ["probabilities", "classes", "genre", "embedding"])
    if "next_track" not in models:
        return
    hparams = NextTrackHParams()
    vocabulary = [f"track{i}" for i in range(vocabulary_size)]
    core = next_track_model.build_model(len(vocabulary), hparams)
    export_serving_model(next_track_serving.build_serving_model(core, vocabulary, hparams.top_k),
                         os.path.join(serving_base, "next_track", "1"), ["track_keys"], ["track_keys", "scores"])


def request_inputs(model: str, export_dir: str) -> dict[str, np.ndarray]:
    """One example: a track of one 3 s log-mel segment, or a 10-play session prefix."""
    if model == "genre":
        from musicrec.models.features import AudioFeatureParams

        params = AudioFeatureParams()
        segment = np.random.default_rng(1).normal(size=(1, 1, params.frames_per_segment, params.n_mels))
        return {"log_mel": segment.astype(np.float32)}
    vocabulary_probe = tf.saved_model.load(export_dir).signatures["serving_default"](
        track_keys=tf.constant([[""]]))["track_keys"].numpy()[0]
    keys = [key for key in vocabulary_probe.tolist() if key != b"[UNK]"][:10] or [b"x"]
    return {"track_keys": np.array([keys], dtype=object)}


def time_calls(call, seconds: float, pause_seconds: float = 0.0) -> list[float]:
    """Latencies (s) of ``call()``s for ``seconds``, ``pause_seconds`` apart (not timed)."""
    latencies = []
    window_end = time.perf_counter() + seconds
    while time.perf_counter() < window_end:
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
        if pause_seconds:
            time.sleep(pause_seconds)
    return latencies


def in_process_call(model: str, export_dir: str):
    """The reference call: the loaded ``serving_default`` on the request's tensors,
    outputs copied to numpy as the server copies them."""
    signature = tf.saved_model.load(export_dir).signatures["serving_default"]
    tensors = {alias: tf.constant(value) for alias, value in request_inputs(model, export_dir).items()}
    return lambda: {alias: value.numpy() for alias, value in signature(**tensors).items()}


class ReferenceProcess:
    """The in-process reference, in a process of its own with the server's TF settings.

    A fresh interpreter that loads only the SavedModel (as the server does),
    with the same ``--tf-threads``: the benchmark process also runs the gRPC
    client threads and built the stand-in models, which made its own in-process
    calls slower than the server's on the loaded machine (and so the overhead
    negative). Protocol: a line ``<mode> <seconds> <pause seconds>`` in, a JSON
    list of latencies out; ``mode`` is ``direct`` (calls in a loop on the
    main thread) or ``hop`` (each call handed to a worker thread and waited
    for, as the server's gRPC worker threads run it).
    """

    def __init__(self, model: str, export_dir: str, tf_threads: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--reference-worker", model, export_dir,
             f"--tf-threads={tf_threads}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def time_calls(self, mode: str, seconds: float, pause_seconds: float = 0.0) -> list[float]:
        self.process.stdin.write(f"{mode} {seconds} {pause_seconds}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference process exited with {self.process.wait()}")
        return json.loads(line)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def reference_worker(model: str, export_dir: str) -> int:
    """The child side of :class:`ReferenceProcess`."""
    from concurrent.futures import ThreadPoolExecutor

    call = in_process_call(model, export_dir)
    with ThreadPoolExecutor(1) as worker:
        calls = {"direct": call, "hop": lambda: worker.submit(call).result()}
        for line in sys.stdin:
            mode, seconds, pause_seconds = line.split()
            print(json.dumps(time_calls(calls[mode], float(seconds), float(pause_seconds))), flush=True)
    return 0


class EchoServer:
    """gRPC's own floor: a PredictionService in its own process whose Predict returns canned bytes.

    It runs gRPC's server as ``LocalModelServer`` does (the same worker pool,
    thread count and options) and answers every Predict with ``response``, a
    real answer of the model server to the benchmark's request, so a client
    sends and parses exactly what it does against the model server. Its
    round trip is what any Python gRPC server pays before its handler does
    anything: ``paired_overhead`` reports the overhead beyond it.

    With ``model`` and ``export_dir`` it is a *bare model server*: before
    answering, each Predict makes the reference's own call (``in_process_call``:
    the loaded ``serving_default`` on tensors made once, with the same TF
    threads), and nothing of musicrec's request path. Its overhead over the
    reference is what the shortest Python gRPC server around the same model
    call pays on this machine.
    """

    def __init__(self, response: bytes, scratch: str, model: str | None = None, export_dir: str | None = None,
                 tf_threads: int = 1) -> None:
        path = os.path.join(scratch, f"echo-{len(os.listdir(scratch))}.bin")
        with open(path, "wb") as handle:
            handle.write(response)
        command = [sys.executable, os.path.abspath(__file__), "--echo-server", path, f"--tf-threads={tf_threads}"]
        if model:
            command += ["--echo-model", model, export_dir]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True,
                                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        port = self.process.stdout.readline().strip()
        if not port:
            raise RuntimeError(f"the echo server exited with {self.process.wait()}")
        self.target = f"127.0.0.1:{port}"

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def echo_server(response_path: str, model: str | None = None, export_dir: str | None = None) -> int:
    """The child side of :class:`EchoServer`: serve until stdin closes."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from musicrec.serving.server import DEFAULT_MAX_MESSAGE_BYTES, default_max_workers
    from musicrec.serving.worker_pool import LifoWorkerPool

    with open(response_path, "rb") as handle:
        canned = predict_pb2.PredictResponse.FromString(handle.read())
    model_call = in_process_call(model, export_dir) if model else None
    if model_call:
        model_call()  # the first call traces

    class Echo(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if model_call:
                model_call()
            return canned

    # The model server's own default thread count without batching.
    server = grpc.server(LifoWorkerPool(default_max_workers(None), thread_name_prefix="predict"), options=[
        ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(grace=None)
    return 0


def model_response(target: str, model: str, inputs: dict[str, np.ndarray]) -> bytes:
    """The serialized PredictResponse the server gives the benchmark's request."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from musicrec.serving.tensor_proto import fill_tensor_proto

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for alias, value in inputs.items():
        fill_tensor_proto(request.inputs[alias], value)
    with grpc.insecure_channel(target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60).SerializeToString()


def paired_overhead(target: str, model: str, reference: ReferenceProcess, inputs: dict[str, np.ndarray],
                    seconds: float, window_seconds: float = 1.0, pause_seconds: float = 0.002,
                    floor_target: str | None = None, bare_target: str | None = None) -> dict[str, float]:
    """p50 of one-at-a-time calls in-process and over gRPC, in alternating windows.

    Alternating ``window_seconds`` windows of each (``seconds`` of each in
    all) exposes both to the same background load on a shared machine, so
    their difference is the serving overhead rather than load drift.

    The reference is timed two ways (``ReferenceProcess``): ``direct``, the
    plain loop, and ``hop``, each call run on a worker thread as the server
    runs it. On the loaded 2-core machine the plain loop was up to 2x slower
    than the same call with a hop (genre, one TF thread: 19 ms against
    9-10 ms, load 8; a thread that never sleeps loses the CPU to other jobs
    more), which made the overhead against it negative; the hop reference
    is the conservative one and the overhead reported against it. Both
    sides pause ``pause_seconds`` between calls for the same reason.

    Two more sides time the same client and request against ``EchoServer``s:
    ``floor_target`` answers at once (gRPC's floor), ``bare_target`` makes
    the reference's model call first (the shortest Python gRPC server around
    the same call). Each is reported with the model server's overhead
    beyond it.
    """
    targets = {"grpc": target, "grpc_floor": floor_target, "bare_server": bare_target}
    clients = {name: PredictionClient(address, timeout_seconds=30, retries=0)
               for name, address in targets.items() if address}
    try:
        windows = {
            "in_process_direct": lambda window: reference.time_calls("direct", window, pause_seconds),
            "in_process": lambda window: reference.time_calls("hop", window, pause_seconds),
        }
        for name, client in clients.items():
            windows[name] = (lambda client: lambda window: time_calls(
                lambda: client.predict(model, inputs), window, pause_seconds))(client)
        latencies: dict[str, list[float]] = {name: [] for name in windows}
        for run in windows.values():
            run(0.5)  # warm-up: first calls, channel, traced functions
        for _ in range(max(1, round(seconds / window_seconds))):
            for name, run in windows.items():
                latencies[name] += run(window_seconds)
    finally:
        for client in clients.values():
            client.close()
    p50 = {name: float(np.percentile(values, 50) * 1e3) for name, values in latencies.items()}
    direct, in_process, over_grpc = p50["in_process_direct"], p50["in_process"], p50["grpc"]
    result = {"in_process_p50_ms": in_process, "grpc_p50_ms": over_grpc, "overhead_p50_ms": over_grpc - in_process,
              "in_process_direct_loop_p50_ms": direct, "overhead_vs_direct_loop_p50_ms": over_grpc - direct,
              "in_process_calls": len(latencies["in_process"]), "grpc_calls": len(latencies["grpc"]),
              "pause_between_calls_ms": pause_seconds * 1e3, "load_average_1min": os.getloadavg()[0]}
    if floor_target:
        result["grpc_floor_p50_ms"] = p50["grpc_floor"]
        result["overhead_beyond_floor_p50_ms"] = over_grpc - in_process - p50["grpc_floor"]
    if bare_target:
        result["bare_server_p50_ms"] = p50["bare_server"]
        result["bare_server_overhead_p50_ms"] = p50["bare_server"] - in_process
        result["overhead_beyond_bare_server_p50_ms"] = over_grpc - p50["bare_server"]
    return result


# ------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``python -m musicrec.serving`` on a free port, stopped with SIGTERM."""

    def __init__(self, config_path: str, batching_file: str | None, extra_flags: list[str] = ()) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "musicrec.serving", f"--port={self.port}",
                   f"--model_config_file={config_path}", "--file_system_poll_wait_seconds=0", *extra_flags]
        if batching_file:
            command += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        self.target = f"127.0.0.1:{self.port}"
        with PredictionClient(self.target) as client:
            for model in MODELS:
                client.wait_until_ready(model, timeout_seconds=120)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# --------------------------------------------------------------------------- load


def load_window(target: str, model: str, inputs: dict[str, np.ndarray], concurrency: int,
                seconds: float) -> tuple[np.ndarray, list[str], float]:
    """``concurrency`` client threads (one channel each) sending requests for ``seconds``.

    Returns the latencies (s) of the answered requests, the error messages
    and the seconds the window lasted.
    """
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    start_barrier = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def client_loop(index: int) -> None:
        with PredictionClient(target, timeout_seconds=30, retries=0) as client:
            for _ in range(3):  # warm the channel and the server's traced function
                client.predict(model, inputs)
            start_barrier.wait()
            own = latencies[index]
            while time.perf_counter() < stop_at[0]:
                started = time.perf_counter()
                try:
                    client.predict(model, inputs)
                except ServingError as error:
                    errors.append(str(error))
                    continue
                own.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop, args=(index,)) for index in range(concurrency)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + 3600  # replaced once everyone is ready
    start_barrier.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return np.concatenate([np.asarray(values) for values in latencies]), errors, elapsed


def point_summary(model: str, concurrency: int,
                  windows: list[tuple[np.ndarray, list[str], float]]) -> dict[str, Any]:
    """One load point from its windows: QPS over their summed time, latency percentiles over all."""
    merged = np.concatenate([latencies for latencies, _, _ in windows])
    errors = [message for _, messages, _ in windows for message in messages]
    return {
        "model": model,
        "concurrency": concurrency,
        "requests": int(merged.size),
        "errors": len(errors),
        "first_errors": errors[:3],
        "qps": merged.size / sum(elapsed for _, _, elapsed in windows),
        "p50_ms": float(np.percentile(merged, 50) * 1e3),
        "p99_ms": float(np.percentile(merged, 99) * 1e3),
        "windows": len(windows),
        "load_average_1min": os.getloadavg()[0],  # the machine is shared: how busy it was
    }


def run_point(target: str, model: str, inputs: dict[str, np.ndarray], concurrency: int,
              seconds: float) -> dict[str, Any]:
    """One load point: ``concurrency`` clients for ``seconds`` (see ``load_window``)."""
    return point_summary(model, concurrency, [load_window(target, model, inputs, concurrency, seconds)])


def alternating_points(targets: dict[str, str], model: str, inputs: dict[str, np.ndarray], concurrency: int,
                       seconds: float, window_seconds: float = 10.0) -> dict[str, dict[str, Any]]:
    """One load point per target, measured in alternating ``window_seconds`` windows.

    Each target gets ``seconds`` in all. Taking turns exposes every target to
    the same background load, so their QPS ratio is not load drift: on the
    shared 2-core machine one server's 60 s point at 32 clients ranged from
    305 to 446 QPS between runs minutes apart.
    """
    windows: dict[str, list] = {name: [] for name in targets}
    for _ in range(max(1, round(seconds / window_seconds))):
        for name, target in targets.items():
            windows[name].append(load_window(target, model, inputs, concurrency, min(window_seconds, seconds)))
    return {name: point_summary(model, concurrency, measured) for name, measured in windows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", help="a musicrec workdir whose serving/ holds pushed genre and next_track")
    parser.add_argument("--seconds", "--duration", dest="seconds", type=float, default=60.0,
                        help="seconds per load point (default 60, as the issue asks); less for quick runs")
    parser.add_argument("--tf-threads", type=int, default=1,
                        help="TF intra- and inter-op threads of the servers and of the in-process "
                             "reference (default 1; 0 = TensorFlow's own default)")
    parser.add_argument("--concurrency", default="1,8,32", help="client counts, comma separated")
    parser.add_argument("--out", default=DEFAULT_OUT, help="result JSON path")
    parser.add_argument("--reference-worker", nargs=2, metavar=("MODEL", "EXPORT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--echo-server", metavar="RESPONSE_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--echo-model", nargs=2, metavar=("MODEL", "EXPORT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tf_threads:
        # Before any TF op runs in this process.
        tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
    if args.reference_worker:
        return reference_worker(*args.reference_worker)
    if args.echo_server:
        return echo_server(args.echo_server, *(args.echo_model or ()))
    levels = sorted({int(value) for value in args.concurrency.split(",")})
    if levels[0] <= 0:
        parser.error("--concurrency: client counts must be positive")
    server_flags = []
    if args.tf_threads:
        server_flags = [f"--tensorflow_intra_op_parallelism={args.tf_threads}",
                        f"--tensorflow_inter_op_parallelism={args.tf_threads}"]

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as scratch:
        if args.workdir:
            serving_base = wire.serving_base(os.path.abspath(args.workdir))
            source = "pushed by a demo run"
        else:
            serving_base = os.path.join(scratch, "serving")
            build_stand_ins(serving_base)
            source = "untrained stand-ins (musicrec.models, real signatures)"
        export_dirs = {}
        for model in MODELS:
            versions = list_versions(os.path.join(serving_base, model))
            if not versions:
                parser.error(f"no version of {model} under {serving_base}")
            export_dirs[model] = os.path.join(serving_base, model, str(versions[-1]))
        config_path = write_model_config(os.path.join(scratch, "models.config"),
                                         {model: os.path.join(serving_base, model) for model in MODELS})
        batching_file = os.path.join(scratch, "batching.config")
        with open(batching_file, "w", encoding="utf-8") as handle:
            handle.write(BATCHING_PARAMETERS)
        inputs = {model: request_inputs(model, export_dirs[model]) for model in MODELS}

        points: list[dict[str, Any]] = []
        overhead: dict[str, dict[str, float]] = {}

        def record(point: dict[str, Any], batching: bool) -> None:
            point["batching"] = batching
            points.append(point)
            print(json.dumps({key: (round(value, 3) if isinstance(value, float) else value)
                              for key, value in point.items() if key != "first_errors"}), flush=True)

        plain = ServerProcess(config_path, None, server_flags)
        try:
            for model in MODELS:
                reference = ReferenceProcess(model, export_dirs[model], args.tf_threads)
                response = model_response(plain.target, model, inputs[model])
                echo = EchoServer(response, scratch)
                bare = EchoServer(response, scratch, model, export_dirs[model], args.tf_threads)
                try:
                    overhead[model] = paired_overhead(plain.target, model, reference, inputs[model], args.seconds,
                                                      floor_target=echo.target, bare_target=bare.target)
                finally:
                    reference.stop()
                    echo.stop()
                    bare.stop()
                print(json.dumps({"model": model, **{key: round(value, 3) for key, value
                                                     in overhead[model].items()}}), flush=True)
                for concurrency in levels[:-1]:
                    record(run_point(plain.target, model, inputs[model], concurrency, args.seconds), False)
            # The top level runs against both servers at once, taking turns.
            batched = ServerProcess(config_path, batching_file, server_flags)
            try:
                for model in MODELS:
                    pair = alternating_points({"off": plain.target, "on": batched.target}, model,
                                              inputs[model], levels[-1], args.seconds)
                    record(pair["off"], False)
                    record(pair["on"], True)
            finally:
                batched.stop()
        finally:
            plain.stop()

    summary: dict[str, Any] = {}
    for model in MODELS:
        by_key = {(point["concurrency"], point["batching"]): point for point in points if point["model"] == model}
        top_off, top_on = by_key[(max(levels), False)], by_key[(max(levels), True)]
        summary[model] = {
            **overhead[model],
            "batching_qps_ratio_at_max": top_on["qps"] / top_off["qps"],
        }
    total_errors = sum(point["errors"] for point in points)
    result = write_result(args.out, NAME, {
        "duration_seconds_per_point": args.seconds,
        "tf_threads": args.tf_threads,
        "server_flags": server_flags,
        "models": source,
        "batching_parameters": BATCHING_PARAMETERS,
        "points": points,
        "summary": summary,
        "total_errors": total_errors,
    })
    line = "; ".join(
        f"{model}: overhead p50 {values['overhead_p50_ms']:.2f} ms at 1 client "
        f"(in-process {values['in_process_p50_ms']:.2f} ms; gRPC floor {values['grpc_floor_p50_ms']:.2f} ms; "
        f"a bare gRPC server's overhead {values['bare_server_overhead_p50_ms']:.2f} ms), "
        f"batching ×{values['batching_qps_ratio_at_max']:.2f} "
        f"QPS at {max(levels)}"
        for model, values in summary.items()
    )
    print(f"{NAME}: {line}; errors {total_errors}; {args.seconds:g} s per point; "
          f"{short_machine(result['machine'])} -> {args.out}")
    return 0 if total_errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
