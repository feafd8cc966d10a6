"""Home Assistant discovery: the payloads Home Assistant needs, and their life on a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mosquitto import Listener, Mosquitto

from daemon.config.mqtt import DiscoverySettings, MqttSettings
from daemon.errors import ConfigError
from daemon.mqtt.discovery import Discovery, RuleInfo
from daemon.mqtt.messages import Topics
from daemon.mqtt.publisher import Publisher

CAMERAS = ("porch", "garden")
RULES = (RuleInfo("person", None, off_delay=119.6), RuleInfo("gate_open", ("porch",)))  # None: every camera

# What Home Assistant's MQTT discovery schema requires of each platform we use
# (besides the unique_id and device that tie an entity to a device).
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "image": {"image_topic"},  # or url_topic; we send the JPEG bytes themselves
    "event": {"state_topic", "event_types"},
}


def discovery(**settings: object) -> Discovery:
    return Discovery(DiscoverySettings(**settings), Topics("vlmwatch"), CAMERAS, RULES, ["daily"])


def test_entities_have_what_home_assistant_requires() -> None:
    entities = discovery().entities()
    by_component: dict[str, int] = {}
    for e in entities:
        by_component[e.component] = by_component.get(e.component, 0) + 1
        c = e.config
        assert REQUIRED[e.component] <= c.keys(), e.topic
        assert e.topic == f"homeassistant/{e.component}/vlmwatch/{e.object_id}/config"
        if e.object_id != "status":  # the daemon's connectivity sensor is OFF when offline, not unavailable
            assert c["availability"] == [{"topic": "vlmwatch/status", "payload_available": "online",
                                          "payload_not_available": "offline"}]
        assert c["device"]["identifiers"] and c["device"]["name"] and c["unique_id"].startswith("vlmwatch_")
        assert json.loads(e.payload) == c
    # the daemon: status + NPU load and queue; per camera: description sensor + image; per rule and camera:
    # binary_sensor + event; per job: sensor
    assert by_component == {"sensor": 2 + 2 + 1, "image": 2, "binary_sensor": 1 + 3, "event": 3}
    assert len({e.config["unique_id"] for e in entities}) == len(entities)


def test_the_daemon_device_comes_first_so_cameras_point_at_an_existing_device() -> None:
    entities = discovery().entities()
    daemon = [e for e in entities if e.config["device"]["identifiers"] == ["vlmwatch"]]
    assert [e.object_id for e in entities[:3]] == ["status", "npu_load", "npu_queue"]
    assert {e.config["device"]["via_device"] for e in entities if "via_device" in e.config["device"]} == {"vlmwatch"}
    status, load, queue = daemon[:3]
    assert (status.component, status.config["device_class"], status.config["state_topic"],
            status.config["payload_on"], status.config["payload_off"]) == (
        "binary_sensor", "connectivity", "vlmwatch/status", "online", "offline")
    assert "availability" not in status.config
    assert load.config["state_topic"] == queue.config["state_topic"] == "vlmwatch/npu"
    assert (load.config["unit_of_measurement"], queue.config["value_template"]) == ("%", "{{ value_json.queue }}")
    jinja2 = pytest.importorskip("jinja2")
    rendered = jinja2.Environment().from_string(load.config["value_template"]).render(value_json={"load": 0.4237})
    assert float(rendered) == 42.0


def test_entity_details() -> None:
    configs = {e.topic: e.config for e in discovery(expire_after=600).entities()}
    desc = configs["homeassistant/sensor/vlmwatch/porch_description/config"]
    assert desc["state_topic"] == desc["json_attributes_topic"] == "vlmwatch/porch/description"
    assert desc["value_template"] == "{{ value_json.text[:255] }}" and desc["expire_after"] == 600
    assert desc["device"]["identifiers"] == ["vlmwatch_porch"] and desc["device"]["via_device"] == "vlmwatch"
    image = configs["homeassistant/image/vlmwatch/porch_snapshot/config"]
    assert (image["image_topic"], image["content_type"]) == ("vlmwatch/porch/snapshot", "image/jpeg")
    rule = configs["homeassistant/binary_sensor/vlmwatch/garden_person/config"]
    assert (rule["state_topic"], rule["payload_on"], rule["payload_off"], rule["off_delay"]) == (
        "vlmwatch/garden/rule/person", "ON", "OFF", 120)
    event = configs["homeassistant/event/vlmwatch/porch_gate_open/config"]
    assert (event["state_topic"], event["event_types"]) == ("vlmwatch/porch/alert", ["alert"])
    summary = configs["homeassistant/sensor/vlmwatch/summary_daily/config"]
    assert summary["state_topic"] == "vlmwatch/summary/daily" and summary["device"]["identifiers"] == ["vlmwatch"]
    never_expires = {e.topic: e.config for e in discovery(expire_after=0).entities()}
    assert "expire_after" not in never_expires["homeassistant/sensor/vlmwatch/porch_description/config"]


def test_templates_cut_the_state_and_pick_the_rule() -> None:
    jinja2 = pytest.importorskip("jinja2")
    configs = {e.topic: e.config for e in discovery().entities()}

    def render(template: str, payload: dict) -> str:
        return jinja2.Environment().from_string(template).render(value=json.dumps(payload), value_json=payload)

    state = render(configs["homeassistant/sensor/vlmwatch/porch_description/config"]["value_template"],
                   {"text": "é" * 300})
    assert state == "é" * 255
    event = configs["homeassistant/event/vlmwatch/porch_gate_open/config"]["value_template"]
    alert = {"rule": "gate_open", "event_type": "alert", "text": "open"}
    assert json.loads(render(event, alert)) == alert
    assert render(event, {**alert, "rule": "person"}) == ""  # Home Assistant ignores an empty rendering


def test_unique_ids_are_stable() -> None:
    assert [e.config["unique_id"] for e in discovery().entities()] == [
        e.config["unique_id"] for e in discovery().entities()]
    assert discovery().node_id == "vlmwatch"
    assert Discovery(DiscoverySettings(), Topics("home/cams"), ["porch"]).node_id == "home_cams"


def test_stale_configs_are_recognised() -> None:
    d = discovery()
    assert d.is_stale("homeassistant/sensor/vlmwatch/attic_description/config", b"{}")
    assert not d.is_stale("homeassistant/sensor/vlmwatch/attic_description/config", b"")  # already deleted
    assert not d.is_stale("homeassistant/sensor/vlmwatch/porch_description/config", b"{}")
    assert not d.is_stale("homeassistant/sensor/other/attic_description/config", b"{}")  # another daemon's
    assert d.own_configs_filter == "homeassistant/+/vlmwatch/+/config"


def test_bad_inventories() -> None:
    with pytest.raises(ValueError, match="names cameras that are not configured: attic"):
        Discovery(DiscoverySettings(), Topics("vlmwatch"), ["porch"], [RuleInfo("person", ("attic",))])
    with pytest.raises(ValueError, match="same Home Assistant object id 'porch_description'"):
        Discovery(DiscoverySettings(), Topics("vlmwatch"), ["porch", "porch"])
    with pytest.raises(ConfigError, match="camera name 'summary' is reserved"):
        Publisher(MqttSettings(), "unused.sqlite", ["summary"])


# -- on a real broker -----------------------------------------------------------------

@pytest.fixture
def publisher(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Callable[..., Publisher]]:  # noqa: F811
    made: list[Publisher] = []

    def make(cameras: tuple[str, ...] = CAMERAS, rules: tuple[RuleInfo, ...] = RULES, **discovery: object) -> Publisher:
        settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, client_id=f"disco-{len(made)}",
                                reconnect_min_delay=0.1, reconnect_max_delay=0.5, discovery=discovery)
        p = Publisher(settings, tmp_path / "outbox.sqlite", cameras, rules, ["daily"])
        made.append(p)
        p.start()
        assert p.wait_connected(10)
        return p

    yield make
    for p in made:
        p.stop(timeout=1)


def configs_on(listener: Listener) -> dict[str, bytes]:
    """Latest payload per discovery config topic."""
    return {m.topic: m.payload for m in listener.messages if m.topic.endswith("/config")}


def ask_barrier(listener: Listener, n: int) -> None:
    """Ask a question and wait for its (error) reply: everything the publisher did in
    response to messages sent before it has reached the broker by then."""
    listener.client.publish("vlmwatch/porch/ask", f'{{"question": "barrier", "id": {n}}}', qos=1)
    listener.wait_for(lambda ms: any(m.topic == "vlmwatch/porch/reply" and json.loads(m.payload)["id"] == n
                                     for m in ms), what=f"reply {n}")


def count_configs(listener: Listener) -> int:
    return len([m for m in listener.messages if m.topic.endswith("/config")])


def test_configs_arrive_retained_and_are_resent_when_home_assistant_restarts(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    ha = listen(mosquitto, "homeassistant/#", "vlmwatch/+/reply")
    # Home Assistant configured with a retained birth message, published long ago.
    ha.client.publish("homeassistant/status", "online", qos=1, retain=True).wait_for_publish(5)
    p = publisher()
    expected = p.discovery.configs()
    ha.wait_for(lambda ms: configs_on(ha) == expected, what="every discovery config")
    assert all(m.retain and m.qos == 1 for m in ha.messages if m.topic.endswith("/config"))
    ask_barrier(ha, 1)
    assert count_configs(ha) == len(expected)  # the replayed retained birth did not trigger a second round

    late = listen(mosquitto, "homeassistant/+/vlmwatch/+/config")  # Home Assistant starting later
    late.wait_for(lambda ms: configs_on(late) == expected, what="retained configs for a late subscriber")

    ha.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)  # Home Assistant restarted
    ha.wait_for(lambda ms: count_configs(ha) == 2 * len(expected), what="every config sent again")
    assert configs_on(ha) == expected


def test_entities_of_removed_cameras_and_rules_are_deleted(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    first = publisher()
    ha = listen(mosquitto, "homeassistant/#")
    ha.wait_for(lambda ms: configs_on(ha) == first.discovery.configs(), what="first configs")
    first.stop(timeout=2)

    second = publisher(cameras=("porch",), rules=(RuleInfo("person", ("porch",)),))
    gone = set(first.discovery.configs()) - set(second.discovery.configs())
    assert gone == {f"homeassistant/{c}/vlmwatch/{o}/config" for c, o in [
        ("sensor", "garden_description"), ("image", "garden_snapshot"), ("binary_sensor", "garden_person"),
        ("event", "garden_person"), ("binary_sensor", "porch_gate_open"), ("event", "porch_gate_open")]}
    ha.wait_for(lambda ms: all(configs_on(ha)[t] == b"" for t in gone), what="empty retained configs")
    assert all(m.retain for m in ha.messages if m.topic in gone)
    assert {t: p for t, p in configs_on(ha).items() if p} == second.discovery.configs()


def test_discovery_can_be_switched_off(
        mosquitto: Mosquitto, listen: Callable[..., Listener], publisher: Callable[..., Publisher]) -> None:  # noqa: F811
    watcher = listen(mosquitto, "#")
    publisher(enabled=False)
    watcher.wait_topic("vlmwatch/status", b"online")
    watcher.client.publish("homeassistant/status", "online", qos=1)
    ask_barrier(watcher, 1)
    assert configs_on(watcher) == {}
