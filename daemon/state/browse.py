"""Read-only queries for the web page on a connection of their own (WAL: reads and the daemon's writes
never wait for each other). Every query is bounded by `limit` (at most MAX_LIMIT), walks an index
newest first and pages by id (`before`), never by OFFSET.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from daemon.state.history import (
    _ALERT_COLUMNS,
    _RESULT_COLUMNS,
    HISTORY_MIGRATIONS,
    AlertRow,
    ResultRow,
    SummaryRow,
    WindowRow,
    _alert,
    _result_row,
    _summary,
)
from daemon.state.search import (
    EVENT_SEARCH_MIGRATIONS,
    KINDS,
    SEARCH_MIGRATIONS,
    kind_range,
    match_expression,
    split_rowid,
)
from daemon.state.store import Store, migrate
from daemon.types import Region

MAX_LIMIT = 200
_WINDOW_COLUMNS = ("SELECT id, camera, start, \"end\", change, analysed, reason, frame_ts, recorded, regions, zones, "
                   "\"trigger\" FROM windows")
# kind -> (table, time column, id column): what a search of that kind reads
_TABLES = {"result": ("results", "ts", "id"), "alert": ("alerts", "ts", "id"), "summary": ("summaries", "ts", "id"),
           "event": ("events", "opened", "rowid")}


@dataclass(frozen=True)
class AlertBrief:
    """An alert as the timeline shows it beside its window."""

    id: int
    rule: str
    severity: str
    text: str
    has_snapshot: bool


@dataclass(frozen=True)
class TimelineEntry:
    window: WindowRow
    descriptions: tuple[tuple[str, str], ...]  # (prompt id, text), in the order recorded
    alerts: tuple[AlertBrief, ...]


@dataclass(frozen=True)
class WindowPage:
    """Everything history knows about one window."""

    window: WindowRow
    results: tuple[ResultRow, ...]
    result_ids: tuple[str | None, ...]  # each result's MQTT message id
    alerts: tuple[AlertRow, ...]
    alert_ids: tuple[str | None, ...]


@dataclass(frozen=True)
class Hit:
    """A search hit: what matched (kind and its row id), where and when."""

    kind: str  # result | alert | summary | event (its story)
    id: int
    camera: str
    ts: float
    text: str
    window_id: int | None  # the window a result or alert came from (alerts: matched by camera and start)
    event_id: str | None = None  # the event whose story matched


@dataclass(frozen=True)
class CameraFigures:
    analysed: int  # windows in the last hour
    skipped: int
    last_reason: str | None
    last_window_id: int | None
    description: str | None  # the newest description
    described_at: float | None


@dataclass(frozen=True)
class NpuFigures:
    windows: int  # analysed windows in the span
    seconds_per_window: float | None  # ViT + prefill + decode of every prompt of a window
    decode_tokens_per_second: float | None


class Browser(Store):
    """`Browser(path).open()` ... `close()`: the page's queries on the history file. Thread-safe."""

    component, migrations, what = "search", SEARCH_MIGRATIONS, "the history database"

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout=5000")
        migrate(db, "history", HISTORY_MIGRATIONS)  # no-op when History opened it first
        migrate(db, "search", SEARCH_MIGRATIONS)
        if has_events(db):  # stories: once events have been enabled (daemon.state.events made the table)
            migrate(db, "search_events", EVENT_SEARCH_MIGRATIONS)

    # -- the timeline --------------------------------------------------------------

    def timeline(self, *, camera: str | None = None, rule: str | None = None, severity: str | None = None,
                 since: float | None = None, until: float | None = None, before: int | None = None,
                 skipped: bool = False, limit: int = 50) -> list[TimelineEntry]:
        """Windows newest first (analysed ones unless `skipped`), each with its descriptions and alerts;
        `rule`/`severity`: only windows that raised such an alert. `before`: ids below it (paging)."""
        where, params = _window_filters(camera, since, until, before, skipped)
        if rule is not None or severity is not None:
            alert_where = ["a.camera = w.camera", "a.window_start = w.start"]
            for column, value in (("rule", rule), ("severity", severity)):
                if value is not None:
                    alert_where.append(f"a.{column} = ?")
                    params.append(value)
            where.append(f"EXISTS (SELECT 1 FROM alerts a WHERE {' AND '.join(alert_where)})")
        sql = (f"{_WINDOW_COLUMNS} w{' WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY w.id DESC LIMIT ?")
        params.append(_bounded(limit))

        def read(db: sqlite3.Connection) -> list[TimelineEntry]:
            windows = [_window_row(row) for row in db.execute(sql, params).fetchall()]
            return [self._entry(db, w) for w in windows]

        return self._run(read, "read the timeline of")

    @staticmethod
    def _entry(db: sqlite3.Connection, window: WindowRow) -> TimelineEntry:
        texts = db.execute("SELECT prompt_id, text FROM results WHERE window_id = ? ORDER BY id",
                           (window.id,)).fetchall()
        alerts = db.execute("SELECT id, rule, severity, text, snapshot_jpeg IS NOT NULL FROM alerts "
                            "WHERE camera = ? AND window_start = ? ORDER BY id", (window.camera, window.start))
        return TimelineEntry(window, tuple((p, t) for p, t in texts),
                             tuple(AlertBrief(i, r, s, t, bool(snap)) for i, r, s, t, snap in alerts.fetchall()))

    def window(self, window_id: int) -> WindowPage | None:
        def read(db: sqlite3.Connection) -> WindowPage | None:
            row = db.execute(f"{_WINDOW_COLUMNS} WHERE id = ?", (window_id,)).fetchone()
            if row is None:
                return None
            window = _window_row(row)
            results = db.execute(f"{_RESULT_COLUMNS}, message_id FROM results WHERE window_id = ? ORDER BY id",
                                 (window_id,)).fetchall()
            alerts = db.execute(f"SELECT id, {_ALERT_COLUMNS}, message_id FROM alerts WHERE camera = ? AND "
                                "window_start = ? ORDER BY id", (window.camera, window.start)).fetchall()
            return WindowPage(window, tuple(_result_row(r[:-1]) for r in results), tuple(r[-1] for r in results),
                              tuple(AlertRow(a[0], _alert(a[1:-1])) for a in alerts), tuple(a[-1] for a in alerts))

        return self._run(read, "read a window of")

    def window_of_alert(self, alert_id: int) -> int | None:
        """The window an alert came from (same camera and start), if it is still in history."""
        rows = self._run(lambda db: db.execute(
            "SELECT w.id FROM alerts a JOIN windows w ON w.camera = a.camera AND w.start = a.window_start "
            "WHERE a.id = ? ORDER BY w.id DESC LIMIT 1", (alert_id,)).fetchall(), "read an alert of")
        return rows[0][0] if rows else None

    def alert_snapshot(self, alert_id: int) -> bytes | None:
        rows = self._run(lambda db: db.execute("SELECT snapshot_jpeg FROM alerts WHERE id = ?",
                                               (alert_id,)).fetchall(), "read an alert of")
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    # -- alerts and summaries --------------------------------------------------------

    def alerts(self, *, camera: str | None = None, before: int | None = None, limit: int = 50) -> list[AlertRow]:
        where, params = _filters({"camera": camera}, before)
        rows = self._run(lambda db: db.execute(f"SELECT id, {_ALERT_COLUMNS} FROM alerts{where} ORDER BY id DESC "
                                               "LIMIT ?", (*params, _bounded(limit))).fetchall(), "read alerts of")
        return [AlertRow(row[0], _alert(row[1:])) for row in rows]

    def summaries(self, *, job: str | None = None, before: int | None = None, limit: int = 20) -> list[SummaryRow]:
        where, params = _filters({"job": job}, before)
        rows = self._run(lambda db: db.execute(
            "SELECT id, job, period_start, period_end, text, ts, counts, cameras FROM summaries"
            f"{where} ORDER BY id DESC LIMIT ?", (*params, _bounded(limit))).fetchall(), "read summaries of")
        return [SummaryRow(row[0], _summary(row[1:])) for row in rows]

    # -- figures ---------------------------------------------------------------------

    def camera_figures(self, camera: str, since: float) -> CameraFigures:
        """Windows analysed and skipped since `since` (wall clock), the gate's last reason, the newest description."""
        def read(db: sqlite3.Connection) -> CameraFigures:
            counts = dict(db.execute("SELECT analysed, count(*) FROM windows WHERE camera = ? AND recorded >= ? "
                                     "GROUP BY analysed", (camera, since)).fetchall())
            last = db.execute("SELECT id, reason FROM windows WHERE camera = ? ORDER BY recorded DESC, id DESC "
                              "LIMIT 1", (camera,)).fetchone()
            said = db.execute("SELECT text, ts FROM results WHERE camera = ? AND window_id IS NOT NULL "
                              "ORDER BY ts DESC, id DESC LIMIT 1", (camera,)).fetchone()
            return CameraFigures(counts.get(1, 0), counts.get(0, 0), last[1] if last else None,
                                 last[0] if last else None, said[0] if said else None, said[1] if said else None)

        return self._run(read, "read camera figures of")

    def npu_figures(self, since: float) -> NpuFigures:
        """Seconds per analysed window and decode speed over the results recorded since `since`."""
        row = self._run(lambda db: db.execute(
            "SELECT count(DISTINCT window_id), sum(vit_ms + prefill_ms + decode_ms), sum(generated), "
            "sum(decode_ms) FROM results WHERE ts >= ? AND window_id IS NOT NULL", (since,)).fetchone(),
            "read NPU figures of")
        windows, total_ms, generated, decode_ms = row
        return NpuFigures(windows, total_ms / 1000 / windows if windows else None,
                          generated / (decode_ms / 1000) if generated and decode_ms else None)

    # -- search ------------------------------------------------------------------------

    def search(self, text: str, *, camera: str | None = None, kinds: tuple[str, ...] = tuple(KINDS),
               since: float | None = None, until: float | None = None, limit: int = 50) -> list[Hit]:
        """The newest `limit` descriptions, alerts, summaries and stories containing every word of `text`."""
        expression = match_expression(text)
        if expression is None:
            return []
        limit = _bounded(limit)

        def read(db: sqlite3.Connection) -> list[Hit]:
            hits: list[Hit] = []
            for kind in kinds:
                table, column, key = _TABLES[kind]
                if kind == "event" and not has_events(db):
                    continue
                first, last = _id_span(db, table, column, key, since, until)
                if first is None:
                    continue
                low, high = kind_range(kind, first, last)
                sql = "SELECT rowid FROM search WHERE search MATCH ? AND rowid BETWEEN ? AND ?"
                params: list[Any] = [expression, low, high]
                if camera is not None:
                    sql += " AND camera = ?"
                    params.append(camera)
                rowids = [r[0] for r in db.execute(sql + " ORDER BY rowid DESC LIMIT ?",
                                                   (*params, limit)).fetchall()]
                hits += [_hit(db, kind, split_rowid(r)[1]) for r in rowids]
            hits.sort(key=lambda h: h.ts, reverse=True)
            return hits[:limit]

        return self._run(read, "search")


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def _filters(equal: dict[str, Any], before: int | None) -> tuple[str, list[Any]]:
    where = [f"{column} = ?" for column, value in equal.items() if value is not None]
    params = [value for value in equal.values() if value is not None]
    if before is not None:
        where.append("id < ?")
        params.append(before)
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _window_filters(camera, since, until, before, skipped) -> tuple[list[str], list[Any]]:
    where, params = [], []
    for clause, value in (("w.camera = ?", camera), ("w.recorded >= ?", since), ("w.recorded < ?", until),
                          ("w.id < ?", before)):
        if value is not None:
            where.append(clause)
            params.append(value)
    if not skipped:
        where.append("w.analysed = 1")
    return where, params


def _id_span(db: sqlite3.Connection, table: str, column: str, key: str, since: float | None,
             until: float | None) -> tuple[int | None, int | None]:
    """The ids (`key`) of `table`'s rows recorded in [since, until), as an id range (rows are recorded in
    time order)."""
    first = db.execute(f"SELECT min({key}) FROM {table}" + (f" WHERE {column} >= ?" if since is not None else ""),
                       () if since is None else (since,)).fetchone()[0]
    if until is None:
        return first, None
    last = db.execute(f"SELECT max({key}) FROM {table} WHERE {column} < ?", (until,)).fetchone()[0]
    return (first, last) if last is not None and first is not None and first <= last else (None, None)


def _hit(db: sqlite3.Connection, kind: str, row_id: int) -> Hit:
    if kind == "result":
        camera, ts, text, window_id = db.execute("SELECT camera, ts, text, window_id FROM results WHERE id = ?",
                                                 (row_id,)).fetchone()
    elif kind == "alert":
        camera, ts, text, window_id = db.execute(
            "SELECT a.camera, a.ts, a.text, (SELECT w.id FROM windows w WHERE w.camera = a.camera AND w.start = "
            "a.window_start ORDER BY w.id DESC LIMIT 1) FROM alerts a WHERE a.id = ?", (row_id,)).fetchone()
    elif kind == "event":
        camera, ts, text, event_id = db.execute("SELECT camera, opened, story, id FROM events WHERE rowid = ?",
                                                (row_id,)).fetchone()
        return Hit(kind, row_id, camera, ts, text, None, event_id)
    else:
        ts, text, cameras = db.execute("SELECT ts, text, cameras FROM summaries WHERE id = ?", (row_id,)).fetchone()
        camera, window_id = ", ".join(json.loads(cameras)), None
    return Hit(kind, row_id, camera, ts, text, window_id)


def has_events(db: sqlite3.Connection) -> bool:
    """Whether the history file has the events table (events enabled now or once)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone() is not None


def _window_row(row: tuple[Any, ...]) -> WindowRow:
    i, cam, s, e, ch, a, r, fts, rec, regions, zones, trigger = row
    return WindowRow(i, cam, s, e, ch, bool(a), r, tuple(json.loads(fts)), rec,
                     tuple(Region(*box) for box in json.loads(regions or "[]")), frozenset(json.loads(zones or "[]")),
                     trigger)
