"""Prometheus metrics of the local server, in the text exposition format 0.0.4.

Served at the path a ``--monitoring_config_file`` enables (TF Serving's
``/monitoring/prometheus/metrics``) on the REST port. Metric names follow
``tensorflow_model_server`` where it has one:

- ``:tensorflow:serving:request_count{model_name,status}``: requests by final
  status (``OK``, ``NOT_FOUND``, ...), counter;
- ``:tensorflow:serving:request_latency{model_name,API,entrypoint}``:
  histogram in microseconds of the requests that succeeded, as TF Serving
  records it (``prediction_service_impl.cc``, ``http_server.cc``):
  ``entrypoint`` is ``GRPC`` (API ``Predict``, ``Classify``, ``Regress``) or
  ``REST`` (API the URL's method, ``predict``, ``classify`` or ``regress``, and
  empty for status and metadata GETs);
- ``:tensorflow:serving:request_error_count{model_name,API,entrypoint,status}``:
  failed requests, counter (ours: TF Serving folds errors into request_count);
- ``:tensorflow:serving:model_version_loaded{model_name,version}``: 1 for each
  AVAILABLE version, gauge (ours).

Dependency-free on purpose: a dozen lines of formatting beat a new package.
"""
from __future__ import annotations

import bisect
import threading
from typing import Callable, Mapping

import grpc

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
REQUEST_ERRORS = ":tensorflow:serving:request_error_count"
VERSION_LOADED = ":tensorflow:serving:model_version_loaded"
# Microseconds: 50 µs .. ~100 s, doubling, like TF Serving's exponential buckets.
LATENCY_BUCKETS_MICROS = tuple(50.0 * 2**power for power in range(22))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in pairs.items()) + "}"


class _Histogram:
    __slots__ = ("bucket_counts", "count", "total")

    def __init__(self) -> None:
        self.bucket_counts = [0] * len(LATENCY_BUCKETS_MICROS)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_MICROS, value)
        if index < len(self.bucket_counts):
            self.bucket_counts[index] += 1
        self.count += 1
        self.total += value


class ServingMetrics:
    """Request counters and latency histograms, plus loaded versions at scrape time.

    Parameters
    ----------
    loaded_versions : callable
        ``() -> {model_name: [version, ...]}`` of AVAILABLE versions, read on
        every scrape (``ModelRegistry.available_versions``).
    """

    def __init__(self, loaded_versions: Callable[[], Mapping[str, list[int]]]) -> None:
        self._loaded_versions = loaded_versions
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self._errors: dict[tuple[str, str, str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Histogram] = {}

    def record(self, model_name: str, api: str, entrypoint: str, status: grpc.StatusCode,
               latency_seconds: float) -> None:
        """Count one finished request; time it (seconds) if it succeeded."""
        status_name = status.name
        with self._lock:
            count_key = (model_name, status_name)
            self._counts[count_key] = self._counts.get(count_key, 0) + 1
            if status != grpc.StatusCode.OK:
                error_key = (model_name, api, entrypoint, status_name)
                self._errors[error_key] = self._errors.get(error_key, 0) + 1
                return
            latency_key = (model_name, api, entrypoint)
            histogram = self._latency.get(latency_key)
            if histogram is None:
                histogram = self._latency[latency_key] = _Histogram()
            histogram.observe(latency_seconds * 1e6)

    def render(self) -> str:
        """All metrics in the Prometheus text format."""
        lines: list[str] = []
        with self._lock:
            lines += [f"# TYPE {REQUEST_COUNT} counter"]
            for (model, status), value in sorted(self._counts.items()):
                lines.append(f"{REQUEST_COUNT}{_labels({'model_name': model, 'status': status})} {value}")
            lines += [f"# TYPE {REQUEST_ERRORS} counter"]
            for (model, api, entrypoint, status), value in sorted(self._errors.items()):
                labels = _labels({"model_name": model, "API": api, "entrypoint": entrypoint, "status": status})
                lines.append(f"{REQUEST_ERRORS}{labels} {value}")
            lines += [f"# TYPE {REQUEST_LATENCY} histogram"]
            for (model, api, entrypoint), histogram in sorted(self._latency.items()):
                base = {"model_name": model, "API": api, "entrypoint": entrypoint}
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS_MICROS, histogram.bucket_counts):
                    cumulative += count
                    lines.append(f"{REQUEST_LATENCY}_bucket{_labels({**base, 'le': f'{bound:g}'})} {cumulative}")
                lines.append(f"{REQUEST_LATENCY}_bucket{_labels({**base, 'le': '+Inf'})} {histogram.count}")
                lines.append(f"{REQUEST_LATENCY}_sum{_labels(base)} {histogram.total:.1f}")
                lines.append(f"{REQUEST_LATENCY}_count{_labels(base)} {histogram.count}")
        lines += [f"# TYPE {VERSION_LOADED} gauge"]
        for model, versions in sorted(self._loaded_versions().items()):
            for version in versions:
                lines.append(f"{VERSION_LOADED}{_labels({'model_name': model, 'version': str(version)})} 1")
        return "\n".join(lines) + "\n"
