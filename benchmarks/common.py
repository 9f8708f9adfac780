"""Helpers every benchmark shares: timing, machine description, result files.

Convention: a benchmark measures the code under test and a plain reference
implementation of the same work in the same process, on the same data, and
reports both figures and their ratio. The ratio is what compares across
machines; absolute figures only compare on the same machine.
"""
from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import time
from typing import Any, Iterator, Sequence

from musicrec.components.base import write_json_atomic

DEFAULT_PACKAGES = ("musicrec", "numpy", "tensorflow", "apache-beam", "librosa", "soundfile", "soxr", "keras")


class Stopwatch:
    """Wall-clock seconds of a ``with`` block, read from ``.seconds`` after it ends."""

    seconds: float = 0.0


@contextlib.contextmanager
def timed() -> Iterator[Stopwatch]:
    """Times a block with ``time.perf_counter``: ``with timed() as t: ...; t.seconds``."""
    watch = Stopwatch()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - start


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def package_versions(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (``None`` when not installed)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_info(packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """Where a figure was measured: CPU, cores, memory, load, OS, Python, package versions."""
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = None
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "memory_gib": _memory_gib(),
        "load_average_1_5_15": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(packages),
    }


def short_machine(info: dict[str, Any]) -> str:
    """One-line machine description for tables: ``"<cpu>, <n> cores"``."""
    return f"{info['cpu']}, {info['usable_cores']} cores"


def write_result(path: str, name: str, payload: dict[str, Any],
                 packages: Sequence[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """Writes a benchmark result as JSON (atomically) and returns what was written.

    The file holds ``benchmark`` (the name), ``date`` (UTC, ISO 8601),
    ``machine`` (:func:`machine_info`) and the benchmark's own ``payload`` keys.
    """
    result = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(packages),
        **payload,
    }
    write_json_atomic(path, result)
    return result


def librosa_log_mel(waveform, params):
    """Plain librosa's log-mel ``[frames, n_mels]`` for ``features.AudioFeatureParams``: the reference
    the project's own front end (``features.log_mel``, a single-precision STFT) is measured against."""
    import librosa
    import numpy as np

    power = librosa.feature.melspectrogram(
        y=waveform, sr=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
        window="hann", center=False, power=2.0, n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax)
    return np.log(power + params.log_floor).T.astype(np.float32)
