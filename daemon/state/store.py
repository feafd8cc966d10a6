"""SQLite files of the daemon's state: one base for opening, migrating and serialising access.

A damaged file is found when opened (`quick_check`) and never overwritten: the error names the `mv`
command that moves it aside (`StateError`, exit 2). A failed write is a `StateError` when the file is
damaged or unwritable, a `StorageError` (exit 1) for disk full or an I/O error.
"""

from __future__ import annotations

import logging
import shlex
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from daemon.errors import StateError, StorageError, VlmwatchError

log = logging.getLogger(__name__)


def migrate(db: sqlite3.Connection, component: str, migrations: Sequence[Sequence[str]]) -> int:
    """Bring `component`'s tables to version len(migrations); returns the version found before.

    Safe against another connection migrating at the same time (BEGIN IMMEDIATE,
    version re-read inside the transaction). `db` must be in autocommit mode
    (isolation_level=None). Raises StateError when the file is newer than us.
    """
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT version FROM schema_version WHERE component = ?", (component,)).fetchone()
        found = row[0] if row else 0
        if found > len(migrations):
            raise StateError(
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
        """Open or create the file, check it is intact, migrate. StateError naming the path and the
        remedy (for a damaged file: the `mv` command) when it cannot; StorageError when the disk is full."""
        db = None
        try:
            if str(self.path) != MEMORY:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            problem = None if str(self.path) == MEMORY or _verified(self.path) else quick_check(db)
            if problem is not None:
                db.close()  # first: closing may fold a -wal file into the database, which changes the mv command
                db = None
                raise StateError(damaged_message(f"cannot open {self.what} {self.path}", self.path, problem))
            _remember_intact(self.path, problem)
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

    def _open_error(self, exc: Exception) -> VlmwatchError:
        return storage_error(exc, f"open {self.what}", self.path, opening=True)

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
                raise storage_error(exc, f"{verb} {self.what}", self.path) from exc


def _db_path(db: sqlite3.Connection) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return row[2] if row and row[2] else "the database"


# ---------------------------------------------------------------- damage and failures

# Primary SQLite result codes (the low byte of an extended code).
_DAMAGED = {11: "SQLITE_CORRUPT", 26: "SQLITE_NOTADB"}
_UNWRITABLE = {3: "SQLITE_PERM", 8: "SQLITE_READONLY", 14: "SQLITE_CANTOPEN", 23: "SQLITE_AUTH"}
_LOCKED = {5: "SQLITE_BUSY", 6: "SQLITE_LOCKED"}
_FULL, _IOERR = 13, 10


def quick_check(db: sqlite3.Connection) -> str | None:
    """None if SQLite's quick_check finds the open file intact, else what it found (first lines).

    quick_check reads every page and checks the b-tree structure (not index contents):
    garbage over any page is found here rather than by the first write that touches it.
    """
    try:
        rows = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.DatabaseError as exc:
        if _code(exc) in _DAMAGED:
            return str(exc)
        raise
    return None if rows == ["ok"] else "quick_check found " + "; ".join(str(r) for r in rows)


def check_file(path: Path | str, what: str = "the state file") -> str | None:
    """For `check-config`: a one-line problem if the existing SQLite file is damaged, else None (also
    when it does not exist yet). Read-only; an idle file is opened immutable, so no -wal/-shm files
    are left behind owned by whoever ran the check."""
    path = Path(path)
    if not path.is_file():
        return None
    mode = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open {what} {path}: {exc}"
    try:
        problem = quick_check(db)
    except sqlite3.Error as exc:  # not damage: unreadable (permissions), or a WAL file we may not read
        return None if _code(exc) in _LOCKED else f"cannot read {what} {path}: {exc}"
    finally:
        db.close()
    _remember_intact(path, problem)
    return None if problem is None else damaged_message(f"{what} {path}", path, problem)


# Files this process found intact, by identity (device, inode, size, mtime): quick_check reads every
# page (0.7 s for a 125 MB history with a warm cache, 6 s cold), and the history file is opened by
# several stores (history, rule state, summary run log) right after check-config's own check. In WAL
# mode those writes go to the -wal file; a checkpoint or any other change gives a new identity.
_intact: set[tuple[int, int, int, int]] = set()
_intact_lock = threading.Lock()


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _verified(path: Path) -> bool:
    key = _identity(path)
    with _intact_lock:
        return key is not None and key in _intact


def _remember_intact(path: Path, problem: str | None) -> None:
    key = _identity(path)
    if problem is None and key is not None and key[2] > 0:  # an empty new file proves nothing
        with _intact_lock:
            _intact.add(key)


def move_aside_command(path: Path | str) -> tuple[str, Path]:
    """The shell command that moves a damaged database (and its -wal/-shm files) out of the way,
    and where the database goes (`x.damaged`, or `x.damaged.N` if that is taken).

    The moved files keep their pairing (`x.damaged` with `x.damaged-wal`), so
    `sqlite3 x.damaged .recover` can still rescue rows from both.
    """
    path = Path(path)
    target = path.with_name(path.name + ".damaged")
    n = 1
    while target.exists():
        target, n = path.with_name(f"{path.name}.damaged.{n}"), n + 1
    moves = [(path, target)]
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            moves.append((companion, target.with_name(target.name + suffix)))
    return " && ".join(f"mv {shlex.quote(str(a))} {shlex.quote(str(b))}" for a, b in moves), target


def damaged_message(subject: str, path: Path | str, problem: str) -> str:
    """`subject` ("cannot open the history database /x/history.sqlite"), what SQLite said, and the remedy."""
    command, target = move_aside_command(path)
    return (f"{subject}: {problem}. The file is damaged (or not a vlmwatch database); vlmwatch does not overwrite "
            f"it, and restarting will not help. Move it aside and start again with a new, empty one: {command} "
            f"(then `sqlite3 {shlex.quote(str(target))} .recover` may rescue its rows).")


def storage_error(exc: BaseException, doing: str, path: Path | str, *, opening: bool = False) -> VlmwatchError:
    """The user-facing error for SQLite (or the file system) failing on `path` while trying `doing`
    ("open the history database", "record a row in windows of ..."): StateError when a person must
    act (damaged, unwritable, in use by another vlmwatch at start), StorageError when it may pass."""
    path = Path(path)
    code = _code(exc)
    cannot = f"cannot {doing} {path}: {exc}"
    if code in _DAMAGED:
        return StateError(damaged_message(f"cannot {doing} {path}", path, str(exc)))
    if code == _FULL:
        return StorageError(f"{cannot}. The disk holding {path.parent} is full: free some space; "
                            "vlmwatch goes on when it is restarted.")
    if code == _IOERR:
        return StorageError(f"{cannot}. The disk reported an I/O error: check it (dmesg, smartctl) and free space "
                            f"in {path.parent}.")
    if code in _LOCKED:
        text = (f"{cannot}. Another process holds a lock on it: is a second vlmwatch running with the same "
                "state_dir? Stop it, or give this one its own state_dir.")
        return StateError(text) if opening else StorageError(text)
    if code in _UNWRITABLE or isinstance(exc, OSError):
        return StateError(f"{cannot}. Check that {path.parent} exists and is writable by the user vlmwatch runs "
                          "as (under systemd, StateDirectory= creates /var/lib/vlmwatch), or set state_dir to a "
                          "writable directory.")
    return StorageError(f"{cannot}. Check free space and permissions of {path.parent}.")


def _code(exc: BaseException) -> int | None:
    """The primary SQLite result code of an sqlite3 exception (Python 3.11+; else guessed from the text)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    if not isinstance(exc, sqlite3.Error):
        return None
    text = str(exc).lower()
    for needle, guessed in (("malformed", 11), ("not a database", 26), ("full", 13), ("disk i/o", 10),
                            ("readonly", 8), ("unable to open", 14), ("locked", 5)):
        if needle in text:
            return guessed
    return None
