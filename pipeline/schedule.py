"""Runs the pipeline repeatedly in the foreground: every interval, or on a cron expression.

``musicrec schedule --every 24h`` or ``--cron "0 3 * * *"`` calls
:func:`run_on_schedule`. Each run is logged (start, duration, outcome) and
appended as one JSON line to a log file; a failed run is logged with its
error and the schedule carries on. For unattended use, ``pipeline/deploy/``
has a crontab line, a systemd timer, a Kubernetes CronJob and an Airflow DAG
that call ``musicrec run`` instead (one run per trigger).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import re
import time
import traceback
from typing import Any, Callable, Optional

from musicrec.atomic import write_text_atomic

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"1d"``, ``"0.5s"`` or plain seconds → seconds (> 0)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"interval {text!r}: expected a positive number with an optional unit "
                         "s, m, h or d (e.g. 24h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


# (name, lowest, highest) of the five cron fields.
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if not match:
            raise ValueError(f"cron {name} field {text!r}: expected *, N, N-M, lists and /step")
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            start, stop = low, high
        elif "-" in span:
            start, stop = (int(v) for v in span.split("-"))
        else:
            start = stop = int(span)
            if match.group(2):  # "N/step" means N through the top of the range
                stop = high
        if not low <= start <= stop <= high or step < 1:
            raise ValueError(f"cron {name} field {text!r}: values must be in {low}-{high}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    """A standard 5-field cron expression: ``minute hour day-of-month month day-of-week``.

    Supports ``*``, numbers, ranges ``a-b``, lists ``a,b`` and steps ``*/n``
    or ``a-b/n``; day of week 0-7 with 0 and 7 both Sunday. As in cron, when
    both day fields are restricted a day matches either. Times are the
    ``datetime`` values given (use UTC or local time consistently).
    """

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> "CronSchedule":
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(f"cron expression {expression!r}: expected 5 fields "
                             "(minute hour day-of-month month day-of-week)")
        fields = [_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
        weekdays = frozenset(d % 7 for d in fields[4])  # cron: 0 and 7 are Sunday
        return cls(expression, fields[0], fields[1], fields[2], fields[3], weekdays,
                   parts[2] != "*", parts[4] != "*")

    def _day_matches(self, day: dt.datetime) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``moment``."""
        candidate = moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = candidate + dt.timedelta(days=366 * 5)
        while candidate < limit:
            if not self._day_matches(candidate):
                candidate = (candidate + dt.timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + dt.timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
            else:
                return candidate
        raise ValueError(f"cron expression {self.expression!r} never matches")


@dataclasses.dataclass
class ScheduledRun:
    """One run of the schedule: when, how long (s), and its outcome."""

    number: int
    started: float
    seconds: float
    ok: bool
    result: Any = None
    error: Optional[str] = None


def run_on_schedule(run_once: Callable[[], Any], *, every: str | float | None = None,
                    cron: str | None = None, max_runs: int | None = None,
                    log_path: str | None = None,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.time) -> list[ScheduledRun]:
    """Calls ``run_once()`` at each scheduled time until ``max_runs`` runs (forever if ``None``).

    Args:
        run_once: one pipeline run; its return value is kept, an exception is
            logged with its traceback and the schedule continues.
        every: interval (``"24h"`` or seconds). Runs start on a fixed grid
            from the first run; a run that overruns the interval is followed
            at once by the next.
        cron: 5-field cron expression (UTC), instead of ``every``. The first
            run waits for the first matching minute.
        max_runs: stop after this many runs (for tests and one-off catch-ups).
        log_path: append one JSON line per run (started, seconds, ok, error).
        sleep, clock: injectable for tests.

    Returns:
        the runs made, when ``max_runs`` ends the schedule.
    """
    if (every is None) == (cron is None):
        raise ValueError("give exactly one of every= and cron=")
    interval = parse_interval(every) if isinstance(every, str) else every
    if interval is not None and interval <= 0:
        raise ValueError("every must be positive")
    schedule = CronSchedule.parse(cron) if cron else None
    history: list[ScheduledRun] = []
    next_start = clock()
    if schedule:
        next_start = schedule.next_after(dt.datetime.fromtimestamp(clock(), dt.timezone.utc)).timestamp()
    number = 0
    while max_runs is None or number < max_runs:
        wait = next_start - clock()
        if wait > 0:
            log.info("schedule: next run at %s (in %.0f s)",
                     dt.datetime.fromtimestamp(next_start, dt.timezone.utc).isoformat(), wait)
            sleep(wait)
        number += 1
        started = clock()
        log.info("schedule: run %d starting", number)
        try:
            outcome = ScheduledRun(number, started, 0.0, True, result=run_once())
        except Exception as exc:  # noqa: BLE001 - a failed run must not end the schedule
            log.error("schedule: run %d failed: %s\n%s", number, exc, traceback.format_exc())
            outcome = ScheduledRun(number, started, 0.0, False, error=f"{type(exc).__name__}: {exc}")
        outcome.seconds = round(clock() - started, 3)
        log.info("schedule: run %d %s in %.1f s", number, "finished" if outcome.ok else "FAILED",
                 outcome.seconds)
        history.append(outcome)
        if log_path:
            _append_line(log_path, {"run": number, "started": started, "seconds": outcome.seconds,
                                    "ok": outcome.ok, "error": outcome.error})
        if schedule:
            next_start = schedule.next_after(dt.datetime.fromtimestamp(clock(), dt.timezone.utc)).timestamp()
        else:
            next_start += interval
            if next_start < clock():  # overran: start now, keep the grid from here
                next_start = clock()
    return history


def _append_line(path: str, entry: dict[str, Any]) -> None:
    """Appends a JSON line; rewritten atomically so a crash never leaves half a line."""
    try:
        with open(path, encoding="utf-8") as handle:
            existing = handle.read()
    except FileNotFoundError:
        existing = ""
    write_text_atomic(path, existing + json.dumps(entry, sort_keys=True) + "\n")
