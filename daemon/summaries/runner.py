"""Running a summary: the period a fire covers, the plan's model calls, and the
last run of each job kept in the history file (`RunLog`), so that after a
restart a `since_last` job starts where the previous run ended.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Callable, Generator, Sequence

from daemon.config.summaries import parse_period
from daemon.state.store import Store
from daemon.summaries.timeline import Period, Request, build_timeline
from daemon.times import iso, zone_of
from daemon.types import Summary, new_message_id

if TYPE_CHECKING:
    from daemon.config.summaries import SummarySettings
    from daemon.state.history import History

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- last runs


# The `summaries` component's tables in the history database (see history.migrate).
# Never pruned: a job's last run must outlive history retention.
SUMMARY_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE summary_runs (
            job TEXT PRIMARY KEY,
            fire REAL NOT NULL,                  -- the scheduled time the run was for
            period_start REAL NOT NULL, period_end REAL NOT NULL,
            ran REAL NOT NULL)""",
    ],
]


@dataclass(frozen=True)
class LastRun:
    job: str
    fire: float
    period_start: float
    period_end: float
    ran: float


class RunLog(Store):
    """The last finished run of each job, in the history file on its own connection. Thread-safe."""

    component, migrations, what = "summaries", SUMMARY_MIGRATIONS, "the summary run log"

    def last(self, job: str) -> LastRun | None:
        row = self._execute("SELECT job, fire, period_start, period_end, ran FROM summary_runs WHERE job = ?",
                            (job,)).fetchone()
        return LastRun(*row) if row else None

    def record(self, run: LastRun) -> None:
        self._execute("INSERT INTO summary_runs (job, fire, period_start, period_end, ran) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (job) DO UPDATE SET fire = excluded.fire, period_start = excluded.period_start, "
                      "period_end = excluded.period_end, ran = excluded.ran",
                      (run.job, run.fire, run.period_start, run.period_end, run.ran))

    def _execute(self, sql: str, params: tuple) -> sqlite3.Cursor:
        return self._run(lambda db: db.execute(sql, params), "use")


# --------------------------------------------------------------------------- running jobs


@dataclass(frozen=True)
class Fire:
    """One due run of a scheduled job."""

    job: str
    at: float  # the scheduled time (POSIX): the end of the period
    previous: float | None  # the schedule's time before it: a since_last job's start when it never ran


def period_for(job: SummarySettings, fire: Fire, last: LastRun | None, zone: tzinfo) -> Period:
    """A duration ends at the fire time; since_last starts where the last run ended (or one schedule step back)."""
    seconds = parse_period(job.period)
    if seconds is not None:
        return Period(fire.at - seconds, fire.at, zone)
    if last is not None:
        start = last.period_end
    else:
        start = fire.previous if fire.previous is not None else fire.at - 86400.0
    return Period(min(start, fire.at), fire.at, zone)


class Summarizer:
    """Summaries from history with the engine; `run` is the scheduled path, `summarize` the on-demand one."""

    def __init__(self, history: History, engine, runlog: RunLog | None, cameras: Sequence[str],
                 publish: Callable[[Summary, str | None], object] | None = None, clock: Callable[[], float] = time.time,
                 events=None):
        self.history, self.engine, self.runlog, self.cameras = history, engine, runlog, tuple(cameras)
        self.publish, self.clock = publish, clock
        self.events = events  # daemon.state.events.EventStore: event stories stand for their windows' descriptions

    def request(self, job: SummarySettings) -> Request:
        return Request(job.id, tuple(job.cameras or self.cameras), job.prompt, job.max_new_tokens)

    def plan(self, request: Request, period: Period):
        from daemon.summaries.plan import TokenBudget, plan_summary

        timeline = build_timeline(self.history, period, request.cameras, self.events)
        return plan_summary(timeline, request, TokenBudget(self.engine))

    def summarize(self, request: Request, period: Period, stop: threading.Event | None = None) -> Summary:
        """Plan and run the model calls (none for an empty period); records nothing."""
        return _drain(self.summarize_steps(request, period, stop))

    def summarize_steps(self, request: Request, period: Period, stop: threading.Event | None = None,
                        engine: Callable[[], object] | None = None) -> Generator[None, None, Summary]:
        """`summarize`, pausing after each model call; `engine()`: the engine for the next call (default ours)."""
        from daemon.summaries.plan import TokenBudget, engine_asker, run_steps

        plan = self.plan(request, period)
        calls: list[int] = []
        ask = engine_asker(engine or (lambda: self.engine), stop, on_step=lambda _q, tokens: calls.append(tokens))
        text = yield from run_steps(plan, ask, TokenBudget(self.engine))
        counts = {**plan.timeline.counts, "timeline": len(plan.timeline.entries), "model_calls": len(calls)}
        return Summary(request.job, period.start, period.end, text, self.clock(), counts, request.cameras)

    def run(self, job: SummarySettings, fire: Fire, stop: threading.Event | None = None) -> Summary | None:
        """Summarise the fire's period, record it and the run, publish it; None if this fire already ran."""
        return _drain(self.run_steps(job, fire, stop))

    def start(self, job: SummarySettings, fire: Fire, stop: threading.Event | None = None) -> SummaryRun:
        """`run` one model call at a time, each on the engine its `step` is given (the NPU that took it)."""
        return SummaryRun(lambda engine: self.run_steps(job, fire, stop, engine), self.engine)

    def run_steps(self, job: SummarySettings, fire: Fire, stop: threading.Event | None = None,
                  engine: Callable[[], object] | None = None) -> Generator[None, None, Summary | None]:
        """`run`, pausing after each model call; `engine()` as in `summarize_steps`."""
        last = self.runlog.last(job.id) if self.runlog else None
        if last is not None and last.fire >= fire.at:
            log.info("summary %s: the run for %s already happened; not repeating it", job.id, iso(fire.at, None, "seconds"))
            return None
        period = period_for(job, fire, last, zone_of(job.timezone))
        summary = yield from self.summarize_steps(self.request(job), period, stop, engine)
        message_id = new_message_id() if self.publish is not None else None
        row_id = self.history.record_summary(summary, message_id)  # a crash before queueing: the restart queues it
        if self.runlog:
            self.runlog.record(LastRun(job.id, fire.at, period.start, period.end, self.clock()))
        if self.publish is not None:
            self.publish(summary, message_id)
            self.history.mark_queued("summaries", row_id)
        log.info("summary %s (%s, %d model calls): %s", job.id, period.label(), summary.counts["model_calls"],
                 summary.text[:200])
        return summary


class SummaryRun:
    """A summary in progress: `step(engine)` makes its next model call on `engine`; False once it is done.

    Planning counts tokens with the summarizer's own engine: every NPU runs the same model."""

    def __init__(self, steps: Callable[[Callable[[], object]], Generator[None, None, Summary | None]],
                 engine: object) -> None:
        self._engine = engine
        self._steps = steps(lambda: self._engine)
        self.summary: Summary | None = None

    def step(self, engine: object) -> bool:
        self._engine = engine
        try:
            next(self._steps)
        except StopIteration as done:
            self.summary = done.value
            return False
        return True


def _drain(steps: Generator[None, None, object]):
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
