"""What the daemon saw and said, in SQLite under the state directory: windows, results, alerts, summaries.

Every row carries the wall-clock time it was recorded; queries and retention use it, never media
time. Threads: one connection behind a lock (WAL lets other connections read). A row meant for MQTT
is recorded unqueued, then marked queued (`mark_queued`), so `daemon.state.recovery` can queue what a
crash left behind, with the same message id. Why these choices: docs/design.md.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from daemon.errors import VlmwatchError
from daemon.state.store import Store, migrate, storage_error
from daemon.types import Alert, Region, Result, Summary, Timings, Window

log = logging.getLogger(__name__)


_PUBLISHED = ("results", "alerts", "summaries")  # tables whose rows also go out over MQTT

# One entry per schema version; each is a list of single statements applied in one transaction.
# Append a new version to change the schema; never edit a released one.
HISTORY_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE windows (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            camera TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL, change REAL,
            analysed INTEGER NOT NULL, reason TEXT NOT NULL,
            frame_ts TEXT NOT NULL,              -- JSON list of the frames' timestamps
            recorded REAL NOT NULL)""",
        "CREATE INDEX windows_by_time ON windows (recorded)",
        "CREATE INDEX windows_by_camera ON windows (camera, recorded)",
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            window_id INTEGER REFERENCES windows (id) ON DELETE SET NULL,
            camera TEXT NOT NULL, prompt_id TEXT NOT NULL, question TEXT NOT NULL,
            window_start REAL, window_end REAL,
            text TEXT NOT NULL, choice TEXT,
            probabilities TEXT,                  -- JSON object choice -> probability
            token_count INTEGER NOT NULL, stop_reason TEXT NOT NULL,
            vit_ms REAL NOT NULL, prefill_ms REAL NOT NULL, decode_ms REAL NOT NULL,
            generated INTEGER NOT NULL, modelled_npu_ms REAL NOT NULL,
            model TEXT NOT NULL, ts REAL NOT NULL)""",
        "CREATE INDEX results_by_time ON results (ts)",
        "CREATE INDEX results_by_prompt ON results (camera, prompt_id, ts)",
        "CREATE INDEX results_by_window ON results (window_id)",
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            camera TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, text TEXT NOT NULL,
            window_start REAL NOT NULL, window_end REAL NOT NULL, probability REAL,
            snapshot_jpeg BLOB, ts REAL NOT NULL)""",
        "CREATE INDEX alerts_by_time ON alerts (ts)",
        "CREATE INDEX alerts_by_camera ON alerts (camera, ts)",
        """CREATE TABLE summaries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL, period_start REAL NOT NULL, period_end REAL NOT NULL, text TEXT NOT NULL,
            counts TEXT NOT NULL,                -- JSON object
            cameras TEXT NOT NULL,               -- JSON list
            ts REAL NOT NULL)""",
        "CREATE INDEX summaries_by_time ON summaries (job, ts)",
    ],
    # The MQTT id of what is published, and whether it is in the outbox yet (see `unqueued`). Rows from
    # before count as queued: they were published, or there was no MQTT.
    [statement for table in _PUBLISHED for statement in (
        f"ALTER TABLE {table} ADD COLUMN message_id TEXT",
        f"ALTER TABLE {table} ADD COLUMN queued INTEGER NOT NULL DEFAULT 1",
        f"CREATE INDEX {table}_unqueued ON {table} (id) WHERE queued = 0")],
    [  # the gate's regions and zones, and external triggers
        "ALTER TABLE windows ADD COLUMN regions TEXT",  # JSON list of [x, y, w, h, area], relative
        "ALTER TABLE windows ADD COLUMN zones TEXT",  # JSON list of zone names
        "ALTER TABLE windows ADD COLUMN \"trigger\" TEXT",
        "ALTER TABLE alerts ADD COLUMN zones TEXT",
        "ALTER TABLE alerts ADD COLUMN \"trigger\" TEXT",
    ],
]

# Table -> its wall-clock column, for retention.
_TIME_COLUMNS = {"windows": "recorded", "results": "ts", "alerts": "ts", "summaries": "ts"}


@dataclass(frozen=True)
class WindowRow:
    """A recorded window: its span and gate decision (frames themselves are not stored)."""

    id: int
    camera: str
    start: float
    end: float
    change: float | None
    analysed: bool
    reason: str
    frame_ts: tuple[float, ...]
    recorded: float
    regions: tuple[Region, ...] = ()
    zones: frozenset[str] = frozenset()
    trigger: str | None = None


@dataclass(frozen=True)
class ResultRow:
    """A stored Result. Only the number of generated tokens is kept, so `result.tokens` is empty."""

    id: int
    window_id: int | None
    token_count: int
    result: Result


@dataclass(frozen=True)
class AlertRow:
    id: int
    alert: Alert


@dataclass(frozen=True)
class SummaryRow:
    id: int
    summary: Summary


@dataclass(frozen=True)
class Unqueued:
    """A recorded result, alert or summary that was meant for MQTT but never reached the outbox."""

    table: str  # results | alerts | summaries
    row_id: int
    message_id: str
    item: Result | Alert | Summary


class History(Store):
    """`History(path).open()` ... `close()`, or `with History(path) as history:`. Thread-safe."""

    component, migrations, what = "history", HISTORY_MIGRATIONS, "the history database"

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA schema_version").fetchone()  # reads the header: a foreign file fails here, unchanged
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect only on a new file, before WAL is set
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        migrate(db, "history", HISTORY_MIGRATIONS)
        if mode != "wal":
            log.warning("history: %s is in %s journal mode, not WAL (does its filesystem support shared memory?); "
                        "readers may briefly block writers", self.path, mode)

    # -- writes --------------------------------------------------------------

    def record_window(self, window: Window, analysed: bool, reason: str, now: float) -> int:
        """`reason`: why it was analysed or skipped (the gate's words); `now`: when, wall clock."""
        return self._insert("windows", {
            "camera": window.camera, "start": window.start, "end": window.end, "change": window.change,
            "analysed": int(analysed), "reason": reason, "frame_ts": json.dumps(window.frame_ts), "recorded": now,
            "regions": json.dumps([[round(v, 5) for v in (r.x, r.y, r.w, r.h, r.area)] for r in window.regions]),
            "zones": json.dumps(sorted(window.zones)), "trigger": window.trigger})

    def mark_window(self, window_id: int, analysed: bool, reason: str) -> None:
        """What became of a recorded window, corrected (an analysis a shutdown cut short)."""
        with self._lock:
            db = self._require_open()
            try:
                db.execute("UPDATE windows SET analysed = ?, reason = ? WHERE id = ?", (int(analysed), reason, window_id))
            except sqlite3.Error as exc:
                raise self._runtime_error("correct a row of windows", exc) from exc

    # `message_id` (record_result, record_alert, record_summary): the row is to be published with that
    # id; it counts as unqueued until `mark_queued`, so that a crash in between loses nothing.

    def record_result(self, window_id: int | None, result: Result, message_id: str | None = None) -> int:
        """`window_id` from record_window, or None for text-only input (summaries)."""
        t = result.timings
        return self._insert("results", {**_publication(message_id),
            "window_id": window_id, "camera": result.camera, "prompt_id": result.prompt_id,
            "question": result.question, "window_start": result.window_start, "window_end": result.window_end,
            "text": result.text, "choice": result.choice,
            "probabilities": None if result.probabilities is None else json.dumps(result.probabilities),
            "token_count": len(result.tokens), "stop_reason": result.stop_reason,
            "vit_ms": t.vit_ms, "prefill_ms": t.prefill_ms, "decode_ms": t.decode_ms, "generated": t.generated,
            "modelled_npu_ms": t.modelled_npu_ms, "model": result.model, "ts": result.ts})

    def record_alert(self, alert: Alert, message_id: str | None = None) -> int:
        return self._insert("alerts", {**_publication(message_id),
            "camera": alert.camera, "rule": alert.rule, "severity": alert.severity, "text": alert.text,
            "window_start": alert.window_start, "window_end": alert.window_end, "probability": alert.probability,
            "snapshot_jpeg": alert.snapshot_jpeg, "ts": alert.ts, "zones": json.dumps(sorted(alert.zones)),
            "trigger": alert.trigger})

    def record_summary(self, summary: Summary, message_id: str | None = None) -> int:
        return self._insert("summaries", {**_publication(message_id),
            "job": summary.job, "period_start": summary.period_start, "period_end": summary.period_end,
            "text": summary.text, "counts": json.dumps(summary.counts), "cameras": json.dumps(list(summary.cameras)),
            "ts": summary.ts})

    def mark_queued(self, table: str, row_id: int) -> None:
        """The row recorded with a message id is in the MQTT outbox now."""
        if table not in _PUBLISHED:
            raise ValueError(f"{table!r} is not one of {', '.join(_PUBLISHED)}")
        with self._lock:
            db = self._require_open()
            try:
                db.execute(f"UPDATE {table} SET queued = 1 WHERE id = ?", (row_id,))
            except sqlite3.Error as exc:
                raise self._runtime_error(f"mark a row of {table} as queued", exc) from exc

    def unqueued(self) -> list[Unqueued]:
        """What was recorded for MQTT but never marked queued (the daemon died in between), oldest first."""
        out = [Unqueued("results", row[0], message_id, _result_row(row).result)
               for *row, message_id in self._query(f"{_RESULT_COLUMNS}, message_id FROM results WHERE queued = 0",
                                                   ())]
        out += [Unqueued("alerts", row[0], row[12], _alert(row[1:12]))
                for row in self._query(f"SELECT id, {_ALERT_COLUMNS}, message_id FROM alerts WHERE queued = 0", ())]
        out += [Unqueued("summaries", row[0], row[8], _summary(row[1:8]))
                for row in self._query(f"SELECT id, {_SUMMARY_COLUMNS}, message_id FROM summaries WHERE queued = 0",
                                       ())]
        return sorted(out, key=lambda u: (u.item.ts, _PUBLISHED.index(u.table), u.row_id))

    def prune(self, now: float, keep_seconds: float) -> int:
        """Delete rows recorded before `now - keep_seconds`; returns how many went."""
        cutoff = now - keep_seconds
        deleted = 0
        with self._lock:
            db = self._require_open()
            try:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    for table, column in _TIME_COLUMNS.items():
                        deleted += db.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,)).rowcount
                if deleted:
                    db.execute("PRAGMA incremental_vacuum").fetchall()  # give freed pages back to the disk
            except sqlite3.Error as exc:
                raise self._runtime_error("prune old history", exc) from exc
        if deleted:
            log.info("history: pruned %d rows recorded before %.0f (keeping %.1f days)",
                     deleted, cutoff, keep_seconds / 86400.0)
        return deleted

    # -- queries: rows with since <= time < until, oldest first ----------------

    def windows(self, since: float, until: float, camera: str | None = None,
                analysed: bool | None = None, limit: int | None = None) -> list[WindowRow]:
        rows = self._select("SELECT id, camera, start, \"end\", change, analysed, reason, frame_ts, recorded, "
                            "regions, zones, \"trigger\" FROM windows", "recorded", since, until,
                            {"camera": camera, "analysed": None if analysed is None else int(analysed)}, limit)
        return [WindowRow(i, cam, s, e, ch, bool(a), r, tuple(json.loads(fts)), rec,
                          tuple(Region(*box) for box in json.loads(regions or "[]")),
                          frozenset(json.loads(zones or "[]")), trigger)
                for i, cam, s, e, ch, a, r, fts, rec, regions, zones, trigger in rows]

    def results(self, since: float, until: float, camera: str | None = None,
                prompt_id: str | None = None, limit: int | None = None) -> list[ResultRow]:
        rows = self._select(f"{_RESULT_COLUMNS} FROM results", "ts", since, until,
                            {"camera": camera, "prompt_id": prompt_id}, limit)
        return [_result_row(row) for row in rows]

    def window_results(self, window_id: int) -> list[ResultRow]:
        """The results of one window, in the order they were recorded."""
        rows = self._query(f"{_RESULT_COLUMNS} FROM results WHERE window_id = ? ORDER BY id", (window_id,))
        return [_result_row(row) for row in rows]

    def alerts(self, since: float, until: float, camera: str | None = None,
               rule: str | None = None, limit: int | None = None) -> list[AlertRow]:
        rows = self._select(f"SELECT id, {_ALERT_COLUMNS} FROM alerts", "ts", since, until,
                            {"camera": camera, "rule": rule}, limit)
        return [AlertRow(row[0], _alert(row[1:])) for row in rows]

    def summaries(self, since: float, until: float, job: str | None = None,
                  limit: int | None = None) -> list[SummaryRow]:
        rows = self._select(f"SELECT id, {_SUMMARY_COLUMNS} FROM summaries", "ts", since, until, {"job": job}, limit)
        return [SummaryRow(row[0], _summary(row[1:])) for row in rows]

    # -- internals -------------------------------------------------------------

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        columns = ", ".join(f'"{column}"' for column in row)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})"
        with self._lock:
            db = self._require_open()
            try:
                return db.execute(sql, tuple(row.values())).lastrowid
            except sqlite3.Error as exc:
                raise self._runtime_error(f"record a row in {table}", exc) from exc

    def _select(self, select: str, time_column: str, since: float, until: float,
                filters: dict[str, Any], limit: int | None) -> list[tuple[Any, ...]]:
        where = [f"{time_column} >= ?", f"{time_column} < ?"]
        params: list[Any] = [since, until]
        for column, value in filters.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"{select} WHERE {' AND '.join(where)} ORDER BY {time_column}, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._query(sql, tuple(params))

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            db = self._require_open()
            try:
                return db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._runtime_error("read history", exc) from exc

    def _require_open(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("history is not open: call open() first")
        return self._db

    def _runtime_error(self, action: str, exc: Exception) -> VlmwatchError:
        """StateError (damaged, unwritable: exit 2) or StorageError (disk full, I/O: exit 1)."""
        return storage_error(exc, f"{action} in the history database", self.path)


_RESULT_COLUMNS = ("SELECT id, window_id, token_count, camera, prompt_id, question, window_start, window_end, ts, "
                   "text, stop_reason, choice, probabilities, vit_ms, prefill_ms, decode_ms, generated, "
                   "modelled_npu_ms, model")  # + FROM results ...
_ALERT_COLUMNS = ("camera, rule, severity, text, ts, window_start, window_end, probability, snapshot_jpeg, zones, "
                  "\"trigger\"")
_SUMMARY_COLUMNS = "job, period_start, period_end, text, ts, counts, cameras"


def _publication(message_id: str | None) -> dict[str, Any]:
    """The publication columns of a new row: with an id it waits for `mark_queued`."""
    return {"message_id": message_id, "queued": int(message_id is None)}


def _alert(row: tuple[Any, ...]) -> Alert:
    *fields, snapshot, zones, trigger = row
    return Alert(*fields, snapshot_jpeg=None if snapshot is None else bytes(snapshot),
                 zones=frozenset(json.loads(zones or "[]")), trigger=trigger)


def _summary(row: tuple[Any, ...]) -> Summary:
    job, period_start, period_end, text, ts, counts, cameras = row
    return Summary(job, period_start, period_end, text, ts, json.loads(counts), tuple(json.loads(cameras)))


def _result_row(row: tuple[Any, ...]) -> ResultRow:
    (row_id, window_id, token_count, camera, prompt_id, question, window_start, window_end, ts,
     text, stop_reason, choice, probabilities, vit_ms, prefill_ms, decode_ms, generated, modelled, model) = row
    result = Result(
        camera=camera, prompt_id=prompt_id, question=question, window_start=window_start, window_end=window_end,
        ts=ts, text=text, stop_reason=stop_reason, choice=choice,
        probabilities=None if probabilities is None else json.loads(probabilities),
        timings=Timings(vit_ms, prefill_ms, decode_ms, generated, modelled), model=model)
    return ResultRow(row_id, window_id, token_count, result)
