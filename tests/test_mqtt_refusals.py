"""What a client on the broker (or one bad message) can do to the publisher, against a real mosquitto:
a message that can never be published becomes a dead letter instead of blocking the outbox, an ask
whose reply topic is too long gets no reply, deeply nested JSON gets an error reply, and a flood of
Home Assistant announcements costs two rounds of discovery configs."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mosquitto import Listener, Mosquitto, wait_until

from daemon.config.mqtt import MqttSettings
from daemon.mqtt.connection import REDISCOVERY_INTERVAL
from daemon.mqtt.discovery import RuleInfo
from daemon.mqtt.messages import AskRequest
from daemon.mqtt.outbox import Kind, Outbox
from daemon.mqtt.publisher import Publisher
from daemon.service.metrics import Metrics
from daemon.types import Result

T0 = 1_750_000_000.0
LONG_CAMERA = "a" * 65_522  # vlmwatch/<it>/ask is 65,535 bytes, the most MQTT allows; .../reply is 65,537


def description(n: int) -> Result:
    return Result("porch", "description", "Describe.", T0 + n, T0 + n + 8, T0 + n + 9, text=f"scene {n}")


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(broker: Mosquitto, on_ask: Callable[[AskRequest], None] | None = None, **settings: object) -> Publisher:
        options = {"host": broker.host, "port": broker.port, "client_id": f"pub-{len(made)}",
                   "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5, **settings}
        p = Publisher(MqttSettings.model_validate(options), tmp_path / "outbox.sqlite", ["porch"],
                      [RuleInfo("person", ("porch",))], [], on_ask)
        made.append(p)
        p.start()
        assert p.wait_connected(10)
        return p

    yield make
    for p in made:
        p.stop(timeout=1)


def poison(path: Path, topic: str) -> None:
    """A row as an older vlmwatch stored it: one paho refuses for ever ("Publish topic is too long")."""
    with Outbox(path):
        pass  # create the file and its tables
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO outbox (kind, priority, topic, payload, retain, created) VALUES (?, ?, ?, ?, 0, ?)",
                   ("reply", Kind.REPLY.priority, topic, b'{"ok":false}', T0))


def test_a_row_paho_refuses_becomes_a_dead_letter_and_the_rest_go_out(
        tmp_path: Path, mosquitto: Mosquitto, listen: Callable[..., Listener],
        publisher: Callable[..., Publisher], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    poison(tmp_path / "outbox.sqlite", f"vlmwatch/{LONG_CAMERA}/reply")  # survived a restart, as in the report
    ha = listen(mosquitto, "vlmwatch/porch/#")
    p = publisher(mosquitto)
    ids = [p.publish_result(description(n)) for n in range(3)]
    ha.wait_for(lambda ms: [json.loads(m.payload)["id"] for m in ms if m.topic.endswith("/description")] == ids,
                what="every description behind the bad row")
    wait_until(lambda: p.stats().outbox_depth == 0, 10, "an empty outbox")
    stats = p.stats()
    assert stats.dead_letters == 1 and stats.connected

    dead = [r.getMessage() for r in caplog.records if "dead letters" in r.getMessage()]
    assert len(dead) == 1 and "paho refused it: Publish topic is too long." in dead[0]
    assert len(dead[0]) < 1000  # the topic is cut short
    with Outbox(tmp_path / "outbox.sqlite") as box:  # a second connection to the file
        [(row, _, reason)] = box.dead_letter_rows()
    assert row.topic == f"vlmwatch/{LONG_CAMERA}/reply" and reason == "paho refused it: Publish topic is too long."

    metrics = Metrics()  # what the daemon's main loop exports
    metrics.set_dead_letters(stats.dead_letters)
    metrics.set_dead_letters(stats.dead_letters)  # the count since start, followed: not added twice
    assert metrics.registry.get_sample_value("vlmwatch_mqtt_dead_letters_total") == 1


def test_a_payload_over_the_brokers_limit_is_a_dead_letter(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:
    from daemon.types import Alert

    ha = listen(mosquitto, "vlmwatch/porch/#")
    p = publisher(mosquitto, max_payload_bytes=4096)
    big = Alert("porch", "person", "warning", "Someone.", T0 + 9, T0, T0 + 8, 0.9, b"\xff\xd8" + b"x" * 10_000)
    alert_id = p.publish_alert(big)  # the snapshot is too big; the alert and the rule state are not
    ha.wait_for(lambda ms: any(m.topic == "vlmwatch/porch/rule/person" for m in ms), what="the rule state")
    assert json.loads(ha.last("vlmwatch/porch/alert").payload)["id"] == alert_id
    assert ha.on("vlmwatch/porch/snapshot") == [] and p.stats().dead_letters == 1


def test_an_ask_whose_reply_topic_is_too_long_gets_no_reply_and_blocks_nothing(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    asked: list[AskRequest] = []
    user = listen(mosquitto, "vlmwatch/#")
    p = publisher(mosquitto, on_ask=asked.append)
    user.client.publish(f"vlmwatch/{LONG_CAMERA}/ask", b"hi", qos=1).wait_for_publish(5)
    user.client.publish("vlmwatch/porch/ask", b'{"question": "Gate?", "id": "q-1"}', qos=1).wait_for_publish(5)
    wait_until(lambda: len(asked) == 1, 10, "the good question")
    p.reply(asked[0], description(1))
    reply = json.loads(user.wait_topic("vlmwatch/porch/reply").payload)
    message_id = p.publish_result(description(2))
    assert json.loads(user.wait_topic("vlmwatch/porch/description").payload)["id"] == message_id
    assert reply["id"] == "q-1" and reply["ok"] is True
    assert [m.topic for m in user.messages if m.topic.endswith("/reply")] == ["vlmwatch/porch/reply"]
    assert p.stats().asks == 2 and p.stats().asks_rejected == 1 and p.stats().dead_letters == 0

    lines = [r.getMessage() for r in caplog.records if LONG_CAMERA[:60] in r.getMessage()]
    assert len(lines) == 1 and "without a reply: the reply topic cannot be published" in lines[0]
    assert "65,537 bytes" in lines[0] and len(lines[0]) < 1000
    assert not any(r.exc_info for r in caplog.records)


def test_deeply_nested_json_gets_an_error_reply_not_a_traceback(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user = listen(mosquitto, "vlmwatch/+/reply")
    publisher(mosquitto, on_ask=lambda request: None, ask_max_bytes=65536)
    bomb = b'{"question":' + b"[" * 2000 + b"]" * 2000 + b"}"
    user.client.publish("vlmwatch/porch/ask", bomb, qos=1).wait_for_publish(5)
    user.client.publish("vlmwatch/porch/ask", b'{"id": "q-2", "question": [[["deep"]]]}', qos=1)
    user.wait_for(lambda ms: len(ms) == 2, 10, "two error replies")
    first, second = (json.loads(m.payload) for m in user.messages)
    assert first["ok"] is False and first["error"].startswith("the JSON nests 2001 levels deep; a question nests at "
                                                              "most 8")
    assert second["id"] == "q-2" and second["error"].startswith("question: Input should be a valid string")
    assert not any(r.exc_info or "RecursionError" in r.getMessage() for r in caplog.records)


def test_a_flood_of_home_assistant_announcements_is_coalesced(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="daemon.mqtt")
    ha = listen(mosquitto, "homeassistant/+/vlmwatch/+/config", "vlmwatch/porch/reply")
    p = publisher(mosquitto)
    expected = len(p.discovery.configs())

    def rounds() -> float:
        return len([m for m in ha.messages if m.topic.endswith("/config")]) / expected

    ha.wait_for(lambda ms: rounds() == 1, what="the configs sent on connect")
    started = time.monotonic()
    for _ in range(5000):
        ha.client.publish("homeassistant/status", b"online", qos=0)
    # Its error reply comes once the publisher has handled every announcement before it.
    ha.client.publish("vlmwatch/porch/ask", b"barrier?", qos=1)
    ha.wait_topic("vlmwatch/porch/reply", timeout=30)
    handled = time.monotonic() - started
    ha.wait_for(lambda ms: rounds() >= 3, timeout=REDISCOVERY_INTERVAL + 20, what="the coalesced re-send")
    lines = [r.getMessage() for r in caplog.records if "Home Assistant" in r.getMessage()]
    assert lines[0] == "MQTT: Home Assistant came online; sending discovery configs again"
    assert "more time(s) within 5 s; sending discovery configs once more" in lines[1]
    if handled < REDISCOVERY_INTERVAL:  # the whole flood came within one interval: exactly one more round
        assert rounds() == 3 and len(lines) == 2
        assert lines[1] == ("MQTT: Home Assistant announced itself 4999 more time(s) within 5 s; sending "
                            "discovery configs once more")
    else:  # a slow machine: still one round per interval at most, never one per message
        assert rounds() <= 3 + math.ceil(handled / REDISCOVERY_INTERVAL)


# -- the real daemon --------------------------------------------------------------------------------

def test_the_running_daemon_shrugs_off_hostile_asks(daemon_config, yard_clip, mosquitto, listen) -> None:
    """The report's probes against `vlmwatch run`: an ask whose reply topic is 65,537 bytes and a
    2,000-level JSON ask; descriptions keep coming and a normal question is still answered."""
    import os
    import signal
    import subprocess
    import sys

    heard = listen(mosquitto, "vlmwatch/yard/#")
    cfg = daemon_config(yard_clip, realtime="true")
    cfg.write_text(cfg.read_text() + f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
                   "  ask_max_bytes: 65536\n")
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(cfg)], cwd=Path(__file__).parent.parent,
                            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        heard.wait_topic("vlmwatch/yard/description", timeout=60)
        before = len(heard.on("vlmwatch/yard/description"))
        asker = listen(mosquitto, "nothing/at/all").client
        asker.publish(f"vlmwatch/{LONG_CAMERA}/ask", b"hi", qos=1).wait_for_publish(5)
        asker.publish("vlmwatch/yard/ask", b'{"question":' + b"[" * 2000 + b"]" * 2000 + b"}", qos=1)
        asker.publish("vlmwatch/yard/ask", b'{"question": "Is it raining?", "id": "q1"}', qos=1)

        def replies(messages: list) -> list | None:
            got = [json.loads(m.payload) for m in messages if m.topic == "vlmwatch/yard/reply"]
            return got if len(got) >= 2 else None

        got = heard.wait_for(replies, timeout=60, what="two replies")
        heard.wait_for(lambda ms: len(heard.on("vlmwatch/yard/description")) > before, timeout=60,
                       what="a description after the hostile asks")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    nested = next(r for r in got if r["id"] != "q1")
    assert nested["ok"] is False and nested["error"].startswith("the JSON nests 2001 levels deep")
    assert next(r for r in got if r["id"] == "q1")["ok"] is True
    assert code == 0, err
    assert "Traceback" not in err and "RecursionError" not in err
    assert err.count("without a reply: the reply topic cannot be published") == 1
    assert "dead letters" not in err  # refused before anything was stored
