"""The page's reads of events (the `events` table of daemon.state.events): the events timeline, newest
first, and one event with what history holds about it.

    browser = EventBrowser(state_dir / "history.sqlite", state_dir / "events").open()
    browser.events(camera="yard", limit=50)
    browser.event("1750000000.000-0a1b2c")

An event's windows and alerts are those of its span on its camera (`start` to its `end`, or to its
last change while it is open), the span `EventStore.link` records when it ends: so an open event
shows its windows too. Without the events table (events never enabled) there are no events.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.state.browse import _WINDOW_COLUMNS, AlertBrief, Browser, _bounded, _window_row, has_events
from daemon.state.events import _COLUMNS, _event
from daemon.state.history import _ALERT_COLUMNS, _RESULT_COLUMNS, AlertRow, ResultRow, WindowRow, _alert, _result_row
from daemon.types import Event

_SPAN_END = "coalesce(e.\"end\", json_extract(e.record, '$.last_change'))"
# bounded on window_start at both ends (window_start <= window_end), so the alerts_by_window index
# (camera, window_start) reads only the span's alerts
_ALERTS_IN_SPAN = (f"a.camera = e.camera AND a.window_start BETWEEN e.start AND {_SPAN_END} "
                   f"AND a.window_end <= {_SPAN_END}")
_ALERTS_OF = "camera = ? AND window_start BETWEEN ? AND ? AND window_end <= ? ORDER BY id"  # (camera, start, end, end)


@dataclass(frozen=True)
class EventEntry:
    """An event as the timeline shows it."""

    seq: int  # its row number in the events table: the timeline's order (newest first) and paging (`before`)
    event: Event
    opened: float  # wall clock, when it was first recorded
    keyframe: bool  # its snapshot JPEG is on disk
    alerts: tuple[AlertBrief, ...]  # raised on its windows (and on its story)

    @property
    def status(self) -> str:
        """open | ending (its story is being told) | ended | interrupted (the daemon stopped during it)."""
        if self.event.state == "ended":
            return "interrupted" if self.event.ended_by == "interrupted" else "ended"
        return "ending" if self.event.state == "closing" else "open"


@dataclass(frozen=True)
class EventPage:
    """Everything history knows about one event."""

    entry: EventEntry
    windows: tuple[WindowRow, ...]  # its analysed windows, oldest first
    results: tuple[ResultRow, ...]  # their answers, in the order recorded
    result_ids: tuple[str | None, ...]  # each result's MQTT message id
    alerts: tuple[AlertRow, ...]
    alert_ids: tuple[str | None, ...]


class EventBrowser(Browser):
    """The page's queries (daemon.state.browse), events included. Thread-safe."""

    def __init__(self, path: Path | str, keyframes: Path | str | None = None) -> None:
        super().__init__(path)
        self.keyframes = Path(keyframes) if keyframes is not None else Path(path).parent / "events"

    def events(self, *, camera: str | None = None, rule: str | None = None, severity: str | None = None,
               since: float | None = None, until: float | None = None, before: int | None = None,
               limit: int = 50) -> list[EventEntry]:
        """Events newest first; `rule`: one that fired in it; `severity`: it has an alert of that severity;
        `since`/`until`: its start; `before`: row numbers below it (paging)."""
        where, params = ["1 = 1"], []
        # a camera alone: walk the events newest first (about 1 in N cameras match) rather than sort all of
        # the camera's (measured 60 ms for a year, 1 ms this way); with dates, its (camera, start) index
        by_camera = "e.camera = ?" if since is not None or until is not None else "+e.camera = ?"
        for clause, value in ((by_camera, camera), ("e.start >= ?", since), ("e.start < ?", until),
                              ("e.rowid < ?", before),
                              ("EXISTS (SELECT 1 FROM json_each(e.record, '$.rules') WHERE value = ?)", rule),
                              (f"EXISTS (SELECT 1 FROM alerts a WHERE {_ALERTS_IN_SPAN} AND a.severity = ?)",
                               severity)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = (f"SELECT e.rowid, e.opened, {_COLUMNS} FROM events e WHERE {' AND '.join(where)} "
               "ORDER BY e.rowid DESC LIMIT ?")

        def read(db: sqlite3.Connection) -> list[EventEntry]:
            if not has_events(db):
                return []
            return [self._event_entry(db, row) for row in db.execute(sql, (*params, _bounded(limit))).fetchall()]

        return self._run(read, "read the events of")

    def event(self, event_id: str) -> EventPage | None:
        def read(db: sqlite3.Connection) -> EventPage | None:
            row = has_events(db) and db.execute(f"SELECT e.rowid, e.opened, {_COLUMNS} FROM events e WHERE id = ?",
                                                (event_id,)).fetchone()
            if not row:
                return None
            entry = self._event_entry(db, row)
            e = entry.event
            span = (e.camera, e.start, e.end if e.end is not None else e.last_change)
            windows = tuple(_window_row(w) for w in db.execute(
                f"{_WINDOW_COLUMNS} WHERE camera = ? AND start BETWEEN ? AND ? AND \"end\" <= ? AND analysed = 1 "
                "ORDER BY start, id", (*span, span[-1])).fetchall())
            ids = [w.id for w in windows]
            results = db.execute(f"{_RESULT_COLUMNS}, message_id FROM results WHERE window_id IN "
                                 f"({', '.join('?' * len(ids))}) ORDER BY id", ids).fetchall() if ids else []
            alerts = db.execute(f"SELECT id, {_ALERT_COLUMNS}, message_id FROM alerts WHERE {_ALERTS_OF}",
                                (*span, span[-1])).fetchall()
            return EventPage(entry, windows, tuple(_result_row(r[:-1]) for r in results),
                             tuple(r[-1] for r in results), tuple(AlertRow(a[0], _alert(a[1:-1])) for a in alerts),
                             tuple(a[-1] for a in alerts))

        return self._run(read, "read an event of")

    def keyframe(self, event_id: str) -> bytes | None:
        """The event's snapshot JPEG (its best keyframe), if it has one on disk."""
        path = self._keyframe_path(self._run(lambda db: has_events(db) and db.execute(
            "SELECT snapshot FROM events WHERE id = ?", (event_id,)).fetchone(), "read an event of"))
        try:
            return path.read_bytes() if path is not None else None
        except FileNotFoundError:
            return None  # pruned between the query and the read

    def _keyframe_path(self, row: tuple[Any, ...] | None) -> Path | None:
        name = row[0] if row else None
        # the store names it after the event's id with unsafe characters replaced; never a path elsewhere
        return self.keyframes / name if name and "/" not in name and not name.startswith(".") else None

    def _event_entry(self, db: sqlite3.Connection, row: tuple[Any, ...]) -> EventEntry:
        seq, opened, *columns = row
        event = _event(tuple(columns))
        end = event.end if event.end is not None else event.last_change
        alerts = db.execute("SELECT id, rule, severity, text, snapshot_jpeg IS NOT NULL FROM alerts "
                            f"WHERE {_ALERTS_OF}", (event.camera, event.start, end, end))
        path = self._keyframe_path((columns[-1],))
        return EventEntry(seq, event, opened, path is not None and path.is_file(),
                          tuple(AlertBrief(i, r, s, t, bool(snap)) for i, r, s, t, snap in alerts.fetchall()))
