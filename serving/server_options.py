"""The batching and monitoring config files of ``tensorflow_model_server``.

The ``tensorflow-serving-api`` wheel ships neither ``BatchingParameters``
(``session_bundle_config.proto``) nor ``MonitoringConfig``
(``monitoring_config.proto``), so this module declares the two messages with
TF Serving's field names and numbers and parses the same text protos the
real binary reads::

    # --batching_parameters_file
    max_batch_size { value: 32 }
    batch_timeout_micros { value: 1000 }
    num_batch_threads { value: 2 }
    max_enqueued_batches { value: 100 }

    # --monitoring_config_file
    prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf import message_factory

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
DEFAULT_REST_TIMEOUT_MS = 30000  # --rest_api_timeout_in_ms


def threads_per_cpu_default() -> int:
    """TF Serving's default for ``--grpc_max_threads`` and ``--rest_api_num_threads``:
    4 × the CPUs this process may run on (``model_servers/server.h``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return 4 * cpus


@dataclass(frozen=True)
class ModelLoadOptions:
    """How versions are loaded; each field is the TF Serving flag of that name, with its default.

    Attributes
    ----------
    max_num_load_retries : int
        Tries after a failed load before giving up on the version.
    load_retry_interval_micros : int
        Wait between tries, in microseconds (a minute); negative: no wait.
    enable_model_warmup : bool
        Replay ``assets.extra/tf_serving_warmup_requests`` before a version is AVAILABLE.
    enable_signature_method_name_check : bool
        Classify/Regress require the signature's ``method_name``, not only its shape.
    allow_version_labels_for_unavailable_models : bool
        A config may label versions not loaded yet (labels in a startup config need it).
    """

    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    enable_model_warmup: bool = True
    enable_signature_method_name_check: bool = False
    allow_version_labels_for_unavailable_models: bool = False


def parse_grpc_channel_arguments(text: str) -> list[tuple[str, Any]]:
    """``--grpc_channel_arguments``: ``key=value,key=value`` → gRPC server options.

    A value that parses as a 32-bit integer is passed as one, anything else as
    a string, as ``model_servers/server.cc`` does.

    Raises
    ------
    ValueError
        For an entry without ``=``.
    """
    arguments = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = entry.partition("=")
        if not separator or not key:
            raise ValueError(f"--grpc_channel_arguments: {entry!r} is not key=value")
        try:
            number = int(value)
        except ValueError:
            arguments.append((key, value))
        else:
            arguments.append((key, number if -(2**31) <= number < 2**31 else value))
    return arguments
_FILE_NAME = "musicrec/serving/tf_serving_server_options.proto"
_PACKAGE = "musicrec.serving.tfs"  # our own package: never collides with a real TF Serving build


def _declare_messages() -> tuple[type, type]:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package=_PACKAGE, syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    field = descriptor_pb2.FieldDescriptorProto
    wrapped = {"Int64": ".google.protobuf.Int64Value", "Bool": ".google.protobuf.BoolValue",
               "String": ".google.protobuf.StringValue"}
    batching = file_proto.message_type.add(name="BatchingParameters")
    for number, (name, kind) in enumerate(
        [("max_batch_size", "Int64"), ("batch_timeout_micros", "Int64"),
         ("thread_pool_name", "String"), ("num_batch_threads", "Int64"),
         ("max_enqueued_batches", "Int64")], start=1):
        batching.field.add(name=name, number=number, type=field.TYPE_MESSAGE,
                           type_name=wrapped[kind], label=field.LABEL_OPTIONAL)
    batching.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64,
                       label=field.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=field.TYPE_BOOL,
                       label=field.LABEL_OPTIONAL)
    batching.field.add(name="enable_large_batch_splitting", number=8, type=field.TYPE_MESSAGE,
                       type_name=wrapped["Bool"], label=field.LABEL_OPTIONAL)
    batching.field.add(name="max_execution_batch_size", number=9, type=field.TYPE_MESSAGE,
                       type_name=wrapped["Int64"], label=field.LABEL_OPTIONAL)
    prometheus = file_proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = file_proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=field.TYPE_MESSAGE,
                         type_name=f".{_PACKAGE}.PrometheusConfig", label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(file_proto.SerializeToString())
    classes = message_factory.GetMessages([file_proto], pool=pool)
    return classes[f"{_PACKAGE}.BatchingParameters"], classes[f"{_PACKAGE}.MonitoringConfig"]


BatchingParametersProto, MonitoringConfigProto = _declare_messages()


@dataclass(frozen=True)
class BatchingOptions:
    """Server-side batching settings (TF Serving's defaults where the file is silent).

    Attributes
    ----------
    max_batch_size : int
        Most rows (dim 0) in one batched call.
    batch_timeout_micros : int
        Longest a request waits for others to join its batch, in microseconds.
    num_batch_threads : int
        Batches that may run at the same time.
    max_enqueued_batches : int
        Queue bound, in batches of ``max_batch_size`` rows; beyond it requests
        get UNAVAILABLE.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    num_batch_threads: int = 4
    max_enqueued_batches: int = 100


def _read_text(path: str | os.PathLike, message, what: str):
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ValueError(f"{os.fspath(path)}: not a {what} text proto: {error}") from error
    return message


def read_batching_parameters(path: str | os.PathLike) -> BatchingOptions:
    """``BatchingOptions`` from a ``--batching_parameters_file``.

    Raises
    ------
    ValueError
        On a parse error or a non-positive size, thread count or queue bound.
    """
    proto = _read_text(path, BatchingParametersProto(), "BatchingParameters")
    defaults = BatchingOptions()
    values = {
        name: (getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name))
        for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads",
                     "max_enqueued_batches")
    }
    for name, value in values.items():
        if value < (0 if name == "batch_timeout_micros" else 1):
            raise ValueError(f"{os.fspath(path)}: {name} must be positive, got {value}")
    return BatchingOptions(**values)


def read_monitoring_config(path: str | os.PathLike) -> str | None:
    """The Prometheus metrics path a ``--monitoring_config_file`` enables, or None.

    An enabled config without a path uses TF Serving's default,
    ``/monitoring/prometheus/metrics``.
    """
    proto = _read_text(path, MonitoringConfigProto(), "MonitoringConfig")
    if not proto.prometheus_config.enable:
        return None
    path_value = proto.prometheus_config.path or DEFAULT_METRICS_PATH
    if not path_value.startswith("/"):
        raise ValueError(f"{os.fspath(path)}: the metrics path must start with '/': {path_value!r}")
    return path_value
