"""What the gRPC and REST front ends share: model lookup, batching, metrics.

Both front ends call ``ServingCore`` so a request gets the same answer, the
same status code and the same metrics whichever protocol carried it.
"""
from __future__ import annotations

import time

import grpc
import numpy as np
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from musicrec.serving.batching import BatchScheduler
from musicrec.serving.errors import ServingError
from musicrec.serving.metrics import ServingMetrics
from musicrec.serving.model_registry import ModelRegistry
from musicrec.serving.servables import PreparedCall, Servable
from musicrec.serving.server_options import BatchingOptions

SIGNATURE_DEF_FIELD = "signature_def"  # the one GetModelMetadata field TF Serving knows


class RequestOutcome:
    """Times one request and counts its outcome when it ends (a context manager).

    A front end may set ``model_name`` to the name it resolved. A class rather
    than a ``contextlib`` generator: it runs on every request, and costs a
    third as much.
    """

    __slots__ = ("model_name", "_metrics", "_api", "_entrypoint", "_start")

    def __init__(self, metrics: ServingMetrics, model_name: str, api: str, entrypoint: str) -> None:
        self.model_name = model_name
        self._metrics, self._api, self._entrypoint = metrics, api, entrypoint
        self._start = 0.0

    def __enter__(self) -> "RequestOutcome":
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, error, traceback) -> None:
        if exc_type is None:
            status = grpc.StatusCode.OK
        elif isinstance(error, ServingError):
            status = error.code
        else:
            status = grpc.StatusCode.INTERNAL
        self._metrics.record(self.model_name, self._api, self._entrypoint, status,
                             time.perf_counter() - self._start)


class ServingCore:
    """Registry, optional batch scheduler and metrics, used by every front end.

    Parameters
    ----------
    registry : ModelRegistry
        Served model versions.
    max_decoded_bytes : int
        Upper bound on one decoded input tensor, in bytes.
    batching : BatchingOptions or None
        Server-side batching settings; None runs every request on its own.
    check_method_name : bool
        ``--enable_signature_method_name_check``: Classify and Regress then
        require the signature's ``method_name`` (see ``example_inference``).
    """

    def __init__(self, registry: ModelRegistry, max_decoded_bytes: int,
                 batching: BatchingOptions | None = None, check_method_name: bool = False) -> None:
        self.registry = registry
        self.max_decoded_bytes = max_decoded_bytes
        self.batcher = BatchScheduler(batching) if batching is not None else None
        self.metrics = ServingMetrics(registry.available_versions)
        self.check_method_name = check_method_name

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a model spec asks for (see ``ModelRegistry.get``)."""
        return self.registry.get(name, version=version, label=label)

    def servable_for_spec(self, model_spec) -> Servable:
        """The servable a ``tensorflow.serving.ModelSpec`` asks for (latest, version or label)."""
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            return self.servable(model_spec.name, label=model_spec.version_label)
        return self.servable(model_spec.name, model_spec.version.value if choice == "version" else None)

    def run(self, servable: Servable, call: PreparedCall, deadline: float | None = None) -> dict[str, np.ndarray]:
        """Execute a checked call, batched with concurrent ones when batching is on.

        Returns only the requested outputs (``call.output_aliases``).

        Parameters
        ----------
        deadline : float or None
            ``time.monotonic()`` instant by which the answer is due (the REST
            API's ``--rest_api_timeout_in_ms``). A running TensorFlow call cannot
            be interrupted, so a call that ends past it is answered
            DEADLINE_EXCEEDED when it ends.
        """
        if self.batcher is None:
            outputs = servable.execute(call.signature_name, call.arrays)
        else:
            key = (servable.name, servable.version, call.signature_name, id(servable))
            outputs = self.batcher.run(
                key, lambda arrays: servable.execute(call.signature_name, arrays), call.arrays
            )
        if deadline is not None and time.monotonic() > deadline:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded: the model call ran "
                                                                  "past the request's timeout")
        return {alias: outputs[alias] for alias in call.output_aliases}

    def example_runner(self, servable: Servable, deadline: float | None = None):
        """``run(signature_name, arrays)`` for ``example_inference``: checked, batched like Predict."""
        def run(signature_name: str, arrays):
            return self.run(servable, servable.prepare_arrays(signature_name, arrays), deadline)
        return run

    def observe(self, model_name: str, api: str, entrypoint: str) -> RequestOutcome:
        """``with core.observe(...) as outcome:`` times a request and counts its outcome
        (the ServingError's code, or OK).

        Any other exception counts as INTERNAL and propagates unchanged.
        """
        return RequestOutcome(self.metrics, model_name, api, entrypoint)

    def stop(self) -> None:
        """Stop the batch scheduler (queued batches still finish)."""
        if self.batcher is not None:
            self.batcher.stop()


def model_status_response(statuses) -> get_model_status_pb2.GetModelStatusResponse:
    """``GetModelStatusResponse`` for ``ModelRegistry.status`` entries (gRPC and REST)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        entry.status.error_code = status.error_code.value[0]
        entry.status.error_message = status.error_message
    return response


def model_metadata_response(servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """``GetModelMetadataResponse`` carrying the servable's ``signature_def`` map."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
    return response
