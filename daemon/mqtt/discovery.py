"""Home Assistant MQTT discovery: one retained config per entity. Pure: the publisher does the I/O.

The daemon's device (connectivity, NPU load, queue length) comes first, so the cameras'
`via_device` points at a known device; then per camera a description sensor and a snapshot image,
per rule and camera a binary_sensor and an event, per summary job a sensor. Config topics carry
node_id from the base topic, so the publisher can delete configs no longer configured.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from daemon import __version__
from daemon.config.mqtt import DiscoverySettings
from daemon.config.base import check_name
from daemon.mqtt.messages import Topics

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
STATE_MAX_CHARS = 255  # Home Assistant rejects longer states


@dataclass(frozen=True)
class RuleInfo:
    """What discovery needs to know about a rule."""

    name: str
    cameras: tuple[str, ...] | None = None  # None: every camera
    off_delay: float = 300.0  # seconds until Home Assistant turns the binary_sensor off by itself


@dataclass(frozen=True)
class EntityConfig:
    """One discovery config message."""

    component: str  # sensor | binary_sensor | image | event
    object_id: str
    topic: str
    config: dict

    @property
    def payload(self) -> bytes:
        return json.dumps(self.config, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def node_id_for(base_topic: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", base_topic)


def _title(name: str) -> str:
    words = name.replace("_", " ").replace("-", " ")
    return words[:1].upper() + words[1:]


class Discovery:
    """The set of entities for one daemon; `configs()` is what the broker should retain."""

    def __init__(
        self,
        settings: DiscoverySettings,
        topics: Topics,
        cameras: Iterable[str],
        rules: Iterable[RuleInfo] = (),
        summary_jobs: Iterable[str] = (),
        events: bool = False,
    ) -> None:
        self.settings = settings
        self.events = events  # per camera: an event entity, the last story, activity, the event keyframe
        self.topics = topics
        self.node_id = node_id_for(topics.base)
        self.cameras = tuple(check_name(c, kind="camera name") for c in cameras)
        self.rules = tuple(RuleInfo(r.name, self.cameras if r.cameras is None else tuple(r.cameras), r.off_delay)
                           for r in rules)
        self.summary_jobs = tuple(check_name(j, kind="summary job") for j in summary_jobs)
        for rule in self.rules:
            check_name(rule.name, kind="rule")
            unknown = sorted(set(rule.cameras or ()) - set(self.cameras))
            if unknown:
                raise ValueError(f"rule {rule.name!r} names cameras that are not configured: {', '.join(unknown)}")
        self._entities = self._build()

    @property
    def ha_status_topic(self) -> str:
        """Home Assistant publishes `online` here when it (re)starts; then configs are sent again."""
        return f"{self.settings.prefix}/status"

    @property
    def own_configs_filter(self) -> str:
        """Subscription that returns every config retained under this daemon's node id."""
        return f"{self.settings.prefix}/+/{self.node_id}/+/config"

    def entities(self) -> list[EntityConfig]:
        return list(self._entities)

    def configs(self) -> dict[str, bytes]:
        """Topic -> retained payload for every entity that should exist."""
        return {e.topic: e.payload for e in self._entities}

    def is_stale(self, topic: str, payload: bytes) -> bool:
        """A non-empty retained config under our node id for an entity we no longer have."""
        if not payload:
            return False
        parts = topic.split("/")
        prefix = self.settings.prefix.split("/")
        ours = (len(parts) == len(prefix) + 4 and parts[:len(prefix)] == prefix
                and parts[-3] == self.node_id and parts[-1] == "config")
        return ours and topic not in {e.topic for e in self._entities}

    # -- building ------------------------------------------------------------

    def _build(self) -> list[EntityConfig]:
        entities = self._daemon_entities()
        entities += [e for camera in self.cameras for e in self._camera_entities(camera)]
        if self.events:
            entities += [e for camera in self.cameras for e in self._event_entities(camera)]
        entities += [e for rule in self.rules for camera in rule.cameras or ()
                     for e in self._rule_entities(rule, camera)]
        entities += [self._summary_entity(job) for job in self.summary_jobs]
        seen: dict[str, str] = {}
        for e in entities:
            if e.topic in seen:
                raise ValueError(f"two entities map to the same Home Assistant object id {e.object_id!r} "
                                 f"({e.component}); rename a camera, rule or summary job")
            seen[e.topic] = e.object_id
        return entities

    def _daemon_entities(self) -> list[EntityConfig]:
        device = self._daemon_device()
        return [
            self._entity("binary_sensor", "status", device, {
                "name": "Status",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": self.topics.status,
                "payload_on": ONLINE,
                "payload_off": OFFLINE,
            }, available=False),  # OFF (not unavailable) when the daemon is offline: that is its state
            self._entity("sensor", "npu_load", device, {
                "name": "NPU load",
                "icon": "mdi:chip",
                "state_topic": self.topics.npu,
                "value_template": "{{ (value_json.load * 100) | round(0) }}",
                "unit_of_measurement": "%",
                "state_class": "measurement",
                "json_attributes_topic": self.topics.npu,
            }),
            self._entity("sensor", "npu_queue", device, {
                "name": "NPU queue",
                "icon": "mdi:tray-full",
                "state_topic": self.topics.npu,
                "value_template": "{{ value_json.queue }}",
                "unit_of_measurement": "jobs",
                "state_class": "measurement",
            }),
        ]

    def _camera_entities(self, camera: str) -> list[EntityConfig]:
        device = self._camera_device(camera)
        return [
            self._entity("sensor", f"{camera}_description", device, {
                "name": "Description",
                "icon": "mdi:cctv",
                "state_topic": self.topics.description(camera),
                "value_template": f"{{{{ value_json.text[:{STATE_MAX_CHARS}] }}}}",
                "json_attributes_topic": self.topics.description(camera),
                **({"expire_after": self.settings.expire_after} if self.settings.expire_after else {}),
            }),
            self._entity("image", f"{camera}_snapshot", device, {
                "name": "Alert snapshot",
                "image_topic": self.topics.snapshot(camera),
                "content_type": "image/jpeg",
            }),
        ]

    def _event_entities(self, camera: str) -> list[EntityConfig]:
        device = self._camera_device(camera)
        return [
            # Fired once per event, at its end: new and update messages render nothing, which Home
            # Assistant ignores; the story, the id and the record become the event's attributes.
            self._entity("event", f"{camera}_event", device, {
                "name": "Event",
                "icon": "mdi:movie-open-outline",
                "state_topic": self.topics.event(camera),
                "event_types": ["end"],
                "value_template": "{% if value_json.type == 'end' %}{{ value }}{% endif %}",
            }),
            self._entity("sensor", f"{camera}_story", device, {
                "name": "Last story",
                "icon": "mdi:script-text-outline",
                "state_topic": self.topics.story(camera),
                "value_template": f"{{{{ value_json.text[:{STATE_MAX_CHARS}] }}}}",
                "json_attributes_topic": self.topics.story(camera),
            }),
            self._entity("binary_sensor", f"{camera}_activity", device, {
                "name": "Activity",
                "device_class": "motion",
                "state_topic": self.topics.activity(camera),
                "payload_on": ON,
                "payload_off": OFF,
            }),
            self._entity("image", f"{camera}_event_snapshot", device, {
                "name": "Event snapshot",
                "image_topic": self.topics.event_snapshot(camera),
                "content_type": "image/jpeg",
            }),
        ]

    def _rule_entities(self, rule: RuleInfo, camera: str) -> list[EntityConfig]:
        device = self._camera_device(camera)
        return [
            self._entity("binary_sensor", f"{camera}_{rule.name}", device, {
                "name": _title(rule.name),
                "state_topic": self.topics.rule(camera, rule.name),
                "payload_on": ON,
                "payload_off": OFF,
                "off_delay": max(1, round(rule.off_delay)),  # Home Assistant wants whole seconds
            }),
            # The alert topic carries every rule of the camera; rendering nothing for the
            # other rules makes Home Assistant ignore those messages quietly.
            self._entity("event", f"{camera}_{rule.name}", device, {
                "name": f"{_title(rule.name)} alert",
                "state_topic": self.topics.alert(camera),
                "event_types": ["alert"],
                "value_template": f"{{% if value_json.rule == '{rule.name}' %}}{{{{ value }}}}{{% endif %}}",
            }),
        ]

    def _summary_entity(self, job: str) -> EntityConfig:
        return self._entity("sensor", f"summary_{job}", self._daemon_device(), {
            "name": f"Summary {job}",
            "icon": "mdi:text-box-outline",
            "state_topic": self.topics.summary(job),
            "value_template": f"{{{{ value_json.text[:{STATE_MAX_CHARS}] }}}}",
            "json_attributes_topic": self.topics.summary(job),
        })

    def _entity(self, component: str, object_id: str, device: dict, fields: dict,
                available: bool = True) -> EntityConfig:
        availability = {"availability": [{"topic": self.topics.status, "payload_available": ONLINE,
                                          "payload_not_available": OFFLINE}]} if available else {}
        config = {
            **fields,
            "unique_id": f"{self.node_id}_{component}_{object_id}",
            **availability,
            "device": device,
            "origin": {"name": "vlmwatch", "sw_version": __version__},
            "qos": 1,
        }
        topic = f"{self.settings.prefix}/{component}/{self.node_id}/{object_id}/config"
        return EntityConfig(component, object_id, topic, config)

    def _daemon_device(self) -> dict:
        return {
            "identifiers": [self.node_id],
            "name": f"vlmwatch {self.topics.base}" if self.topics.base != "vlmwatch" else "vlmwatch",
            "manufacturer": "vlmwatch",
            "model": "InternVL3-2B video watcher",
            "sw_version": __version__,
        }

    def _camera_device(self, camera: str) -> dict:
        return {
            "identifiers": [f"{self.node_id}_{camera}"],
            "name": _title(camera),
            "manufacturer": "vlmwatch",
            "model": "Camera watched by InternVL3-2B",
            "sw_version": __version__,
            "via_device": self.node_id,
        }
