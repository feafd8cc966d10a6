"""daemon.state.store: every state file is checked when it is opened, and every SQLite failure gets
the exit code of the one rule (2: a person must act; 1: it may pass), on real SQLite files."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from histories import damage, long_history

from daemon.errors import StateError, StorageError
from daemon.mqtt.outbox import Outbox
from daemon.rules.state import RuleStateStore
from daemon.state.history import History
from daemon.state.store import check_file, storage_error
from daemon.summaries.runner import RunLog
from daemon.video.file import FileProgress
from daemon.video.folder import ProcessedFiles


def filled_history(path: Path) -> Path:
    with History(path) as history:
        long_history(history, time.time() - 6 * 3600, hours=6)
    return path


STORES = {
    "history": History,
    "outbox": Outbox,
    "processed clips": ProcessedFiles,
    "file progress": FileProgress,
    "rule state": RuleStateStore,
    "summary run log": RunLog,
}


@pytest.mark.parametrize("store", STORES.values(), ids=STORES.keys())
def test_every_store_refuses_a_damaged_file_at_open_with_the_mv_command(tmp_path, store):
    path = filled_history(tmp_path / "state.sqlite")  # the rule state and run log share the history file
    damage(path)
    before = path.read_bytes()
    with pytest.raises(StateError) as caught:
        store(path).open()
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert message.startswith(f"cannot open {store.what} {path}: ")
    assert "The file is damaged (or not a vlmwatch database); vlmwatch does not overwrite it" in message
    assert f"Move it aside and start again with a new, empty one: mv {path} {path}.damaged " in message
    assert path.read_bytes() == before  # left as it was, for rescue


def test_the_mv_command_moves_the_database_with_its_wal_and_a_fresh_one_opens(tmp_path):
    path = filled_history(tmp_path / "history.sqlite")
    damage(path)
    (tmp_path / "history.sqlite.damaged").write_text("an earlier damaged copy is not overwritten")
    for suffix in ("-wal", "-shm"):  # what a daemon killed mid-write leaves beside the file
        (tmp_path / f"history.sqlite{suffix}").write_bytes(b"\0" * 32)
    problem = check_file(path)  # what check-config and run print before anything opens the file for writing
    command = problem.split("new, empty one: ", 1)[1].split(" (then", 1)[0]
    assert command == (f"mv {path} {path}.damaged.1 && mv {path}-wal {path}.damaged.1-wal && "
                       f"mv {path}-shm {path}.damaged.1-shm")
    assert f"(then `sqlite3 {path}.damaged.1 .recover` may rescue its rows)" in problem
    subprocess.run(command, shell=True, check=True)
    with History(path) as fresh:
        assert fresh.windows(0, time.time() + 1) == []
    assert (tmp_path / "history.sqlite.damaged").read_text() == "an earlier damaged copy is not overwritten"
    assert sorted(p.name for p in tmp_path.glob("history.sqlite.damaged.1*")) == [
        "history.sqlite.damaged.1", "history.sqlite.damaged.1-shm", "history.sqlite.damaged.1-wal"]


def test_the_command_given_when_a_store_opens_a_damaged_file_works_too(tmp_path):
    path = filled_history(tmp_path / "outbox.sqlite")
    damage(path)
    with pytest.raises(StateError) as caught:
        Outbox(path).open()
    command = str(caught.value).split("new, empty one: ", 1)[1].split(" (then", 1)[0]
    subprocess.run(command, shell=True, check=True)
    with Outbox(path) as fresh:
        assert fresh.depth == 0


def test_check_file_finds_damage_read_only_and_accepts_a_missing_or_intact_file(tmp_path):
    path = filled_history(tmp_path / "history.sqlite")
    assert check_file(path) is None
    assert check_file(tmp_path / "not-yet.sqlite") is None
    damage(path)
    before = path.read_bytes()
    problem = check_file(path)
    assert problem.startswith(f"the state file {path}: ") and f": mv {path} {path}.damaged " in problem
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()  # read-only: not even a WAL file was made


def test_a_full_disk_while_running_is_a_storage_error_that_may_pass(tmp_path):
    history = History(tmp_path / "history.sqlite").open()
    try:
        with history._lock:  # SQLite's own way to make a database full: a page limit on this connection
            pages = history._db.execute("PRAGMA page_count").fetchone()[0]
            history._db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StorageError) as caught:
            long_history(history, time.time(), hours=1)
    finally:
        history.close()
    assert caught.value.exit_code == 1
    assert str(caught.value).endswith(f"database or disk is full. The disk holding {tmp_path} is full: free some "
                                      "space; vlmwatch goes on when it is restarted.")


def locked_error(path: Path) -> sqlite3.Error:
    """A real SQLITE_BUSY: a write while another connection holds an exclusive lock."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        other.close()
    raise AssertionError("SQLite did not report the lock")


def test_a_lock_held_by_another_process_is_transient_while_running_but_needs_a_person_at_start(tmp_path):
    path = filled_history(tmp_path / "history.sqlite")
    error = locked_error(path)
    running = storage_error(error, "record a row in windows in the history database", path)
    starting = storage_error(error, "open the history database", path, opening=True)
    assert (type(running), running.exit_code, type(starting), starting.exit_code) == (StorageError, 1, StateError, 2)
    assert str(starting) == (f"cannot open the history database {path}: database is locked. Another process holds "
                             "a lock on it: is a second vlmwatch running with the same state_dir? Stop it, or give "
                             "this one its own state_dir.")


def test_a_file_that_is_not_a_database_and_an_unwritable_place_need_a_person(tmp_path):
    foreign = tmp_path / "processed.sqlite"
    foreign.write_bytes(b"my holiday video, not a database\n" * 300)
    with pytest.raises(StateError, match=r"file is not a database\. The file is damaged"):
        ProcessedFiles(foreign).open()
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StateError, match=rf"Check that {blocker} exists and is writable") as caught:
        Outbox(blocker / "outbox.sqlite").open()
    assert caught.value.exit_code == 2
