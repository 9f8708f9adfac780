"""Retries of a model version that failed to load, as TF Serving schedules them.

TF Serving retries a failed load ``--max_num_load_retries`` times (5 by
default), ``--load_retry_interval_micros`` apart (one minute by default; a
negative interval does not wait), then gives up: the version stays at END
with the last error until it is no longer wanted (``core/loader_harness.cc``,
``util/retrier.cc``). A retry reads the version folder afresh, so a fixed
copy renamed over a broken version is loaded at the next retry, without a
restart. While retries remain the version reports LOADING, as the harness
stays in its loading state between tries.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_NUM_LOAD_RETRIES = 5
DEFAULT_LOAD_RETRY_INTERVAL_SECONDS = 60.0

VersionKey = tuple[str, int]  # (model name, version)


@dataclass(frozen=True)
class FailedLoad:
    """A version whose load failed: the last error and when it is tried again.

    ``retry_at`` is a ``time.monotonic()`` instant, None once the retries are
    exhausted.
    """

    error: Exception
    failures: int
    retry_at: float | None


class LoadRetries:
    """Failed loads by (model, version), and when each is due for another try.

    Parameters
    ----------
    max_retries : int
        Tries after the first failure (``--max_num_load_retries``); 0 tries once.
    interval_seconds : float
        Wait between tries (``--load_retry_interval_micros`` / 1e6); negative
        means no wait.
    clock : callable
        Monotonic seconds; replaceable in tests.
    """

    def __init__(self, max_retries: int = DEFAULT_MAX_NUM_LOAD_RETRIES,
                 interval_seconds: float = DEFAULT_LOAD_RETRY_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.max_retries = max_retries
        self.interval_seconds = max(0.0, interval_seconds)
        self._clock = clock
        self._failed: dict[VersionKey, FailedLoad] = {}
        self._lock = threading.Lock()

    def record_failure(self, key: VersionKey, error: Exception) -> FailedLoad:
        """Count a failed try of ``key``; schedule the next one unless retries are exhausted."""
        with self._lock:
            failures = self._failed[key].failures + 1 if key in self._failed else 1
            retry_at = self._clock() + self.interval_seconds if failures <= self.max_retries else None
            failed = self._failed[key] = FailedLoad(error, failures, retry_at)
        return failed

    def record_success(self, key: VersionKey) -> None:
        with self._lock:
            self._failed.pop(key, None)

    def get(self, key: VersionKey) -> FailedLoad | None:
        with self._lock:
            return self._failed.get(key)

    def should_try(self, key: VersionKey) -> bool:
        """True for a version never tried, or whose retry is due now."""
        with self._lock:
            failed = self._failed.get(key)
        return failed is None or (failed.retry_at is not None and failed.retry_at <= self._clock())

    def forget(self, name: str, keep: Iterable[int] = ()) -> None:
        """Drop ``name``'s failures except for the ``keep`` versions (no longer wanted: a
        later reappearance starts afresh, as TF Serving stops managing them)."""
        keep = set(keep)
        with self._lock:
            for key in [key for key in self._failed if key[0] == name and key[1] not in keep]:
                del self._failed[key]

    def next_retry_at(self) -> float | None:
        """The earliest scheduled retry, or None."""
        with self._lock:
            due = [failed.retry_at for failed in self._failed.values() if failed.retry_at is not None]
        return min(due) if due else None

    def models_due(self) -> list[str]:
        """Models with a retry due now, sorted."""
        now = self._clock()
        with self._lock:
            return sorted({key[0] for key, failed in self._failed.items()
                           if failed.retry_at is not None and failed.retry_at <= now})

    def seconds_until_retry(self, keys: Iterable[VersionKey]) -> float | None:
        """Seconds until the first scheduled retry among ``keys`` (0 if due); None if none is scheduled."""
        with self._lock:
            due = [self._failed[key].retry_at for key in keys
                   if key in self._failed and self._failed[key].retry_at is not None]
        return max(0.0, min(due) - self._clock()) if due else None


def poll_and_retry(stop: threading.Event, poll_wait_seconds: float, retries: LoadRetries,
                   poll: Callable[[], None], retry: Callable[[str], None]) -> None:
    """The poller thread's loop: ``poll()`` every ``poll_wait_seconds`` (never if 0 or less),
    ``retry(model)`` when a model's retry is due, until ``stop`` is set.

    Without polling it still looks every second for retries a reload scheduled.
    """
    polling = poll_wait_seconds > 0
    next_poll = time.monotonic() + poll_wait_seconds if polling else math.inf
    while True:
        retry_at = retries.next_retry_at()
        wake_at = min(next_poll, retry_at if retry_at is not None else math.inf,
                      math.inf if polling else time.monotonic() + 1.0)
        if stop.wait(max(0.0, wake_at - time.monotonic())):
            return
        try:
            if time.monotonic() >= next_poll:
                poll()
                next_poll = time.monotonic() + poll_wait_seconds
            else:
                for name in retries.models_due():
                    retry(name)
        except Exception:  # the poller must outlive any one bad scan
            LOGGER.exception("model version poll failed")
