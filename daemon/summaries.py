"""Summaries of a period of history: timeline, map-reduce plan, model calls.

    timeline = build_timeline(history, period, cameras)     # what was seen, runs merged
    plan = plan_summary(timeline, request, TokenBudget.of(engine))
    text = execute(plan, engine_asker(engine, stop), budget)

The model reads the timeline as text only. When it does not fit one prompt,
it is split into chunks that do (map), each chunk is summarised, and the
partial summaries are summarised again (reduce, in as many levels as the
model's context needs). Every limit comes from the engine: prompts are
counted with its own prompt builder, and a step's prompt leaves its answer
room in the KV cache. An empty period gets a fixed "nothing was seen" text
and no model call.

The last run of each scheduled job is kept in the history database
(`RunLog`), so that after a restart a `since_last` job starts where the
previous run ended: no period is skipped or summarised twice.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Callable, Generator, Sequence

from daemon.errors import VlmwatchError
from daemon.history import Store
from daemon.types import Summary

if TYPE_CHECKING:
    from daemon.config import SummaryJob
    from daemon.history import History
    from daemon.worker import SummaryJob as WorkItem

log = logging.getLogger(__name__)

SINCE_LAST = "since_last"
SIMILAR = 0.85  # difflib ratio above which consecutive descriptions count as the same scene
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, what: str = "duration") -> float:
    """'90s', '30m', '2h', '1h30m', '7d', '1w' -> seconds; ValueError saying what is accepted."""
    s = text.strip().lower()
    parts = _DURATION.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{what} {text!r} is not a duration: write a number and a unit (s, m, h, d, w),"
                         " e.g. 2h, 24h, 7d or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{what} {text!r} must be longer than zero")
    return seconds


def parse_period(text: str) -> float | None:
    """A job's `period`: None for since_last, else seconds."""
    if text.strip() == SINCE_LAST:
        return None
    try:
        return parse_duration(text, "period")
    except ValueError as exc:
        raise ValueError(f"{exc}; or since_last for everything since the previous run") from None


# --------------------------------------------------------------------------- seams


@dataclass(frozen=True)
class Period:
    start: float  # POSIX seconds, inclusive
    end: float  # exclusive
    zone: tzinfo  # how times are written for the model

    def label(self) -> str:
        a, b = (datetime.fromtimestamp(t, self.zone) for t in (self.start, self.end))
        end = f"{b:%H:%M}" if a.date() == b.date() else f"{b:%Y-%m-%d %H:%M}"
        return f"{a:%Y-%m-%d %H:%M} to {end} {b:%Z}".rstrip()

    def clock(self, ts: float) -> str:
        """A time inside the period, as short as the period allows."""
        t = datetime.fromtimestamp(ts, self.zone)
        if datetime.fromtimestamp(self.start, self.zone).date() == datetime.fromtimestamp(self.end - 1, self.zone).date():
            return f"{t:%H:%M}"
        return f"{t:%a %H:%M}" if self.end - self.start <= 7 * 86400 else f"{t:%b %d %H:%M}"


@dataclass(frozen=True)
class Request:
    """What to summarise, independent of any schedule (a config job or the summarize command)."""

    job: str
    cameras: tuple[str, ...]
    prompt: str
    max_new_tokens: int


@dataclass(frozen=True)
class Entry:
    """One line of the timeline: a description (or a run of near-identical ones), a rule answer run, an alert."""

    kind: str  # description | answer | alert
    camera: str
    start: float
    end: float
    text: str
    label: str = ""  # the rule (prompt id) of an answer or an alert
    repeats: int = 1


@dataclass(frozen=True)
class Timeline:
    period: Period
    cameras: tuple[str, ...]
    entries: tuple[Entry, ...]
    counts: dict[str, int] = field(default_factory=dict)  # raw rows read: descriptions, answers, alerts


# --------------------------------------------------------------------------- timeline


def build_timeline(history: History, period: Period, cameras: Sequence[str]) -> Timeline:
    """The period's descriptions, rule answers and alerts of `cameras`, oldest first, runs merged.

    Rows are selected and placed by when the daemon recorded them (as history's
    queries and retention are), which is what `period` means.
    """
    wanted = set(cameras)
    results = [r.result for r in history.results(period.start, period.end)
               if r.window_id is not None and r.result.camera in wanted]  # text-only rows are no camera's
    descriptions = [r for r in results if r.choice is None and r.prompt_id == "description"]
    answers = [r for r in results if r.choice is not None]
    alerts = [a.alert for a in history.alerts(period.start, period.end) if a.alert.camera in wanted]
    entries = merge_runs([Entry("description", r.camera, r.ts, r.ts, " ".join(r.text.split())) for r in descriptions])
    entries += merge_runs([Entry("answer", r.camera, r.ts, r.ts, r.choice, r.prompt_id) for r in answers])
    entries += [Entry("alert", a.camera, a.ts, a.ts, " ".join(a.text.split()), f"{a.rule} ({a.severity})")
                for a in alerts]
    entries.sort(key=lambda e: (e.start, e.camera, e.kind))
    counts = {"descriptions": len(descriptions), "answers": len(answers), "alerts": len(alerts)}
    return Timeline(period, tuple(cameras), tuple(entries), counts)


def merge_runs(entries: Sequence[Entry], similar: float = SIMILAR) -> list[Entry]:
    """Merge consecutive entries of one camera and label whose texts are near-identical.

    "Consecutive" is per stream (camera, kind, label): another camera's line in
    between does not break a run. A run keeps its first text, so it cannot drift.
    """
    open_runs: dict[tuple, Entry] = {}
    out: list[Entry] = []
    for e in sorted(entries, key=lambda e: e.start):
        key = (e.camera, e.kind, e.label)
        run = open_runs.get(key)
        if run is not None and _same(run.text, e.text, similar):
            open_runs[key] = Entry(run.kind, run.camera, run.start, e.end, run.text, run.label, run.repeats + 1)
            continue
        if run is not None:
            out.append(run)
        open_runs[key] = e
    return sorted(out + list(open_runs.values()), key=lambda e: e.start)


def _same(a: str, b: str, similar: float) -> bool:
    a, b = _normal(a), _normal(b)
    return a == b or SequenceMatcher(None, a, b, autojunk=False).ratio() >= similar


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def entry_line(e: Entry, period: Period) -> str:
    first, last = period.clock(e.start), period.clock(e.end)
    when = first if first == last else f"{first}-{last}"
    times = f" (x{e.repeats})" if e.repeats > 1 else ""
    if e.kind == "alert":
        return f"{when} {e.camera} ALERT {e.label}: {e.text}"
    if e.kind == "answer":
        return f"{when} {e.camera} {e.label}: {e.text}{times}"
    return f"{when} {e.camera}{times}: {e.text}"


def nothing_seen(timeline: Timeline) -> str:
    return f"Nothing was seen on {', '.join(timeline.cameras) or 'any camera'} from {timeline.period.label()}."




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


def period_for(job: SummaryJob, fire: Fire, last: LastRun | None, zone: tzinfo) -> Period:
    """A duration ends at the fire time; since_last starts where the last run ended (or one schedule step back)."""
    seconds = parse_period(job.period)
    if seconds is not None:
        return Period(fire.at - seconds, fire.at, zone)
    if last is not None:
        start = last.period_end
    else:
        start = fire.previous if fire.previous is not None else fire.at - 86400.0
    return Period(min(start, fire.at), fire.at, zone)


def zone_of(name: str | None) -> tzinfo:
    """An IANA zone, or the system's (as APScheduler picks it) when unset."""
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    from tzlocal import get_localzone

    return get_localzone()


class Summarizer:
    """Summaries from history with the engine; `run` is the scheduled path, `summarize` the on-demand one."""

    def __init__(self, history: History, engine, runlog: RunLog | None, cameras: Sequence[str],
                 publish: Callable[[Summary], object] | None = None, clock: Callable[[], float] = time.time):
        self.history, self.engine, self.runlog, self.cameras = history, engine, runlog, tuple(cameras)
        self.publish, self.clock = publish, clock

    def request(self, job: SummaryJob) -> Request:
        return Request(job.id, tuple(job.cameras or self.cameras), job.prompt, job.max_new_tokens)

    def plan(self, request: Request, period: Period):
        from daemon.summary_plan import TokenBudget, plan_summary

        return plan_summary(build_timeline(self.history, period, request.cameras), request, TokenBudget.of(self.engine))

    def summarize(self, request: Request, period: Period, stop: threading.Event | None = None) -> Summary:
        """Plan and run the model calls (none for an empty period); records nothing."""
        return _drain(self.summarize_steps(request, period, stop))

    def summarize_steps(self, request: Request, period: Period,
                        stop: threading.Event | None = None) -> Generator[None, None, Summary]:
        """`summarize`, pausing after each model call."""
        from daemon.summary_plan import TokenBudget, engine_asker, run_steps

        plan = self.plan(request, period)
        calls: list[int] = []
        ask = engine_asker(self.engine, stop, on_step=lambda question, tokens: calls.append(tokens))
        text = yield from run_steps(plan, ask, TokenBudget.of(self.engine))
        counts = {**plan.timeline.counts, "timeline": len(plan.timeline.entries), "model_calls": len(calls)}
        return Summary(request.job, period.start, period.end, text, self.clock(), counts, request.cameras)

    def run(self, job: SummaryJob, fire: Fire, stop: threading.Event | None = None) -> Summary | None:
        """Summarise the fire's period, record it and the run, publish it; None if this fire already ran."""
        return _drain(self.run_steps(job, fire, stop))

    def run_steps(self, job: SummaryJob, fire: Fire,
                  stop: threading.Event | None = None) -> Generator[None, None, Summary | None]:
        """`run`, pausing after each model call."""
        last = self.runlog.last(job.id) if self.runlog else None
        if last is not None and last.fire >= fire.at:
            log.info("summary %s: the run for %s already happened; not repeating it", job.id, _iso(fire.at))
            return None
        period = period_for(job, fire, last, zone_of(job.timezone))
        summary = yield from self.summarize_steps(self.request(job), period, stop)
        self.history.record_summary(summary)
        if self.runlog:
            self.runlog.record(LastRun(job.id, fire.at, period.start, period.end, self.clock()))
        if self.publish is not None:
            self.publish(summary)
        log.info("summary %s (%s, %d model calls): %s", job.id, period.label(), summary.counts["model_calls"],
                 summary.text[:200])
        return summary

    def work(self, job: SummaryJob, fire: Fire, stop: threading.Event | None = None,
             requeue: Callable[[WorkItem], bool] | None = None) -> WorkItem:
        """The NPU queue item for a fire. After each model call it hands itself to `requeue` (the queue's
        put_summary), so windows waiting meanwhile go first; a user-facing failure is logged, not fatal."""
        from daemon.llm import Cancelled
        from daemon.worker import SummaryJob as WorkItem

        steps = self.run_steps(job, fire, stop)

        def run() -> None:
            try:
                while True:
                    next(steps)
                    if requeue is not None and requeue(item):
                        return  # the rest after the windows queued meanwhile
            except StopIteration:
                pass
            except Cancelled:
                log.info("summary %s: cancelled by shutdown; a restart within misfire_grace runs it again", job.id)
            except VlmwatchError as exc:
                log.error("summary %s: %s", job.id, exc)

        item = WorkItem(job.id, run)
        return item


def _drain(steps: Generator[None, None, object]):
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
