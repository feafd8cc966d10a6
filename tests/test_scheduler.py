"""daemon.scheduler: cron fire times (time zones, DST), catch-up and coalescing on the real APScheduler."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from apscheduler.triggers.base import BaseTrigger

from daemon.config.summaries import SummarySettings
from daemon.config.cron import CronSchedule, first_missed, next_fires, previous_fire
from daemon.summaries.runner import Fire, LastRun, RunLog
from daemon.summaries.scheduler import SummaryScheduler, cron_trigger

UTC = timezone.utc


def utc(dts) -> list[str]:
    return [d.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for d in dts]


@pytest.mark.parametrize("cron, zone, after, expected", [
    ("0 20 * * *", "UTC", "2025-06-02 21:00", ["2025-06-03 20:00", "2025-06-04 20:00", "2025-06-05 20:00"]),
    # Weekdays as cron numbers them (1-5 is Monday to Friday; APScheduler 3 alone would read Tuesday to Saturday),
    # business hours in New York (EDT, UTC-4): Friday 17:45 local, then Monday morning.
    ("*/15 9-17 * * 1-5", "America/New_York", "2025-06-06 21:40",
     ["2025-06-06 21:45", "2025-06-09 13:00", "2025-06-09 13:15"]),
    ("0 9 * * 0", "UTC", "2025-06-02 00:00", ["2025-06-08 09:00", "2025-06-15 09:00"]),  # Sundays
    ("0 9 * * 7", "UTC", "2025-06-02 00:00", ["2025-06-08 09:00", "2025-06-15 09:00"]),
    ("0 9 * * */2", "UTC", "2025-06-02 00:00", ["2025-06-03 09:00", "2025-06-05 09:00", "2025-06-07 09:00",
                                                "2025-06-08 09:00"]),  # Sun, Tue, Thu, Sat
    ("0 9 * * mon-fri", "UTC", "2025-06-06 12:00", ["2025-06-09 09:00"]),
    ("0 0 1 * *", "Asia/Tokyo", "2025-06-02 00:00", ["2025-06-30 15:00", "2025-07-31 15:00", "2025-08-31 15:00"]),
    # New York springs forward on 2025-03-09: 20:00 local is 01:00 UTC before, 00:00 UTC after.
    ("0 20 * * *", "America/New_York", "2025-03-08 12:00", ["2025-03-09 01:00", "2025-03-10 00:00", "2025-03-11 00:00"]),
    # Berlin springs forward at 02:00 on 2025-03-30: 02:30 does not exist that day; the job runs at 03:30 CEST.
    ("30 2 * * *", "Europe/Berlin", "2025-03-28 12:00", ["2025-03-29 01:30", "2025-03-30 01:30", "2025-03-31 00:30"]),
    # Berlin falls back at 03:00 on 2025-10-26: 02:30 happens twice; a daily job runs once (the first), as cron does.
    ("30 2 * * *", "Europe/Berlin", "2025-10-25 12:00", ["2025-10-26 00:30", "2025-10-27 01:30", "2025-10-28 01:30"]),
    # ... while a job with a wildcard minute keeps its real-time rhythm through the repeated hour.
    ("*/30 1-3 * * *", "Europe/Berlin", "2025-10-25 23:00",
     ["2025-10-25 23:00", "2025-10-25 23:30", "2025-10-26 00:00", "2025-10-26 00:30", "2025-10-26 01:00",
      "2025-10-26 01:30", "2025-10-26 02:00", "2025-10-26 02:30"]),
])
def test_next_fire_times(cron, zone, after, expected):
    trigger = cron_trigger(SummarySettings(id="j", cron=cron, timezone=zone))
    start = datetime.strptime(after, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert utc(next_fires(trigger, start, len(expected))) == expected


@pytest.mark.parametrize("cron, message", [
    ("0 9 * * 8", "invalid cron '0 9 * * 8': weekday '8' is out of range: use 0-7 (0 and 7 are Sunday) or sun-sat"),
    ("0 9 1 * 1", ("cron '0 9 1 * 1' restricts both the day of the month and the weekday: cron runs when either"
                   " matches, this scheduler only when both do; use two jobs, or * for one of them")),
    ("0 9 * *", "cron '0 9 * *' must have five fields (minute hour day month weekday)"),
])
def test_cron_expressions_that_would_not_mean_what_cron_means_are_refused(cron, message):
    with pytest.raises(ValueError) as err:
        SummarySettings(id="j", cron=cron)
    assert err.value.errors()[0]["msg"] == f"Value error, {message}"


def test_previous_and_first_missed_fire():
    trigger = CronSchedule.from_crontab("0 20 * * *", timezone="UTC")
    at = datetime(2025, 6, 5, 12, 0, tzinfo=UTC)
    assert utc([previous_fire(trigger, at)]) == ["2025-06-04 20:00"]
    assert utc([previous_fire(trigger, datetime(2025, 6, 4, 20, 0, tzinfo=UTC))]) == ["2025-06-04 20:00"]
    assert utc([first_missed(trigger, datetime(2025, 6, 1, 20, 0, tzinfo=UTC), at)]) == ["2025-06-02 20:00"]
    assert first_missed(trigger, datetime(2025, 6, 4, 20, 0, tzinfo=UTC), at) is None
    hourly = CronSchedule.from_crontab("0 * * * *", timezone="UTC")
    assert utc([previous_fire(hourly, at)]) == ["2025-06-05 12:00"]


# --------------------------------------------------------------------------- on the real APScheduler


class Submitted:
    """The scheduler's `submit`: records each fire and wakes the test."""

    def __init__(self, accept: bool = True):
        self.fires: list[Fire] = []
        self.event = threading.Event()
        self.accept = accept

    def __call__(self, job: SummarySettings, fire: Fire) -> bool:
        self.fires.append(fire)
        self.event.set()
        return self.accept


def daily_job_due_minutes_ago(minutes: int, **kw) -> tuple[SummarySettings, datetime]:
    """A daily job whose time today was `minutes` ago (UTC), and that time."""
    due = (datetime.now(UTC) - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    return SummarySettings(id="daily", cron=f"{due.minute} {due.hour} * * *", timezone="UTC", **kw), due


@pytest.fixture
def runlog(tmp_path):
    with RunLog(tmp_path / "history.sqlite") as log:
        yield log


def test_runs_missed_while_stopped_are_coalesced_into_one_catch_up(runlog):
    job, due = daily_job_due_minutes_ago(5)
    three_days_ago = (due - timedelta(days=3)).timestamp()
    runlog.record(LastRun("daily", three_days_ago, three_days_ago - 86400, three_days_ago, three_days_ago))
    submitted = Submitted()
    scheduler = SummaryScheduler([job], runlog)
    scheduler.start(submitted)
    try:
        assert submitted.event.wait(10), "the missed runs were not caught up"
    finally:
        scheduler.shutdown()  # joins APScheduler's threads: every fire it would make has been made
    # Three missed days, one run: for the latest due time, its period reaching back to the last run.
    assert submitted.fires == [Fire("daily", due.timestamp(), (due - timedelta(days=1)).timestamp())]


def test_a_catch_up_later_than_the_grace_is_skipped_with_a_warning(runlog, caplog):
    job, due = daily_job_due_minutes_ago(5, misfire_grace="1m")
    yesterday = (due - timedelta(days=1)).timestamp()
    runlog.record(LastRun("daily", yesterday, yesterday - 86400, yesterday, yesterday))
    submitted = Submitted()
    scheduler = SummaryScheduler([job], runlog)
    with caplog.at_level(logging.WARNING, logger="daemon.summaries.scheduler"):
        scheduler.start(submitted)
        try:
            deadline = time.monotonic() + 10
            while "skipped" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
            assert scheduler.next_fire_times() == {"daily": due + timedelta(days=1)}
        finally:
            scheduler.shutdown()
    assert submitted.fires == []
    assert [r.getMessage() for r in caplog.records if r.name == "daemon.summaries.scheduler"] == [
        (f"summary daily: the run due at {due.isoformat()} started more than misfire_grace (1m) late and is skipped;"
         " a since_last period is covered by the next run")]


def test_after_a_restart_a_run_that_already_happened_is_not_repeated(runlog):
    job, due = daily_job_due_minutes_ago(5)
    runlog.record(LastRun("daily", due.timestamp(), due.timestamp() - 86400, due.timestamp(), due.timestamp() + 2))
    submitted = Submitted()
    scheduler = SummaryScheduler([job], runlog)
    scheduler.start(submitted)
    try:
        assert scheduler.next_fire_times() == {"daily": due + timedelta(days=1)}
    finally:
        scheduler.shutdown()
    assert submitted.fires == []


class Shifted(BaseTrigger):
    """A real trigger on a clock running `offset` ahead: a test's next minute boundary comes in a second."""

    def __init__(self, inner: BaseTrigger, offset: timedelta):
        self.inner, self.offset = inner, offset

    @classmethod
    def due_in(cls, inner: BaseTrigger, seconds: float) -> Shifted:
        now = datetime.now(UTC)
        boundary = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return cls(inner, boundary - now - timedelta(seconds=seconds))

    def get_next_fire_time(self, previous_fire_time, now):
        previous = previous_fire_time + self.offset if previous_fire_time else None
        t = self.inner.get_next_fire_time(previous, now + self.offset)
        return None if t is None else t - self.offset


def test_a_cron_fire_queues_its_run_and_a_full_queue_is_reported(runlog, caplog):
    job = SummarySettings(id="minutely", cron="* * * * *", timezone="UTC")
    triggers = []

    def trigger_for(j: SummarySettings) -> BaseTrigger:
        triggers.append(Shifted.due_in(cron_trigger(j), 0.5))
        return triggers[-1]

    submitted = Submitted(accept=False)
    scheduler = SummaryScheduler([job], runlog, trigger_for=trigger_for)
    with caplog.at_level(logging.WARNING, logger="daemon.summaries.scheduler"):
        scheduler.start(submitted)
        try:
            [expected] = next_fires(triggers[0], datetime.now(UTC), 1)
            assert submitted.event.wait(10), "the cron trigger did not fire"
        finally:
            scheduler.shutdown()
    assert submitted.fires == [Fire("minutely", expected.timestamp(), expected.timestamp() - 60)]
    local = expected.astimezone().isoformat(timespec="seconds")
    assert [r.getMessage() for r in caplog.records if r.name == "daemon.summaries.scheduler"] == [
        f"summary minutely: the NPU queue already holds too many summaries; the run for {local} is dropped"]
