"""Events in history: the `events` table, what belongs to each (`event_items`) and its best snapshot as a
JPEG under `<state_dir>/events/`. Written at every change, so an event a crash cut short is closed
as `interrupted` at the next start (`interrupt_open`); retention takes the keyframe with the row.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon.state.store import Store, storage_error
from daemon.types import Description, Event

log = logging.getLogger(__name__)

EVENT_MIGRATIONS = [
    [
        """CREATE TABLE events (
            id TEXT PRIMARY KEY,
            camera TEXT NOT NULL,
            start REAL NOT NULL,                 -- window time of the first changed window
            "end" REAL,                          -- NULL while open
            state TEXT NOT NULL,                 -- open | closing | ended
            ended_by TEXT,                       -- quiet | max_length | source ended | shutdown | interrupted
            record TEXT NOT NULL,                -- JSON: the rest of the Event (reasons, rules, descriptions, ...)
            story TEXT,
            snapshot TEXT,                       -- file name of the keyframe JPEG under <state_dir>/events
            opened REAL NOT NULL,                -- wall clock: retention
            updated REAL NOT NULL)""",
        "CREATE INDEX events_by_camera ON events (camera, start)",
        "CREATE INDEX events_by_opened ON events (opened)",
        "CREATE INDEX events_unfinished ON events (state) WHERE state != 'ended'",
        """CREATE TABLE event_items (
            event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            kind TEXT NOT NULL,                  -- window | result | alert
            row_id INTEGER NOT NULL,
            PRIMARY KEY (kind, row_id))""",
        "CREATE INDEX event_items_by_event ON event_items (event_id)",
    ],
]

_COLUMNS = 'id, camera, start, "end", state, ended_by, record, story, snapshot'


class EventStore(Store):
    """`EventStore(history_path, keyframes_dir).open()`; thread-safe. The history tables must exist
    (open `History` on the same file first): items are linked to their rows."""

    component, migrations, what = "events", EVENT_MIGRATIONS, "the events table of the history database"

    def __init__(self, path: Path | str, keyframes: Path | str | None = None) -> None:
        super().__init__(path)
        self.keyframes = Path(keyframes) if keyframes is not None else Path(path).parent / "events"

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA foreign_keys=ON")
        super()._configure(db)

    # -- writes --------------------------------------------------------------

    def save(self, event: Event, now: float) -> None:
        """Insert or update the event's row (`now`: wall clock)."""
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO events ({_COLUMNS}, opened, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET \"end\" = excluded.\"end\", state = excluded.state, "
                "ended_by = excluded.ended_by, record = excluded.record, story = excluded.story, "
                "updated = excluded.updated",
                (event.id, event.camera, event.start, event.end, event.state, event.ended_by, _record_json(event),
                 event.story, now, now))
        self._run(write, "record an event in")

    def save_snapshot(self, event_id: str, jpeg: bytes) -> Path:
        """The event's keyframe, written whole (temporary file, then renamed) and named in its row."""
        name = f"{_safe(event_id)}.jpg"
        path = self.keyframes / name
        try:
            self.keyframes.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part")
            partial.write_bytes(jpeg)
            os.replace(partial, path)
        except OSError as exc:
            raise storage_error(exc, "write an event keyframe in", self.keyframes) from exc
        self._run(lambda db: db.execute("UPDATE events SET snapshot = ? WHERE id = ?", (name, event_id)),
                  "name an event's keyframe in")
        return path

    def link(self, event: Event) -> int:
        """Reference the event from its windows (the camera's windows within its span), their results
        and the alerts on them; returns how many items were linked."""
        end = event.end if event.end is not None else event.last_change

        def write(db: sqlite3.Connection) -> int:
            span = (event.camera, event.start, end)
            before = db.total_changes
            db.execute("INSERT OR IGNORE INTO event_items (event_id, kind, row_id) SELECT ?, 'window', id "
                       "FROM windows WHERE camera = ? AND start >= ? AND \"end\" <= ? AND analysed = 1",
                       (event.id, *span))
            db.execute("INSERT OR IGNORE INTO event_items (event_id, kind, row_id) SELECT ?, 'result', r.id "
                       "FROM results r JOIN event_items i ON i.kind = 'window' AND i.row_id = r.window_id "
                       "WHERE i.event_id = ?", (event.id, event.id))
            db.execute("INSERT OR IGNORE INTO event_items (event_id, kind, row_id) SELECT ?, 'alert', id "
                       "FROM alerts WHERE camera = ? AND window_start >= ? AND window_end <= ?", (event.id, *span))
            return db.total_changes - before
        return self._run(write, "link an event's windows in")

    def interrupt_open(self, now: float) -> list[Event]:
        """Close every event a crash left open or closing, as `interrupted` at its last change, with what
        was recorded (descriptions, rules, keyframe); returns them, for their `end` messages."""
        rows = self._run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM events WHERE state != 'ended' "
                                               "ORDER BY start").fetchall(), "read")
        closed = []
        for row in rows:
            event = _event(row)
            event = replace(event, state="ended", end=event.end or event.last_change,
                            ended_by="interrupted" if event.state == "open" else event.ended_by or "interrupted")
            self.link(event)
            event = replace(event, descriptions=self._recorded_descriptions(event))
            self.save(event, now)
            closed.append(event)
        if closed:
            log.warning("events: %d event(s) were open when the daemon stopped; closed them as interrupted (%s)",
                        len(closed), ", ".join(e.id for e in closed))
        return closed

    def _recorded_descriptions(self, event: Event) -> tuple[Description, ...]:
        """The event's descriptions with those its windows' results hold: a kill between recording a
        result and recording the event left them out of the event's row."""
        rows = self._run(lambda db: db.execute(
            "SELECT r.window_start, r.window_end, r.text FROM results r JOIN event_items i ON i.kind = 'result' "
            "AND i.row_id = r.id WHERE i.event_id = ? AND r.prompt_id = 'description' ORDER BY r.window_start",
            (event.id,)).fetchall(), "read")
        known = {(d.window_start, d.text) for d in event.descriptions}
        found = [Description(*row) for row in rows if (row[0], row[2]) not in known]
        return tuple(sorted(event.descriptions + tuple(found), key=lambda d: d.window_start))

    def prune(self, now: float, keep_seconds: float) -> int:
        """Delete ended events opened before `now - keep_seconds`, and their keyframes."""
        cutoff = now - keep_seconds

        def write(db: sqlite3.Connection) -> tuple[int, list[str]]:
            names = [r[0] for r in db.execute("SELECT snapshot FROM events WHERE opened < ? AND state = 'ended' "
                                              "AND snapshot IS NOT NULL", (cutoff,))]
            db.execute("DELETE FROM event_items WHERE event_id IN (SELECT id FROM events WHERE opened < ? "
                       "AND state = 'ended')", (cutoff,))
            count = db.execute("DELETE FROM events WHERE opened < ? AND state = 'ended'", (cutoff,)).rowcount
            return count, names
        count, names = self._run(write, "prune old events in")
        for name in names:
            try:
                (self.keyframes / name).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("events: cannot delete the old keyframe %s: %s", self.keyframes / name, exc)
        return count

    # -- reads ---------------------------------------------------------------

    def get(self, event_id: str) -> Event | None:
        rows = self._run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,))
                         .fetchall(), "read")
        return _event(rows[0]) if rows else None

    def find(self, since: float | None = None, until: float | None = None, camera: str | None = None,
             rule: str | None = None, text: str | None = None, limit: int = 100) -> list[Event]:
        """Events that started in [since, until), newest first; `rule`: one that fired in it; `text`: in its
        story or descriptions (case-insensitive)."""
        where, params = ["1 = 1"], []
        for clause, value in (("start >= ?", since), ("start < ?", until), ("camera = ?", camera)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if rule is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(record, '$.rules') WHERE value = ?)")
            params.append(rule)
        if text is not None:
            where.append("(instr(lower(coalesce(story, '')), lower(?)) > 0 OR instr(lower(record), lower(?)) > 0)")
            params += [text, json.dumps(text)[1:-1]]
        sql = f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY start DESC LIMIT ?"
        rows = self._run(lambda db: db.execute(sql, (*params, limit)).fetchall(), "read")
        return [_event(row) for row in rows]

    def ended_between(self, since: float, until: float) -> list[Event]:
        """Events that ended with their row last written (wall clock) in [since, until), oldest first:
        what a summary of that period reads."""
        rows = self._run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM events WHERE state = 'ended' AND updated >= ?"
                                               " AND updated < ? ORDER BY updated", (since, until)).fetchall(), "read")
        return [_event(row) for row in rows]

    def recorded(self, event_id: str) -> float:
        """When (wall clock) the event's row was last written: an ended event's end, as history records it."""
        rows = self._run(lambda db: db.execute("SELECT updated FROM events WHERE id = ?", (event_id,)).fetchall(),
                         "read")
        return rows[0][0] if rows else 0.0

    def items(self, event_id: str) -> dict[str, list[int]]:
        """Row ids of the event's windows, results and alerts."""
        rows = self._run(lambda db: db.execute("SELECT kind, row_id FROM event_items WHERE event_id = ? "
                                               "ORDER BY kind, row_id", (event_id,)).fetchall(), "read")
        out: dict[str, list[int]] = {"window": [], "result": [], "alert": []}
        for kind, row_id in rows:
            out.setdefault(kind, []).append(row_id)
        return out

    def snapshot_path(self, event_id: str) -> Path | None:
        rows = self._run(lambda db: db.execute("SELECT snapshot FROM events WHERE id = ?", (event_id,)).fetchall(),
                         "read")
        return self.keyframes / rows[0][0] if rows and rows[0][0] else None


def _safe(event_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in event_id)


def _record_json(event: Event) -> str:
    return json.dumps({
        "last_change": event.last_change, "reasons": list(event.reasons), "zones": sorted(event.zones),
        "triggers": list(event.triggers), "box": event.box, "rules": list(event.rules),
        "descriptions": [[d.window_start, d.window_end, d.text] for d in event.descriptions],
        "windows": event.windows, "story_from": event.story_from, "snapshot_ts": event.snapshot_ts,
        "snapshot_change": event.snapshot_change}, ensure_ascii=False)


def _event(row: tuple[Any, ...]) -> Event:
    event_id, camera, start, end, state, ended_by, record, story, _ = row
    r = json.loads(record)
    return Event(event_id, camera, start, r["last_change"], state, end, ended_by, tuple(r["reasons"]),
                 frozenset(r["zones"]), tuple(r["triggers"]), None if r["box"] is None else tuple(r["box"]),
                 tuple(r["rules"]), tuple(Description(*d) for d in r["descriptions"]), r["windows"], story,
                 r["story_from"], r["snapshot_ts"], r["snapshot_change"])
