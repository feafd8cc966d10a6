"""SQLite files of the daemon's state: one base for opening, migrating and
serialising access, so every store handles a locked or damaged file the same way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from daemon.errors import ConfigError, VlmwatchError

log = logging.getLogger(__name__)


def migrate(db: sqlite3.Connection, component: str, migrations: Sequence[Sequence[str]]) -> int:
    """Bring `component`'s tables to version len(migrations); returns the version found before.

    Safe against another connection migrating at the same time (BEGIN IMMEDIATE,
    version re-read inside the transaction). `db` must be in autocommit mode
    (isolation_level=None). Raises ConfigError when the file is newer than us.
    """
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
        found = row[0] if row else 0
        if found > len(migrations):
            raise ConfigError(
                f"the {component} tables in {_db_path(db)} have schema version {found}, newer than this vlmwatch "
                f"understands ({len(migrations)}). Upgrade vlmwatch, or move the file away to start afresh.")
        for statements in migrations[found:]:
            for statement in statements:
                db.execute(statement)
        db.execute("INSERT INTO schema_version (component, version) VALUES (?, ?) "
                   "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, len(migrations)))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if found < len(migrations):
        log.info("%s: %s tables migrated from schema version %d to %d", _db_path(db), component, found,
                 len(migrations))
    return found


MEMORY = ":memory:"  # a Store path for a database that lives only as long as its connection


class Store:
    """One component's tables in an SQLite file (most share the history file), on one
    connection behind a lock.

    `Store(path).open()` ... `close()`, or `with Store(path) as store:`. A subclass names
    its `component` and `migrations` (and may configure the connection further), and
    reads and writes through `_run`.
    """

    component = ""
    migrations: Sequence[Sequence[str]] = ()
    what = "the database"  # for messages: "cannot open <what> in <path>"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def open(self):
        """Open or create the file and migrate; ConfigError naming the path and the remedy when it cannot."""
        db = None
        try:
            if str(self.path) != MEMORY:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._configure(db)
        except (OSError, sqlite3.Error) as exc:
            if db is not None:
                db.close()
            raise self._open_error(exc) from exc
        except BaseException:
            if db is not None:
                db.close()
            raise
        with self._lock:
            self._db = db
        return self

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute("PRAGMA busy_timeout=5000")
        migrate(db, self.component, self.migrations)

    def _open_error(self, exc: Exception) -> ConfigError:
        return ConfigError(f"cannot open {self.what} in {self.path}: {exc}. Check that state_dir is writable and "
                           "the file is a vlmwatch database.")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, action, verb: str):
        """action(db) under the lock; VlmwatchError with a remedy when SQLite fails."""
        with self._lock:
            if self._db is None:
                raise RuntimeError(f"{self.what} is not open: call open() first")
            try:
                return action(self._db)
            except sqlite3.Error as exc:
                raise VlmwatchError(f"cannot {verb} {self.what} in {self.path}: {exc}. Check free space and "
                                    f"permissions of {self.path.parent}.") from exc


def _db_path(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return row[2] if row and row[2] else "the database"
