"""External triggers: Frigate-shaped events and Home Assistant sensor payloads, matched purely,
through a real mosquitto, and end to end in the running daemon (history, description and alert JSON)."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as paho
import pytest
from clips import Scene, write_scene
from mosquitto import wait_until
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from daemon.config import load_config
from daemon.config.mqtt import MqttSettings
from daemon.config.triggers import TriggerSettings
from daemon.mqtt.triggers import TriggerSubscriber, payload_matches
from daemon.service.build import build_app
from daemon.state.history import History

# Recorded shape of Frigate's `frigate/events` messages (0.12-0.14): type new | update | end,
# the tracked object before and after the change.
FRIGATE_AFTER = {
    "id": "1732990000.123456-abc123", "camera": "front", "frame_time": 1732990003.5, "snapshot_time": 1732990003.1,
    "label": "person", "sub_label": None, "top_score": 0.84, "false_positive": False, "start_time": 1732990000.12,
    "end_time": None, "score": 0.81, "box": [424, 500, 536, 712], "area": 23744, "ratio": 0.528,
    "region": [264, 450, 667, 853], "current_zones": ["porch"], "entered_zones": ["drive", "porch"],
    "thumbnail": None, "has_snapshot": True, "has_clip": True, "stationary": False, "motionless_count": 0,
    "position_changes": 2, "attributes": {},
}


def frigate(kind: str = "new", **after) -> bytes:
    event = {**FRIGATE_AFTER, **after}
    return json.dumps({"type": kind, "before": {**event, "current_zones": []}, "after": event}).encode()


PERSON_AT_FRONT = TriggerSettings(topic="frigate/events", match={"after.camera": "front", "after.label": "person"},
                                  name="frigate person")


@pytest.mark.parametrize("payload, expected", [
    (frigate("new"), True),
    (frigate("update", score=0.9), True),
    (frigate("new", label="car"), False),
    (frigate("new", camera="back"), False),
    (b"not json", False),
    (b'{"after": "not an object"}', False),
])
def test_frigate_events_match_by_dotted_paths(payload, expected):
    assert payload_matches(PERSON_AT_FRONT, payload) is expected


def test_lists_numbers_and_booleans_match_as_written_in_yaml():
    in_zone = TriggerSettings(topic="frigate/events", match={"after.current_zones": "porch", "type": ["new", "update"]})
    assert payload_matches(in_zone, frigate("update"))
    assert not payload_matches(in_zone, frigate("end"))
    assert not payload_matches(in_zone, frigate("new", current_zones=["drive"]))
    flags = TriggerSettings(topic="t", match={"after.has_clip": True, "after.area": 23744})
    assert payload_matches(flags, frigate())
    assert not payload_matches(flags, frigate(has_clip=False))


def test_plain_payloads_of_home_assistant_sensors():
    motion = TriggerSettings(topic="homeassistant/binary_sensor/hall_motion/state", payload="ON")
    assert payload_matches(motion, b"ON") and payload_matches(motion, b"ON\n")
    assert not payload_matches(motion, b"OFF")
    anything = TriggerSettings(topic="doorbell/pressed")
    assert payload_matches(anything, b"") and anything.label == "doorbell/pressed"
    assert motion.label == "homeassistant/binary_sensor/hall_motion/state ON"


@pytest.mark.parametrize("options, message", [
    ({"topic": "frigate/#/x"}, "# the last one"),
    ({"topic": "t", "match": {"a..b": 1}}, "keys joined by dots"),
    ({"topic": "t", "match": {"a": 1}, "payload": "ON"}, "not both"),
])
def test_bad_triggers_are_refused_with_the_remedy(options, message):
    with pytest.raises(ValidationError, match=message):
        TriggerSettings(**options)


def publisher(broker) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="frigate")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_the_subscriber_hands_matching_messages_to_the_camera_and_ignores_retained_state(mosquitto):
    fired: list[tuple[str, str]] = []
    motion = TriggerSettings(topic="hall/+/motion", payload="ON")
    frigate_client = publisher(mosquitto)
    frigate_client.publish("hall/sensor1/motion", b"ON", qos=1, retain=True).wait_for_publish(5)  # old state
    subscriber = TriggerSubscriber(MqttSettings(host=mosquitto.host, port=mosquitto.port),
                                   [("front", PERSON_AT_FRONT), ("hall", motion)], lambda *a: fired.append(a))
    subscriber.start()
    try:
        assert subscriber.wait_subscribed(10)
        for topic, payload in (("frigate/events", frigate("new", label="cat")), ("frigate/events", frigate("new")),
                               ("hall/sensor1/motion", b"OFF"), ("hall/sensor2/motion", b"ON")):
            frigate_client.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_until(lambda: len(fired) >= 2, 10, "two triggers")
        frigate_client.publish("frigate/events", frigate("end"), qos=1).wait_for_publish(5)  # the person again
        wait_until(lambda: len(fired) >= 3, 10, "the third trigger")
        assert fired == [("front", "frigate person"), ("hall", "hall/+/motion ON"), ("front", "frigate person")]
    finally:
        subscriber.stop()
        frigate_client.loop_stop()


# ---------------------------------------------------------------- end to end


def test_a_frigate_event_makes_the_next_window_analysed_with_the_trigger_as_reason(tmp_path, tiny_model, mosquitto,
                                                                                  listen):
    """A static scene, replayed as if live: the gate skips its windows, until Frigate reports a
    person at this camera; that window is analysed, and the trigger is in history, the
    description JSON and the alert JSON."""
    clip = write_scene(tmp_path / "front.mp4", Scene(duration=14.0, noise=4.0, drift=0.0))
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("- id: anything\n  ask: Is anything there?\n  threshold: 0\n"
                                               "  cooldown: 0s\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model:\n  dir: {tiny_model}\n  backend: onnxruntime\n  system: You watch a camera.\n"
        f"cameras:\n  - name: front\n    source: {clip}\n    realtime: true\n    span: 1\n    frames: 4\n"
        f"    triggers:\n      - topic: frigate/events\n        match: {{after.camera: front, after.label: person}}\n"
        f"        name: frigate person\n"
        f"prompts:\n  max_new_tokens: 4\nmqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
        f"rules: {tmp_path / 'rules'}\nstate_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
    listener = listen(mosquitto, "vlmwatch/#")
    app, closers = build_app(load_config(config), once=True)
    runner = threading.Thread(target=app.run, kwargs={"once": True}, name="test-app")
    runner.start()
    frigate_client = publisher(mosquitto)
    try:
        wait_until(lambda: any(w.reason.startswith("static") for w in app.history.windows(0, time.time() + 1)), 30,
                   "the gate to skip a static window")

        def triggered_description():
            frigate_client.publish("frigate/events", frigate("new"), qos=1)  # until one window takes it
            return [json.loads(m.payload) for m in listener.on("vlmwatch/front/description")
                    if json.loads(m.payload)["trigger"] == "frigate person"]

        descriptions = wait_until(triggered_description, 30, "a description of a triggered window", poll=0.3)
        alerts = listener.wait_for(lambda ms: [json.loads(m.payload) for m in ms if m.topic == "vlmwatch/front/alert"
                                               and json.loads(m.payload)["trigger"] == "frigate person"],
                                   what="an alert of the triggered window")
    finally:
        app.stop.set()
        runner.join(30)
        frigate_client.loop_stop()
        for close in reversed(closers):
            close()
    assert descriptions[0]["zones"] == [] and alerts[0]["zones"] == []
    with History(tmp_path / "state" / "history.sqlite") as history:
        windows = sorted(history.windows(0, time.time() + 1), key=lambda w: w.start)  # recorded: skips at once
    reasons = [w.reason for w in windows]
    assert "trigger: frigate person" in reasons
    assert [w.trigger for w in windows if w.reason == "trigger: frigate person"][0] == "frigate person"
    assert reasons[0] == "first window" and reasons[1].startswith("static"), reasons  # the gate alone skips


def test_every_camera_and_trigger_option_is_described():
    from daemon.config.cameras import CameraSettings

    for model in (TriggerSettings, CameraSettings):
        assert [name for name, f in model.model_fields.items() if not f.description] == [], model.__name__
