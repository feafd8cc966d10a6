"""The SQLite outbox: order, persistence, bounds and drop order."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from daemon.errors import PublishError, StateError
from daemon.mqtt.outbox import OUTBOX_MIGRATIONS, Kind, Outbox, OutboxMessage


def message(kind: Kind = Kind.DESCRIPTION, n: int = 0, size: int = 10) -> OutboxMessage:
    return OutboxMessage(kind, f"vlmwatch/cam/{kind.value}/{n}", bytes([n % 256]) * size, kind != Kind.ALERT)


def test_pending_is_oldest_first_and_ack_deletes(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        ids = [box.put(message(Kind.ALERT if n % 2 else Kind.DESCRIPTION, n)) for n in range(5)]
        assert [m.id for m in box.pending()] == ids
        assert [m.id for m in box.pending(after_id=ids[1], limit=2)] == ids[2:4]
        first = box.pending(limit=1)[0]
        assert (first.kind, first.topic, first.payload, first.retain) == (Kind.DESCRIPTION, "vlmwatch/cam/description/0",
                                                                           b"\x00" * 10, True)
        assert box.ack(ids[0]) == 1 and box.ack(ids[0]) == 0
        assert (box.depth, box.size_bytes) == (4, 40)


def test_survives_restart_and_never_reuses_ids(tmp_path: Path) -> None:
    path = tmp_path / "state" / "o.sqlite"  # parent directory is created
    with Outbox(path) as box:
        a, b = box.put(message(n=1)), box.put(message(n=2))
        box.ack(b)  # the highest id is gone; a reused id would hide behind the sender's cursor
    with Outbox(path) as box:
        assert [m.id for m in box.pending()] == [a]
        assert (box.depth, box.size_bytes) == (1, 10)
        assert box.put(message(n=3)) > b


def test_uses_wal(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        box.put(message())
        mode = sqlite3.connect(tmp_path / "o.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_full_outbox_drops_descriptions_first_and_alerts_last(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="daemon.mqtt.outbox")
    with Outbox(tmp_path / "o.sqlite", max_messages=4) as box:
        box.put(message(Kind.ALERT, 1))
        box.put(message(Kind.DESCRIPTION, 2))
        box.put(message(Kind.SUMMARY, 3))
        box.put(message(Kind.DESCRIPTION, 4))
        box.put(message(Kind.ALERT, 5))  # over by one: the oldest description goes
        assert [m.topic for m in box.pending()] == ["vlmwatch/cam/alert/1", "vlmwatch/cam/summary/3",
                                                     "vlmwatch/cam/description/4", "vlmwatch/cam/alert/5"]
        box.put(message(Kind.ALERT, 6))  # the other description
        box.put(message(Kind.ALERT, 7))  # then the summary
        box.put(message(Kind.ALERT, 8))  # only alerts left: the oldest alert
        assert [m.topic.rsplit("/", 1)[1] for m in box.pending()] == ["5", "6", "7", "8"]
        assert box.put(message(Kind.DESCRIPTION, 9)) is None  # a new description loses against alerts
        assert box.dropped == {**{k.value: 0 for k in Kind}, "description": 3, "summary": 1, "alert": 1}
    drops = [r for r in caplog.records if "dropped a" in r.getMessage()]
    assert len(drops) == 5
    assert "dropped a description for vlmwatch/cam/description/2" in drops[0].getMessage()
    assert "the outbox is full (4 messages" in drops[0].getMessage()


def test_byte_limit_and_oversized_message(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_bytes=100) as box:
        box.put(message(Kind.SNAPSHOT, 1, size=60))
        box.put(message(Kind.ALERT, 2, size=60))  # 120 bytes: the snapshot goes
        assert [m.kind for m in box.pending()] == [Kind.ALERT]
        assert box.put(message(Kind.ALERT, 3, size=101)) is None  # alone too big: dropped, nothing else
        assert [m.kind for m in box.pending()] == [Kind.ALERT]
        assert box.dropped["snapshot"] == 1 and box.dropped["alert"] == 1


def test_concurrent_put_and_ack(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        def produce(k: int) -> None:
            for n in range(50):
                box.put(message(Kind.ALERT, k * 100 + n))

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        acked, deadline = 0, time.monotonic() + 30
        while acked < 150:
            assert time.monotonic() < deadline, f"only {acked} of 150 messages acknowledged after 30 s"
            acked += box.ack(*(m.id for m in box.pending(limit=20)))
        for t in threads:
            t.join()
        assert (box.depth, box.size_bytes, box.pending()) == (0, 0, [])


def test_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"cannot open the MQTT outbox .*o\.sqlite.*Move it aside.*: mv "):
        Outbox(path).open()


def test_use_before_open_is_a_bug(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        Outbox(tmp_path / "o.sqlite").put(message())


def test_a_file_from_before_schema_versions_keeps_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
                             priority INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
                             retain INTEGER NOT NULL, created REAL NOT NULL);
        CREATE INDEX outbox_drop_order ON outbox (priority, id);
        INSERT INTO outbox (kind, priority, topic, payload, retain, created)
            VALUES ('alert', 6, 'vlmwatch/cam/alert', x'7b7d', 0, 1.0);
    """)
    old.close()
    with Outbox(path) as box:
        assert [(m.kind, m.payload) for m in box.pending()] == [(Kind.ALERT, b"{}")]
        assert (box.depth, box.size_bytes) == (1, 2)
    versions = sqlite3.connect(path).execute("SELECT component, version FROM schema_version").fetchall()
    assert versions == [("outbox", len(OUTBOX_MIGRATIONS))]  # versioned, then migrated to the latest


def test_a_full_disk_is_a_publish_error_and_counts_stay_right(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        box.put(message(n=1))
        pages = box._run(lambda db: db.execute("PRAGMA page_count").fetchone()[0], "read")
        box._run(lambda db: db.execute(f"PRAGMA max_page_count = {pages}"), "limit")  # SQLITE_FULL from here
        with pytest.raises(PublishError, match=r"cannot store a snapshot for vlmwatch/cam/snapshot/2 in the MQTT "
                                               r"outbox .*o\.sqlite: .*full.*Check free space"):
            box.put(message(Kind.SNAPSHOT, 2, size=100_000))
        assert (box.depth, box.size_bytes, len(box.pending())) == (1, 10, 1)


# -- messages that can never be published ----------------------------------------------------

@pytest.mark.parametrize("topic, payload, reason", [
    ("vlmwatch/" + "a" * 65_522 + "/reply", b"{}", "its topic is not allowed: it is 65,537 bytes long; "
                                                    "MQTT allows at most 65,535"),
    ("vlmwatch/door\n/alert", b"{}", "its topic is not allowed: it contains the character U+000A"),
    ("vlmwatch/+/alert", b"{}", "its topic is not allowed: it contains a wildcard"),
    ("vlmwatch/cam/snapshot", b"x" * 2000, "its payload is 2,000 bytes; mqtt.max_payload_bytes is 1,024"),
])
def test_an_unpublishable_message_is_a_dead_letter_before_it_is_stored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, topic: str, payload: bytes, reason: str) -> None:
    caplog.set_level(logging.WARNING, logger="daemon.mqtt.outbox")
    with Outbox(tmp_path / "o.sqlite", max_payload=1024) as box:
        first = box.put(message(Kind.ALERT, 1))
        assert box.put(OutboxMessage(Kind.ALERT, topic, payload, False)) is None
        last = box.put(message(Kind.ALERT, 2))
        assert [m.id for m in box.pending()] == [first, last]  # nothing in between blocks the rest
        assert (box.depth, box.dead_letters) == (2, 1)
        [(dead, failed, why)] = box.dead_letter_rows()
        assert (dead.topic, dead.payload, dead.kind) == (topic, payload, Kind.ALERT) and why.startswith(reason)
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("outbox: the alert for ") and reason in line
    assert len(line) < 600  # the 65,537-byte topic is cut short in the log


def test_a_stored_row_moves_to_the_dead_letters_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        ids = [box.put(message(Kind.ALERT, n)) for n in range(3)]
        box.dead_letter(box.pending()[1], "paho refused it: Publish topic is too long.")
        assert [m.id for m in box.pending()] == [ids[0], ids[2]] and (box.depth, box.size_bytes) == (2, 20)
    with Outbox(path) as box:
        assert [m.id for m in box.pending()] == [ids[0], ids[2]]
        [(dead, _, why)] = box.dead_letter_rows()
        assert dead.topic == "vlmwatch/cam/alert/1" and why == "paho refused it: Publish topic is too long."
        assert box.dead_letters == 0  # the count is since start, for the metric


def test_dead_letters_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import daemon.mqtt.outbox as outbox

    monkeypatch.setattr(outbox, "DEAD_LETTERS_KEPT", 5)
    with Outbox(tmp_path / "o.sqlite", max_bytes=64 * 1024, max_payload=1024) as box:
        for n in range(8):
            box.put(OutboxMessage(Kind.SNAPSHOT, f"vlmwatch/cam{n}/snapshot", b"x" * 2000, True))
        assert [d.topic for d, _, _ in box.dead_letter_rows()] == [f"vlmwatch/cam{n}/snapshot" for n in range(3, 8)]
        for n in range(8, 12):  # 30,000 bytes each: the byte limit keeps two
            box.put(OutboxMessage(Kind.SNAPSHOT, f"vlmwatch/cam{n}/snapshot", b"x" * 30_000, True))
        assert [d.topic for d, _, _ in box.dead_letter_rows()] == ["vlmwatch/cam10/snapshot", "vlmwatch/cam11/snapshot"]
        assert box.dead_letters == 12
