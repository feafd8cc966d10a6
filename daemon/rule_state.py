"""Rule state (consecutive counts, last fired, ON/OFF) in the history database, so a restart
neither forgets a cooldown nor re-fires a debounced rule.

The store has its own connection to the history file (WAL lets it share the
file with `History`) and its own `rules` schema version through `migrate`.
Only the entries an evaluation changed are written, in one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path

from daemon.errors import ConfigError, VlmwatchError
from daemon.history import migrate
from daemon.rules import RuleStatus

RULE_STATE_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE rule_state (
            rule TEXT NOT NULL, camera TEXT NOT NULL,
            count INTEGER NOT NULL,              -- consecutive triggering windows
            last_fired REAL,                     -- POSIX seconds, NULL: never
            is_on INTEGER NOT NULL,              -- the binary_sensor
            updated REAL NOT NULL,
            PRIMARY KEY (rule, camera))""",
    ],
]


class RuleStateStore:
    """`RuleStateStore(path).open()`, `load()`, `save(changed, now)`, `close()`. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> RuleStateStore:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the rule state in {self.path}: {exc}. Check that state_dir is writable.") from None
        try:
            db.execute("PRAGMA busy_timeout=5000")
            migrate(db, "rules", RULE_STATE_MIGRATIONS)
        except sqlite3.Error as exc:
            db.close()
            raise ConfigError(f"cannot open the rule state in {self.path}: {exc}. Check that state_dir is writable.") from None
        except BaseException:
            db.close()
            raise
        self._db = db
        return self

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> RuleStateStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> dict[tuple[str, str], RuleStatus]:
        rows = self._run(lambda db: db.execute("SELECT rule, camera, count, last_fired, is_on FROM rule_state").fetchall(),
                         "read")
        return {(rule, camera): RuleStatus(count, last_fired, bool(on)) for rule, camera, count, last_fired, on in rows}

    def save(self, changed: Mapping[tuple[str, str], RuleStatus], now: float) -> None:
        if not changed:
            return
        rows = [(rule, camera, s.count, s.last_fired, int(s.on), now) for (rule, camera), s in changed.items()]

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT INTO rule_state (rule, camera, count, last_fired, is_on, updated) "
                               "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rule, camera) DO UPDATE SET "
                               "count = excluded.count, last_fired = excluded.last_fired, is_on = excluded.is_on, "
                               "updated = excluded.updated", rows)

        self._run(write, "write")

    def _run(self, action, verb: str):
        with self._lock:
            if self._db is None:
                raise RuntimeError("rule state is not open: call open() first")
            try:
                return action(self._db)
            except sqlite3.Error as exc:
                raise VlmwatchError(f"cannot {verb} the rule state in {self.path}: {exc}. Check free space and "
                                    f"permissions of {self.path.parent}.") from exc
