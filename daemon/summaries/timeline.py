"""What a summary reads: the timeline of a period of history, as text lines, oldest first.

    timeline = build_timeline(history, Period(start, end, zone), cameras)

Near-identical consecutive descriptions of a camera merge into one line with a count; an ended
event's story replaces the descriptions of its windows. Also the summary's seams: `Period`,
`Request`, `Timeline`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from difflib import SequenceMatcher
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from daemon.state.events import EventStore
    from daemon.state.history import History


SIMILAR = 0.85  # difflib ratio above which consecutive descriptions count as the same scene


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

    kind: str  # description | answer | alert | event (an event's story)
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


def build_timeline(history: History, period: Period, cameras: Sequence[str],
                   events: EventStore | None = None) -> Timeline:
    """The period's descriptions, rule answers and alerts of `cameras` (and event stories, with `events`),
    oldest first, runs merged.

    Rows are selected and placed by when the daemon recorded them (as history's
    queries and retention are), which is what `period` means.
    """
    wanted = set(cameras)
    results = [r.result for r in history.results(period.start, period.end)
               if r.window_id is not None and r.result.camera in wanted]  # text-only rows are no camera's
    descriptions = [r for r in results if r.choice is None and r.prompt_id == "description"]
    stories = [e for e in (events.ended_between(period.start, period.end) if events is not None else [])
               if e.camera in wanted and e.story]
    if stories:  # an event's story stands for the descriptions of its windows
        descriptions = [r for r in descriptions if not any(
            e.camera == r.camera and e.start <= (r.window_start or 0) < (e.end or e.last_change) for e in stories)]
    answers = [r for r in results if r.choice is not None]
    alerts = [a.alert for a in history.alerts(period.start, period.end) if a.alert.camera in wanted]
    entries = merge_runs([Entry("description", r.camera, r.ts, r.ts, " ".join(r.text.split())) for r in descriptions])
    entries += merge_runs([Entry("answer", r.camera, r.ts, r.ts, r.choice, r.prompt_id) for r in answers])
    entries += [Entry("alert", a.camera, a.ts, a.ts, " ".join(a.text.split()), f"{a.rule} ({a.severity})")
                for a in alerts]
    entries += [Entry("event", e.camera, ts, ts, " ".join(e.story.split())) for e, ts in
                ((e, events.recorded(e.id)) for e in stories)]
    entries.sort(key=lambda e: (e.start, e.camera, e.kind))
    counts = {"descriptions": len(descriptions), "answers": len(answers), "alerts": len(alerts),
              **({"events": len(stories)} if stories else {})}
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
    if e.kind == "event":
        return f"{when} {e.camera} EVENT: {e.text}"
    return f"{when} {e.camera}{times}: {e.text}"


def nothing_seen(timeline: Timeline) -> str:
    return f"Nothing was seen on {', '.join(timeline.cameras) or 'any camera'} from {timeline.period.label()}."
