"""daemon.history on real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from daemon.config.daemon import RetentionSettings
from daemon.errors import StateError
from daemon.state.history import HISTORY_MIGRATIONS, History
from daemon.types import Alert, Frame, Region, Result, Summary, Timings, Window

IMAGE = np.zeros((2, 2, 3), np.uint8)


def window(camera: str = "front", start: float = 100.0, change: float | None = 0.05) -> Window:
    frames = tuple(Frame(camera, start + i, i, IMAGE) for i in range(8))
    return Window(camera, start, start + 8.0, frames, change)


def result(camera: str = "front", prompt_id: str = "description", ts: float = 1000.0, **kw) -> Result:
    return Result(camera=camera, prompt_id=prompt_id, question="What happens?", window_start=100.0,
                  window_end=108.0, ts=ts, **kw)


@pytest.fixture
def history(tmp_path):
    with History(tmp_path / "state" / "vlmwatch.db") as h:
        yield h


def test_round_trips(history):
    w = window(change=None)
    window_id = history.record_window(w, analysed=False, reason="unchanged (0.001 < 0.02)", now=1000.0)
    [row] = history.windows(0, 2000)
    assert row.id == window_id
    assert (row.camera, row.start, row.end, row.change) == ("front", 100.0, 108.0, None)
    assert (row.analysed, row.reason, row.recorded) == (False, "unchanged (0.001 < 0.02)", 1000.0)
    assert row.frame_ts == tuple(100.0 + i for i in range(8))

    described = result(text="A person walks by.", tokens=(5, 6, 7), stop_reason="stop", model="internvl3-2b",
                       timings=Timings(vit_ms=1.5, prefill_ms=2.5, decode_ms=3.5, generated=3, modelled_npu_ms=99.0))
    chosen = result(prompt_id="person", ts=1001.0, stop_reason="choice", choice="yes",
                    probabilities={"yes": 0.75, "no": 0.25})
    text_only = Result(camera="", prompt_id="summary:daily", question="Summarise", window_start=None,
                       window_end=None, ts=1002.0, text="Quiet day.")
    ids = [history.record_result(window_id, described), history.record_result(window_id, chosen),
           history.record_result(None, text_only)]
    rows = history.results(0, 2000)
    assert [r.id for r in rows] == ids
    assert rows[0].window_id == window_id and rows[0].token_count == 3
    assert rows[0].result == replace(described, tokens=())  # only the count is stored
    assert rows[1].result == chosen
    assert rows[2].window_id is None and rows[2].result == text_only
    assert [r.result.prompt_id for r in history.window_results(window_id)] == ["description", "person"]

    alert = Alert("front", "person_at_door", "warning", "Someone is at the door", 1003.0, 100.0, 108.0,
                  probability=0.9, snapshot_jpeg=b"\xff\xd8jpeg\xff\xd9")
    plain = Alert("back", "smoke", "critical", "Smoke", 1004.0, 100.0, 108.0)
    alert_ids = [history.record_alert(alert), history.record_alert(plain)]
    assert [(r.id, r.alert) for r in history.alerts(0, 2000)] == list(zip(alert_ids, [alert, plain]))

    summary = Summary("daily", 0.0, 86400.0, "Two people came by.", 86401.0, counts={"alerts": 2, "windows": 9},
                      cameras=("front", "back"))
    summary_id = history.record_summary(summary)
    assert [(r.id, r.summary) for r in history.summaries(0, 1e6)] == [(summary_id, summary)]


def test_queries_filter_and_order(history):
    # Recorded out of order on purpose: queries sort by wall-clock time, not insertion.
    for now, camera, analysed in [(30, "front", True), (10, "back", False), (20, "front", False), (40, "back", True)]:
        history.record_window(window(camera), analysed, "changed" if analysed else "unchanged", now)
    for ts, camera, prompt in [(35, "front", "person"), (15, "front", "description"), (25, "back", "person"),
                               (45, "front", "person")]:
        history.record_result(None, result(camera, prompt, ts))
    for ts, camera, rule in [(12, "front", "a"), (22, "back", "a"), (32, "front", "b")]:
        history.record_alert(Alert(camera, rule, "info", "x", ts, 0.0, 8.0))
    for ts, job in [(5, "hourly"), (15, "daily"), (25, "hourly")]:
        history.record_summary(Summary(job, 0.0, 1.0, "s", ts))

    assert [r.recorded for r in history.windows(10, 40)] == [10, 20, 30]  # since inclusive, until exclusive
    assert [r.recorded for r in history.windows(0, 100, camera="front")] == [20, 30]
    assert [r.recorded for r in history.windows(0, 100, analysed=True)] == [30, 40]
    assert [r.recorded for r in history.windows(0, 100, limit=2)] == [10, 20]
    assert [r.result.ts for r in history.results(0, 100, camera="front", prompt_id="person")] == [35, 45]
    assert [r.result.ts for r in history.results(20, 40)] == [25, 35]
    assert [r.alert.ts for r in history.alerts(0, 100, camera="front")] == [12, 32]
    assert [r.alert.ts for r in history.alerts(0, 100, rule="a")] == [12, 22]
    assert [r.summary.ts for r in history.summaries(0, 100, job="hourly")] == [5, 25]
    assert history.windows(1000, 2000) == []


def test_prune_keeps_what_is_recent(history):
    old = history.record_window(window(), True, "changed", now=100.0)
    new = history.record_window(window(), True, "changed", now=900.0)
    history.record_result(old, result(ts=101.0))
    kept = history.record_result(old, result(ts=500.0))  # a result may outlive its window
    history.record_result(new, result(ts=901.0))
    history.record_alert(Alert("front", "r", "info", "x", 50.0, 0.0, 8.0))
    history.record_summary(Summary("daily", 0.0, 1.0, "s", 60.0))
    history.record_summary(Summary("daily", 0.0, 1.0, "s", 950.0))

    assert history.prune(now=1000.0, keep_seconds=600.0) == 4  # cutoff 400: 1 window, 1 result, 1 alert, 1 summary
    assert [w.id for w in history.windows(0, 2000)] == [new]
    rows = history.results(0, 2000)
    assert [(r.window_id, r.result.ts) for r in rows] == [(None, 500.0), (new, 901.0)]
    assert rows[0].id == kept
    assert history.alerts(0, 2000) == []
    assert [s.summary.ts for s in history.summaries(0, 2000)] == [950.0]
    assert history.prune(now=1000.0, keep_seconds=600.0) == 0


def test_wal_and_schema_version(tmp_path):
    path = tmp_path / "vlmwatch.db"
    with History(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental: prune gives space back
        assert db.execute("SELECT component, version FROM schema_version").fetchall() == [
            ("history", len(HISTORY_MIGRATIONS))]
    with History(path) as h:  # reopening migrates nothing and keeps the rows
        h.record_window(window(), True, "changed", now=1.0)
    with History(path) as h:
        assert len(h.windows(0, 10)) == 1


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "vlmwatch.db"
    with History(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99 WHERE component = 'history'")
    with pytest.raises(StateError, match=rf"schema version 99, newer than this vlmwatch understands "
                                          rf"\({len(HISTORY_MIGRATIONS)}\)"):
        History(path).open()


def test_a_first_version_history_gains_regions_zones_and_triggers_and_keeps_its_rows(tmp_path):
    path = tmp_path / "vlmwatch.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        for statement in HISTORY_MIGRATIONS[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES ('history', 1)")
        db.execute("INSERT INTO windows (camera, start, \"end\", change, analysed, reason, frame_ts, recorded) "
                   "VALUES ('cam', 0, 8, 0.5, 1, 'change 0.500 >= 0.010', '[]', 1.0)")
    region = Region(0.25, 0.5, 0.125, 0.25, 0.01)
    with History(path) as h:
        old = h.windows(0, 10)[0]
        assert (old.reason, old.regions, old.zones, old.trigger) == ("change 0.500 >= 0.010", (), frozenset(), None)
        new = replace(window(), regions=(region,), zones=frozenset({"porch"}), trigger="frigate person")
        h.record_window(new, True, "trigger: frigate person", now=2.0)
        h.record_alert(Alert("cam", "door", "warning", "text", 2.0, 0.0, 8.0, zones=frozenset({"porch"}),
                             trigger="frigate person"))
        row = h.windows(1.5, 10)[0]
        assert (row.regions, row.zones, row.trigger) == ((region,), frozenset({"porch"}), "frigate person")
        alert = h.alerts(0, 10)[0].alert
        assert (alert.zones, alert.trigger) == (frozenset({"porch"}), "frigate person")


def test_threads_write_concurrently(tmp_path):
    path = tmp_path / "vlmwatch.db"
    per_thread = 150
    with History(path) as shared, History(path) as second_connection:
        start = threading.Barrier(3, timeout=10)
        errors: list[BaseException] = []

        def write(h: History, camera: str) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    window_id = h.record_window(window(camera), True, "changed", now=float(i))
                    h.record_result(window_id, result(camera, ts=float(i)))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(h, cam), name=f"writer-{cam}")
                   for h, cam in [(shared, "a"), (shared, "b"), (second_connection, "c")]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        for camera in "abc":
            windows = shared.windows(0, per_thread, camera=camera)
            assert len(windows) == per_thread
            results = shared.results(0, per_thread, camera=camera)
            assert [r.window_id for r in results] == [w.id for w in windows]


def test_a_corrupt_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "vlmwatch.db"
    garbage = b"this is not a database, but it is somebody's file\n" * 200
    path.write_bytes(garbage)
    with pytest.raises(StateError) as caught:
        History(path).open()
    message = str(caught.value)
    assert message.startswith(f"cannot open the history database {path}: file is not a database. ")
    assert f"Move it aside and start again with a new, empty one: mv {path} {path}.damaged " in message
    assert caught.value.exit_code == 2
    assert path.read_bytes() == garbage


def test_an_unwritable_location_is_reported(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(StateError, match=rf"cannot open the history database {blocker}/vlmwatch.db: .*"
                                          rf"Check that {blocker} exists and is writable .* set state_dir"):
        History(blocker / "vlmwatch.db").open()


def test_use_before_open_is_a_bug(tmp_path):
    with pytest.raises(RuntimeError, match="call open"):
        History(tmp_path / "x.db").windows(0, 1)


def test_retention_settings():
    assert RetentionSettings().days == 30
    assert RetentionSettings(days=0.5).keep_seconds == 43200.0
    assert RetentionSettings.model_fields["days"].description
    with pytest.raises(ValidationError):
        RetentionSettings(days=0)
    with pytest.raises(ValidationError):
        RetentionSettings.model_validate({"dayz": 3})
