"""The schedule: intervals, the 5-field cron parser, and a schedule that survives failures."""
import datetime as dt
import json

import pytest

from musicrec.pipeline.schedule import CronSchedule, parse_interval, run_on_schedule


def test_intervals_parse_with_units():
    assert parse_interval("24h") == 86400
    assert parse_interval("15m") == 900
    assert parse_interval("0.5s") == 0.5
    assert parse_interval("2d") == 172800
    assert parse_interval("30") == 30
    for bad in ("", "0h", "-1h", "5w", "h"):
        with pytest.raises(ValueError, match="interval"):
            parse_interval(bad)


def _at(text):
    return dt.datetime.fromisoformat(text)


def test_cron_expressions_find_the_next_matching_minute():
    assert CronSchedule.parse("0 3 * * *").next_after(_at("2026-11-24T03:00")) == _at("2026-11-25T03:00")
    assert CronSchedule.parse("*/15 * * * *").next_after(_at("2026-11-24T10:07")) == _at("2026-11-24T10:15")
    # 2026-11-24 is a Tuesday; "1-5" is Monday to Friday, 7 and 0 both Sunday.
    assert CronSchedule.parse("30 6 * * 1-5").next_after(_at("2026-11-27T07:00")) == _at("2026-11-30T06:30")
    assert CronSchedule.parse("0 0 * * 7").next_after(_at("2026-11-24T00:00")) == _at("2026-11-29T00:00")
    # Both day fields restricted: either matches, as in cron.
    assert CronSchedule.parse("0 0 1 * 3").next_after(_at("2026-11-24T00:00")) == _at("2026-11-25T00:00")
    assert CronSchedule.parse("0 12 29 2 *").next_after(_at("2026-03-01T00:00")) == _at("2028-02-29T12:00")
    for bad in ("* * * *", "60 * * * *", "a * * * *", "5-1 * * * *", "* * 0 * *"):
        with pytest.raises(ValueError, match="cron"):
            CronSchedule.parse(bad)


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0
        self.sleeps = []

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def test_interval_schedule_keeps_its_grid_logs_each_run_and_survives_a_failure(tmp_path):
    clock = FakeClock()
    outcomes = iter([None, RuntimeError("disk full"), None])

    def run_once():
        clock.now += 10  # each run takes 10 s
        outcome = next(outcomes)
        if outcome:
            raise outcome
        return "ok"

    log_path = tmp_path / "schedule.jsonl"
    runs = run_on_schedule(run_once, every="1m", max_runs=3, log_path=str(log_path),
                           sleep=clock.sleep, clock=clock.time)
    assert [r.ok for r in runs] == [True, False, True]
    assert runs[1].error == "RuntimeError: disk full"
    assert clock.sleeps == [50.0, 50.0]  # runs start on a 60 s grid
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [line["ok"] for line in lines] == [True, False, True] and lines[0]["seconds"] == 10


def test_cron_schedule_waits_for_the_matching_minute():
    clock = FakeClock()
    clock.now = _at("2026-11-24T02:59:30+00:00").timestamp()
    starts = []
    run_on_schedule(lambda: starts.append(clock.now), cron="0 3 * * *", max_runs=2,
                    sleep=clock.sleep, clock=clock.time)
    assert [dt.datetime.fromtimestamp(s, dt.timezone.utc).isoformat() for s in starts] == [
        "2026-11-24T03:00:00+00:00", "2026-11-25T03:00:00+00:00"]
    with pytest.raises(ValueError, match="exactly one"):
        run_on_schedule(lambda: None, every="1h", cron="* * * * *", max_runs=1)
