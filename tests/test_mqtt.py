"""The publisher against a real mosquitto: topics and retain flags, last will,
broker outages and restarts without loss, TLS, credentials, and `ask`."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from mosquitto import Listener, Mosquitto, Pki, wait_until

from daemon.config.mqtt import MqttSettings
from daemon.errors import PublishError
from daemon.mqtt.discovery import RuleInfo
from daemon.mqtt.messages import AskRequest
from daemon.mqtt.outbox import Outbox
from daemon.mqtt.publisher import IN_FLIGHT, Publisher
from daemon.types import Alert, Result, Summary, Timings

REPO = Path(__file__).resolve().parents[1]
T0 = 1_750_000_000.0
CAMERAS = ("porch", "garden")


def description(n: int = 0, camera: str = "porch") -> Result:
    return Result(camera, "description", "Describe the scene.", T0 + n, T0 + n + 8, T0 + n + 9,
                  text=f"Scene {n}: a cat on the mat.", stop_reason="stop", model="InternVL3-2B",
                  timings=Timings(vit_ms=2920, prefill_ms=13900, decode_ms=870, generated=10))


def alert(n: int = 0, snapshot: bytes | None = None) -> Alert:
    return Alert("porch", "person", "warning", f"Person {n} at the door", T0 + n + 9, T0 + n, T0 + n + 8, 0.97,
                 snapshot)


@pytest.fixture
def publisher(tmp_path: Path) -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(broker: Mosquitto, *, outbox: Path | None = None, on_ask: Callable[[AskRequest], None] | None = None,
             start: bool = True, **settings: object) -> Publisher:
        options = {"host": broker.host, "port": broker.port, "client_id": f"pub-{len(made)}",
                   "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5, **settings}
        p = Publisher(MqttSettings.model_validate(options), outbox or tmp_path / "outbox.sqlite", CAMERAS,
                      [RuleInfo("person", CAMERAS)], ["daily"], on_ask)
        made.append(p)
        if start:
            p.start()
        return p

    yield make
    for p in made:
        p.stop(timeout=1)


def payloads(listener: Listener, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in listener.on(topic)]


# -- topics, payloads, retain flags, birth and last will -------------------------------

def test_everything_arrives_on_the_documented_topics(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    ha = listen(mosquitto, "vlmwatch/#")
    p = publisher(mosquitto)
    assert p.wait_connected(10)
    assert ha.wait_topic("vlmwatch/status", b"online").retain

    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9"
    ids = [p.publish_result(description(1)),
           p.publish_result(Result("porch", "person", "Is there a person?", T0, T0 + 8, T0 + 9, choice="yes",
                                   probabilities={"yes": 0.8, "no": 0.2})),
           p.publish_alert(alert(1, snapshot=jpeg)),
           p.publish_result(Result("porch", "crowd", "How many people?", T0, T0 + 8, T0 + 9,  # an ask_json rule
                                   text='{"people": 2}', stop_reason="stop")),
           p.publish_summary(Summary("daily", T0, T0 + 86400, "A quiet day.", T0 + 86401, {"alerts": 1}, ("porch",)))]
    p.publish_rule_state("garden", "person", False)
    p.stop(timeout=5)  # a clean stop flushes first, then says offline

    expected_retain = {
        "vlmwatch/porch/description": True, "vlmwatch/porch/answer/person": True, "vlmwatch/porch/alert": False,
        "vlmwatch/porch/answer/crowd": True,
        "vlmwatch/porch/rule/person": True, "vlmwatch/porch/snapshot": True, "vlmwatch/summary/daily": True,
        "vlmwatch/garden/rule/person": True,
    }
    ha.wait_topic("vlmwatch/status", b"offline")
    for topic, retain in expected_retain.items():
        [m] = ha.on(topic)
        assert (m.retain, m.qos) == (retain, 1), topic
    assert [m.payload for m in ha.on("vlmwatch/status")] == [b"online", b"offline"]
    assert all(m.retain for m in ha.on("vlmwatch/status"))
    assert ha.messages[-1].topic == "vlmwatch/status"  # offline only after everything else

    [desc] = payloads(ha, "vlmwatch/porch/description")
    assert desc["id"] == ids[0] and desc["camera"] == "porch" and desc["text"] == "Scene 1: a cat on the mat."
    assert datetime.fromisoformat(desc["ts"]).tzinfo is not None
    assert datetime.fromisoformat(desc["window"]["start"]).timestamp() == T0 + 1
    assert desc["prompt"] == "description" and desc["model"] == "InternVL3-2B" and desc["timings"]["generated"] == 10
    [answer] = payloads(ha, "vlmwatch/porch/answer/person")
    assert answer["id"] == ids[1] and answer["choice"] == "yes" and answer["probabilities"] == {"yes": 0.8, "no": 0.2}
    [crowd] = payloads(ha, "vlmwatch/porch/answer/crowd")
    assert crowd["id"] == ids[3] and json.loads(crowd["text"]) == {"people": 2}
    [alert_payload] = payloads(ha, "vlmwatch/porch/alert")
    assert alert_payload["id"] == ids[2] and alert_payload["rule"] == "person" and alert_payload["snapshot"] is True
    assert ha.on("vlmwatch/porch/snapshot")[0].payload == jpeg
    assert [m.payload for m in ha.on("vlmwatch/porch/rule/person")] == [b"ON"]
    assert [m.payload for m in ha.on("vlmwatch/garden/rule/person")] == [b"OFF"]
    assert payloads(ha, "vlmwatch/summary/daily")[0]["id"] == ids[4]


HARNESS = """
import sys
from daemon.mqtt.publisher import Publisher
from daemon.config.mqtt import MqttSettings
publisher = Publisher(MqttSettings.model_validate_json(sys.argv[1]), sys.argv[2], cameras=["porch"])
publisher.start()
if not publisher.wait_connected(10):
    sys.exit("not connected")
publisher.publish_rule_state("porch", "person", True)
sys.stdin.read()  # until killed
"""


def test_sigkill_makes_the_broker_publish_offline(
        tmp_path: Path, mosquitto: Mosquitto, listen: Callable[..., Listener]) -> None:  # noqa: F811
    watcher = listen(mosquitto, "vlmwatch/#")
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id="doomed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    daemon = subprocess.Popen([sys.executable, "-c", HARNESS, settings.model_dump_json(), str(tmp_path / "o.sqlite")],
                              stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        watcher.wait_topic("vlmwatch/porch/rule/person", b"ON", timeout=30)
        assert watcher.last("vlmwatch/status").payload == b"online"
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        daemon.stdin.close()
        daemon.stderr.close()
    offline = watcher.wait_topic("vlmwatch/status", b"offline")
    assert offline.retain and offline.qos == 1


# -- losing nothing --------------------------------------------------------------------------

def test_broker_outage_loses_no_alert(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    ha = listen(mosquitto, "vlmwatch/#", durable=True)  # hears what it missed while reconnecting
    p = publisher(mosquitto)
    assert p.wait_connected(10)
    alert_ids, description_ids = [], []
    mosquitto.pause()  # what the publisher sends now stays unacknowledged: in flight when the broker goes
    for n in range(20):
        alert_ids.append(p.publish_alert(alert(n)))
        description_ids.append(p.publish_result(description(n)))
    wait_until(lambda: p.stats().in_flight == IN_FLIGHT, 10, "a full window of unacknowledged messages")
    mosquitto.stop()
    wait_until(lambda: not p.connected, 10, "the publisher to notice the outage")
    for n in range(20, 60):
        alert_ids.append(p.publish_alert(alert(n)))
        description_ids.append(p.publish_result(description(n)))
    stats = p.stats()  # alert + rule state + description per round; a PUBACK racing the pause may have come
    assert stats.outbox_depth + stats.acknowledged == 3 * 60 and stats.acknowledged <= 1
    mosquitto.start()

    def received(topic: str) -> list[str]:
        return [json.loads(m.payload)["id"] for m in ha.on(topic)]

    ha.wait_for(lambda _: set(received("vlmwatch/porch/alert")) == set(alert_ids), 30, "every alert")
    ha.wait_for(lambda _: set(received("vlmwatch/porch/description")) == set(description_ids), 30,
                "every description")
    wait_until(lambda: p.stats().outbox_depth == 0, 10, "the outbox to drain")
    # The messages in flight when the broker went were sent again by paho, flagged as duplicates.
    assert f"Received PUBLISH from {p.settings.client_id} (d1, q1" in mosquitto.log()
    duplicates = sum(n - 1 for n in Counter(received("vlmwatch/porch/alert")).values())
    assert duplicates <= IN_FLIGHT  # only what was in flight at the outage may come twice; dedupe by id
    stats = p.stats()
    assert stats.connects == 2 and stats.acknowledged == stats.sent and stats.dropped["alert"] == 0


def test_restart_with_a_non_empty_outbox(
        tmp_path: Path, mosquitto: Mosquitto, listen: Callable[..., Listener],  # noqa: F811
        publisher: Callable[..., Publisher]) -> None:
    ha = listen(mosquitto, "vlmwatch/+/alert", durable=True)
    mosquitto.stop()
    first = publisher(mosquitto, outbox=tmp_path / "state.sqlite")
    ids = [first.publish_alert(alert(n)) for n in range(10)]
    first.stop(timeout=0.5)
    with Outbox(tmp_path / "state.sqlite") as box:
        assert box.depth == 20  # each alert plus its rule state

    mosquitto.start()
    publisher(mosquitto, outbox=tmp_path / "state.sqlite")
    ha.wait_for(lambda ms: len(ms) >= 10, 20, "the alerts queued before the restart")
    assert [json.loads(m.payload)["id"] for m in ha.messages] == ids  # oldest first


# -- TLS and credentials -------------------------------------------------------------------------

@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:  # noqa: F811
    broker = Mosquitto(tmp_path / "tls-broker", pki=pki, require_certificate=True)
    broker.start()
    yield broker
    broker.kill()


def test_tls_with_verification(tls_broker: Mosquitto, pki: Pki, listen: Callable[..., Listener],  # noqa: F811
                               publisher: Callable[..., Publisher]) -> None:
    watcher = listen(tls_broker, "vlmwatch/status")
    p = publisher(tls_broker, host="localhost",
                  tls={"ca_file": pki.ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key})
    assert p.wait_connected(10)
    watcher.wait_topic("vlmwatch/status", b"online")


def test_tls_with_the_wrong_ca_fails_clearly(tls_broker: Mosquitto, pki: Pki,  # noqa: F811
                                             publisher: Callable[..., Publisher]) -> None:
    p = publisher(tls_broker, host="localhost",
                  tls={"ca_file": pki.other_ca_file, "cert_file": pki.client_cert, "key_file": pki.client_key})
    with pytest.raises(PublishError) as caught:
        p.wait_connected(20)
    message = str(caught.value)
    assert f"TLS: the certificate of MQTT broker localhost:{tls_broker.port} failed verification" in message
    assert f"Set mqtt.tls.ca_file (now {pki.other_ca_file})" in message
    assert not p.connected and p.stats().connect_failures == 3
    wait_until(lambda: not any(t.name == "paho-mqtt-client-pub-0" for t in threading.enumerate()), 10,
               "paho's network thread to end")


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "locked-broker", users={"vlm": "right-horse-battery"})
    broker.start()
    yield broker
    broker.kill()


def test_wrong_password_is_one_clear_error_with_bounded_retries(
        locked_broker: Mosquitto, publisher: Callable[..., Publisher], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VLMWATCH_TEST_MQTT_PASSWORD", "wrong-staple-secret")
    p = publisher(locked_broker, client_id="wrong-pw", username="vlm", password_env="VLMWATCH_TEST_MQTT_PASSWORD")
    with pytest.raises(PublishError, match=r"refused the connection: (Not authorized|Bad user name or password)\. "
                       r"Check mqtt.username \(vlm\) and the password \(environment variable "
                       r"VLMWATCH_TEST_MQTT_PASSWORD\).*Gave up after 3 refused attempt"):
        p.wait_connected(20)
    # paho's network thread has ended: no further attempts, no tight loop
    wait_until(lambda: not any(t.name == "paho-mqtt-client-wrong-pw" for t in threading.enumerate()), 10,
               "paho's network thread to end")
    assert p.stats().connect_failures == 3 and locked_broker.log().count("New client connected") == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].getMessage() == str(p.error)
    assert all("wrong-staple-secret" not in r.getMessage() for r in caplog.records)


def test_right_password_from_a_credential_file(
        tmp_path: Path, locked_broker: Mosquitto, publisher: Callable[..., Publisher],
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "mqtt_password").write_text("right-horse-battery\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    p = publisher(locked_broker, username="vlm", password_credential="mqtt_password")
    assert p.wait_connected(10)
    assert all("right-horse-battery" not in r.getMessage() for r in caplog.records)
    assert "right-horse-battery" not in repr(p.settings)


# -- ad-hoc questions ---------------------------------------------------------------------------------

def test_ask_good_and_bad_payloads(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    asked: list[AskRequest] = []

    def on_ask(request: AskRequest) -> None:
        if request.question == "explode":
            raise RuntimeError("queue is full")
        asked.append(request)

    user = listen(mosquitto, "vlmwatch/+/reply")
    p = publisher(mosquitto, on_ask=on_ask)
    assert p.wait_connected(10)

    def ask(payload: bytes | str, camera: str = "porch") -> None:
        user.client.publish(f"vlmwatch/{camera}/ask", payload, qos=1).wait_for_publish(5)

    ask("Is the gate open?")
    ask(json.dumps({"question": "Gate?", "choices": ["open", "closed"], "id": "q-7"}))
    wait_until(lambda: len(asked) == 2, 10, "two questions")
    plain, choice = asked
    assert (plain.camera, plain.question, plain.choices) == ("porch", "Is the gate open?", ())
    assert (choice.id, choice.choices) == ("q-7", ("open", "closed"))

    p.reply(choice, Result("porch", "ask", "Gate?", T0, T0 + 8, T0 + 9, choice="open",
                           probabilities={"open": 0.7, "closed": 0.3}))
    p.reply_error(plain, "no window yet for porch")
    bad = [
        (b"x" * 1_000_000, "porch", None, "the question is 1000000 bytes; the limit is 4096 bytes"),
        (b"\xc3\x28 invalid", "porch", None, "not valid UTF-8"),
        (b"", "porch", None, "the question is empty"),
        (b'{"question": ', "porch", None, "not valid JSON"),
        (b'{"id": "q-8", "question": "x", "choices": "open"}', "porch", "q-8", "choices"),
        (b'{"id": 9, "question": "Anyone?"}', "attic", 9, "unknown camera 'attic'"),
        (b'{"id": "q-10", "question": "explode"}', "porch", "q-10", "could not be queued: queue is full"),
    ]
    ask("What is the summary?", "summary")  # ignored: a reply would land among the summaries
    for payload, camera, _, _ in bad:
        ask(payload, camera)
    user.wait_for(lambda ms: len(ms) == 2 + len(bad), 10, "a reply to every question")

    replies = {r["id"]: r for r in payloads(user, "vlmwatch/porch/reply")}
    assert replies["q-7"]["ok"] is True and replies["q-7"]["choice"] == "open"
    assert replies[plain.id] == {**replies[plain.id], "ok": False, "error": "no window yet for porch"}
    errors = {camera: [r for r in payloads(user, f"vlmwatch/{camera}/reply") if r["id"] not in ("q-7", plain.id)]
              for camera in ("porch", "attic")}
    for camera in ("porch", "attic"):
        expected = [(request_id, message) for _, c, request_id, message in bad if c == camera]
        assert len(errors[camera]) == len(expected)
        for (request_id, message), reply in zip(expected, errors[camera]):
            assert reply["ok"] is False and message in reply["error"] and reply["camera"] == camera
            if request_id is not None:
                assert reply["id"] == request_id
    assert all(not m.retain for m in user.messages)
    assert user.on("vlmwatch/summary/reply") == []
    assert p.connected and p.stats().asks == 3 + len(bad)


def test_publishing_needs_a_started_publisher(
        mosquitto: Mosquitto, publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    p = publisher(mosquitto, start=False)
    with pytest.raises(RuntimeError, match=r"start\(\) must be called"):
        p.publish_rule_state("porch", "person", True)
    with pytest.raises(ValueError, match="camera name 'a/b'"):
        p.publish_result(description(camera="a/b"))


def test_ask_without_a_handler(mosquitto: Mosquitto, listen: Callable[..., Listener],  # noqa: F811
                               publisher: Callable[..., Publisher]) -> None:
    user = listen(mosquitto, "vlmwatch/+/reply")
    assert publisher(mosquitto).wait_connected(10)
    user.client.publish("vlmwatch/porch/ask", '{"question": "Hello?", "id": 1}', qos=1)
    reply = json.loads(user.wait_topic("vlmwatch/porch/reply").payload)
    assert reply == {**reply, "id": 1, "ok": False, "error": "this vlmwatch does not take ad-hoc questions"}


def test_paho_network_thread_never_touches_the_outbox(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Error replies made on paho's network thread reach the asker, stored in SQLite by the sender thread."""
    touched: list[tuple[str, str]] = []  # (thread, what) for every SQLite access after open
    run = Outbox._run

    def recording_run(self: Outbox, action: Callable[..., object], verb: str) -> object:
        touched.append((threading.current_thread().name, verb))
        return run(self, action, verb)

    monkeypatch.setattr(Outbox, "_run", recording_run)

    def answer_at_once(request: AskRequest) -> None:  # a handler replying on paho's thread, not queueing
        p.reply_error(request, "answered at once")

    user = listen(mosquitto, "vlmwatch/+/reply")
    p = publisher(mosquitto, on_ask=answer_at_once)
    assert p.wait_connected(10)
    for camera, payload in [("porch", b"\xff not utf-8"), ("attic", b'{"id": "q-2", "question": "Anyone?"}'),
                            ("porch", b'{"id": "q-3", "question": "Gate?"}')]:
        user.client.publish(f"vlmwatch/{camera}/ask", payload, qos=1).wait_for_publish(5)
    user.wait_for(lambda ms: len(ms) == 3, 10, "three error replies")

    errors = [json.loads(m.payload)["error"] for m in user.messages]
    assert "not valid UTF-8" in errors[0] and "unknown camera 'attic'" in errors[1]
    assert errors[2] == "answered at once"
    wait_until(lambda: p.stats().outbox_depth == 0, 10, "the replies to be acknowledged")
    network = f"paho-mqtt-client-{p.settings.client_id}"
    assert [verb for thread, verb in touched if thread == network] == []
    assert sum(1 for thread, verb in touched if thread == "mqtt-outbox" and verb.startswith("store")) == 3
    assert p.stats().asks == 3 and p.stats().asks_rejected == 3
