"""A bounded, persistent outbox for QoS 1 MQTT messages (SQLite, WAL, synchronous=FULL).

A message is stored before paho sees it and deleted on PUBACK. Past the size limit the most
expendable kind goes first (descriptions first, alerts last); a message that can never be
published goes to `dead_letters` instead of blocking the rest. Row ids never go back, so
"pending after id N" is a stable cursor. Why: docs/design.md.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from daemon.config.mqtt import MAX_PACKET_BYTES
from daemon.errors import PublishError
from daemon.mqtt.messages import message_problem, shorten
from daemon.state.store import Store, migrate

log = logging.getLogger(__name__)


class Kind(str, Enum):
    """What a message is; the order below is the drop order when the outbox is full."""

    DESCRIPTION = "description"
    ANSWER = "answer"
    SNAPSHOT = "snapshot"
    REPLY = "reply"
    SUMMARY = "summary"
    RULE = "rule"
    ALERT = "alert"
    EVENT = "event"  # last: an event's new/update/end (the end carries its story) is dropped after alerts

    @property
    def priority(self) -> int:
        """Lower is dropped first."""
        return list(Kind).index(self)


@dataclass(frozen=True)
class OutboxMessage:
    """A QoS 1 message waiting for the broker's acknowledgement."""

    kind: Kind
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True)
class StoredMessage:
    """An `OutboxMessage` with its row id (send order) and enqueue time."""

    id: int
    kind: Kind
    topic: str
    payload: bytes
    retain: bool
    created: float


# One entry per schema version, applied by `daemon.state.store.migrate`; append, never edit a released one.
# IF NOT EXISTS: files from before versioning already have the table and get version 1 as they are.
OUTBOX_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS outbox (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            kind     TEXT    NOT NULL,
            priority INTEGER NOT NULL,
            topic    TEXT    NOT NULL,
            payload  BLOB    NOT NULL,
            retain   INTEGER NOT NULL,
            created  REAL    NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS outbox_drop_order ON outbox (priority, id)",
    ],
    [
        """CREATE TABLE dead_letters (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            kind     TEXT    NOT NULL,
            topic    TEXT    NOT NULL,
            payload  BLOB    NOT NULL,
            retain   INTEGER NOT NULL,
            created  REAL    NOT NULL,   -- when it was queued
            failed   REAL    NOT NULL,   -- when it was found unpublishable
            reason   TEXT    NOT NULL)""",
    ],
]
DEAD_LETTERS_KEPT = 1000


class Outbox(Store):
    """Thread-safe: `put` runs on producer threads, `pending` and `ack` on the publisher's sender thread."""

    component, migrations, what = "outbox", OUTBOX_MIGRATIONS, "the MQTT outbox"

    def __init__(
        self,
        path: Path | str,
        max_messages: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
        max_payload: int = MAX_PACKET_BYTES,
    ) -> None:
        if max_messages < 1 or max_bytes < 1 or max_payload < 1:
            raise ValueError("outbox limits must be positive")
        super().__init__(path)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_payload = max_payload  # the broker's limit: a larger payload is a dead letter
        self._clock = clock
        self._depth = 0
        self._bytes = 0
        self._dropped: dict[str, int] = {kind.value: 0 for kind in Kind}
        self._dead_letters = 0

    # -- lifecycle (Store: open, close, context manager) ---------------------

    def open(self) -> Outbox:
        """Open (or create) the database and count what is pending from a previous run."""
        super().open()
        if self._depth:
            log.info("outbox %s holds %d unsent messages from a previous run; they go out first",
                     self.path, self._depth)
        return self

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed alert survives a power cut, not only a crash.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        migrate(db, self.component, self.migrations)
        self._depth, self._bytes = _count(db)  # before open() publishes the connection: nobody else reads them yet

    # -- queue -------------------------------------------------------------

    def put(self, message: OutboxMessage) -> int | None:
        """Store a message; returns its row id, or None when it was itself dropped or can never be
        published (then it is a dead letter). PublishError when SQLite cannot take it (disk full)."""
        return self._run(lambda db: self._insert(db, message), "store a message in")

    def dead_letter(self, row: StoredMessage, reason: str) -> None:
        """Move a stored row that paho or the broker refuses for good to the dead letters, so that the
        messages behind it go out; counted and logged once."""
        self._run(lambda db: self._bury(db, row, reason), "move a dead letter in")

    def pending(self, after_id: int = 0, limit: int = 100) -> list[StoredMessage]:
        """Messages with a row id above `after_id`, oldest first."""
        rows = self._run(lambda db: db.execute(
            "SELECT id, kind, topic, payload, retain, created FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall(), "read")
        return [StoredMessage(i, Kind(k), t, bytes(p), bool(r), c) for i, k, t, p, r, c in rows]

    def ack(self, *row_ids: int) -> int:
        """Delete acknowledged messages in one transaction; returns how many were still there
        (a message dropped while in flight is already gone)."""
        return self._run(lambda db: self._delete(db, row_ids), "delete acknowledged messages from")

    # -- metrics -----------------------------------------------------------

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def dropped(self) -> dict[str, int]:
        """Messages dropped since this Outbox was made, by kind."""
        with self._lock:
            return dict(self._dropped)

    @property
    def dead_letters(self) -> int:
        """Messages found unpublishable since this Outbox was made."""
        return self._dead_letters

    def dead_letter_rows(self) -> list[tuple[StoredMessage, float, str]]:
        """The dead letters kept, oldest first: (message, when it failed, why)."""
        rows = self._run(lambda db: db.execute(
            "SELECT id, kind, topic, payload, retain, created, failed, reason FROM dead_letters ORDER BY id"
        ).fetchall(), "read")
        return [(StoredMessage(i, Kind(k), t, bytes(p), bool(r), c), f, why) for i, k, t, p, r, c, f, why in rows]

    # -- internals (under the lock, through Store._run) --------------------

    def _insert(self, db: sqlite3.Connection, message: OutboxMessage) -> int | None:
        size = len(message.payload)
        if size > self.max_bytes:
            self._record_drop(message.kind, message.topic, 0.0, f"it alone exceeds the {self.max_bytes}-byte limit")
            return None
        problem = message_problem(message.topic, message.payload, self.max_payload)
        if problem is not None:
            now = self._clock()
            self._bury(db, StoredMessage(0, message.kind, message.topic, message.payload, message.retain, now),
                       problem)
            return None
        try:
            with db:  # one transaction: the insert and any drops it causes
                db.execute("BEGIN IMMEDIATE")
                row_id = db.execute(
                    "INSERT INTO outbox (kind, priority, topic, payload, retain, created) VALUES (?, ?, ?, ?, ?, ?)",
                    (message.kind.value, message.kind.priority, message.topic, message.payload,
                     int(message.retain), self._clock()),
                ).lastrowid
                self._depth += 1
                self._bytes += size
                dropped_self = self._enforce_limits(db, row_id)
        except sqlite3.Error as exc:
            self._depth, self._bytes = _count(db)  # the transaction was rolled back
            raise PublishError(f"cannot store a {message.kind.value} for {message.topic} in the MQTT outbox "
                               f"{self.path}: {exc}. Check free space in the state directory.") from exc
        return None if dropped_self else row_id

    def _delete(self, db: sqlite3.Connection, row_ids: tuple[int, ...]) -> int:
        gone = freed = 0
        with db:
            db.execute("BEGIN IMMEDIATE")
            for row_id in row_ids:
                # fetchall: a RETURNING statement finishes only once stepped to its end.
                rows = db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row_id,)).fetchall()
                if rows:
                    gone, freed = gone + 1, freed + rows[0][0]
        self._depth -= gone  # only once committed
        self._bytes -= freed
        return gone

    def _enforce_limits(self, db: sqlite3.Connection, new_id: int) -> bool:
        """Drop the most expendable, oldest rows until within limits; True if `new_id` went."""
        dropped_new = False
        while self._depth > self.max_messages or self._bytes > self.max_bytes:
            row_id, kind, topic, size, created = db.execute(
                "SELECT id, kind, topic, LENGTH(payload), created FROM outbox ORDER BY priority, id LIMIT 1"
            ).fetchone()
            db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._depth -= 1
            self._bytes -= size
            dropped_new |= row_id == new_id
            reason = f"the outbox is full ({self.max_messages} messages / {self.max_bytes} bytes)"
            self._record_drop(Kind(kind), topic, self._clock() - created, reason)
        return dropped_new

    def _bury(self, db: sqlite3.Connection, row: StoredMessage, reason: str) -> None:
        """Into the dead letters (row.id 0: it was never stored); out of the outbox if it was there."""
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO dead_letters (kind, topic, payload, retain, created, failed, reason) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", (row.kind.value, row.topic, row.payload, int(row.retain),
                                                            row.created, self._clock(), reason))
                gone = db.execute("DELETE FROM outbox WHERE id = ? RETURNING LENGTH(payload)", (row.id,)).fetchall()
                _trim_dead_letters(db, self.max_bytes)
        except sqlite3.Error as exc:
            self._depth, self._bytes = _count(db)
            raise PublishError(f"cannot move an unpublishable {row.kind.value} to the dead letters of the MQTT "
                               f"outbox {self.path}: {exc}. Check free space in the state directory.") from exc
        if gone:
            self._depth, self._bytes = self._depth - 1, self._bytes - gone[0][0]
        self._dead_letters += 1
        log.warning("outbox: the %s for %s can never be published: %s. Moved it to the dead letters of %s "
                    "(%d since start); the messages behind it go on", row.kind.value, shorten(row.topic), reason,
                    self.path, self._dead_letters)

    def _record_drop(self, kind: Kind, topic: str, age: float, reason: str) -> None:
        self._dropped[kind.value] += 1
        log.warning(
            "outbox: dropped a %s for %s queued %.0f s ago because %s; dropped so far: %s",
            kind.value, topic, age, reason,
            ", ".join(f"{k} {n}" for k, n in self._dropped.items() if n) or "none",
        )


def _trim_dead_letters(db: sqlite3.Connection, max_bytes: int) -> None:
    """Keep the newest DEAD_LETTERS_KEPT dead letters, and at most `max_bytes` of their payloads."""
    db.execute("DELETE FROM dead_letters WHERE id NOT IN (SELECT id FROM dead_letters ORDER BY id DESC LIMIT ?)",
               (DEAD_LETTERS_KEPT,))
    while db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM dead_letters").fetchone()[0] > max_bytes:
        db.execute("DELETE FROM dead_letters WHERE id = (SELECT MIN(id) FROM dead_letters)")


def _count(db: sqlite3.Connection) -> tuple[int, int]:
    return db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()
