"""An alert recorded in history but killed before it reached the MQTT outbox (a separate file) is
queued at the next start, with the id it was recorded with: the real daemon, SIGKILLed between
`record_alert` and `publish_alert`, and mosquitto."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from daemon.cli import main
from daemon.state.history import HISTORY_MIGRATIONS, History
from daemon.state.recovery import queue_unqueued
from daemon.types import Alert, Result, Summary

ROOT = Path(__file__).parent.parent
T0 = 1_750_000_000.0

# The daemon as `vlmwatch run`, except that publishing an alert kills it on the spot (SIGKILL: no
# cleanup, no flush), which is the moment the report lost an alert.
KILLED_WHILE_PUBLISHING = """
import os, signal, sys
from daemon.mqtt.publisher import Publisher

def die(self, alert, message_id=None):
    os.kill(os.getpid(), signal.SIGKILL)

Publisher.publish_alert = die
from daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Recorder:
    """What the recovery pass hands a publisher."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object, str | None]] = []

    def publish_result(self, result: Result, message_id: str | None = None) -> None:
        self.calls.append(("result", result, message_id))

    def publish_alert(self, alert: Alert, message_id: str | None = None) -> None:
        self.calls.append(("alert", alert, message_id))

    def publish_summary(self, summary: Summary, message_id: str | None = None) -> None:
        self.calls.append(("summary", summary, message_id))


def test_recorded_but_unqueued_rows_are_queued_once_with_their_ids(tmp_path, caplog):
    alert = Alert("porch", "person", "warning", "Someone.", T0 + 20, T0, T0 + 8, 0.9, b"\xff\xd8jpeg")
    description = Result("porch", "description", "Describe.", T0, T0 + 8, T0 + 9, text="A cat.")
    summary = Summary("daily", T0 - 86400, T0, "Quiet.", T0 + 30, {"alerts": 1}, ("porch",))
    with History(tmp_path / "history.sqlite") as history:
        history.record_result(None, description)  # no id: nothing to publish (an ask's answer, no MQTT)
        history.record_alert(alert)
        queued = history.record_result(None, description, "already-queued")
        history.mark_queued("results", queued)
        history.record_summary(summary, "summary-1")
        history.record_alert(alert, "alert-1")
        history.record_result(None, description, "result-1")
        publisher = Recorder()
        assert queue_unqueued(history, publisher) == 3
        assert publisher.calls == [("result", description, "result-1"), ("alert", alert, "alert-1"),
                                   ("summary", summary, "summary-1")]  # oldest first
        assert history.unqueued() == [] and queue_unqueued(history, Recorder()) == 0
    assert "1 alerts, 1 results, 1 summaries were recorded but never queued for MQTT" in caplog.text


def test_rows_from_before_the_publication_columns_count_as_queued(tmp_path):
    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    for statement in HISTORY_MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES ('history', 1)")
    db.execute("INSERT INTO alerts (camera, rule, severity, text, window_start, window_end, ts) "
               "VALUES ('porch', 'person', 'warning', 'old', 0, 8, 9)")
    db.close()
    with History(path) as history:
        assert history.unqueued() == [] and len(history.alerts(0, 10)) == 1


def test_an_alert_killed_between_history_and_outbox_is_delivered_after_restart(
        daemon_config, yard_clip, mosquitto, listen, tmp_path):
    heard = listen(mosquitto, "vlmwatch/yard/alert")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "always.yaml").write_text("- id: always\n  ask: Is anything there?\n  threshold: 0\n  cooldown: 0s\n")
    cfg = daemon_config(yard_clip)
    cfg.write_text(cfg.read_text() + f"rules: {rules}\nmqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n")

    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_PUBLISHING, "run", "-c", str(cfg), "--once"],
                            cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    with History(tmp_path / "state" / "history.sqlite") as history:
        [lost] = history.unqueued()  # recorded, never queued: the outbox is another file
    assert lost.table == "alerts" and lost.item.rule == "always"
    assert heard.messages == []

    assert main(["run", "-c", str(cfg), "--once"]) == 0  # the real daemon, restarted
    heard.wait_for(lambda ms: any(json.loads(m.payload)["id"] == lost.message_id for m in ms), 30, "the lost alert")
    alerts = [json.loads(m.payload) for m in heard.messages]
    assert alerts[0]["id"] == lost.message_id  # before anything the restarted daemon found itself
    assert alerts[0]["rule"] == "always" and alerts[0]["text"] == lost.item.text
    assert abs(datetime.fromisoformat(alerts[0]["window"]["start"]).timestamp() - lost.item.window_start) < 0.001
    assert [a["id"] for a in alerts].count(lost.message_id) == 1
    with History(tmp_path / "state" / "history.sqlite") as history:
        assert history.unqueued() == []
