"""The trigger subscriber and the pure test of a payload against a trigger."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.config.mqtt import MqttSettings
from daemon.config.triggers import Scalar, TriggerSettings

log = logging.getLogger(__name__)

MAX_PAYLOAD = 256 * 1024  # bytes of JSON read; a Frigate event is a few kB


def _equal(actual: Any, wanted: Scalar) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return str(actual).lower() == str(wanted).lower()
    if isinstance(actual, (int, float)) and isinstance(wanted, (int, float)):
        return float(actual) == float(wanted)
    return isinstance(actual, (str, int, float)) and str(actual) == str(wanted)


def _lookup(data: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return False, None
        data = data[key]
    return True, data


def payload_matches(trigger: TriggerSettings, payload: bytes) -> bool:
    """Whether a message's payload is what the trigger waits for: exactly `payload` (stripped), or JSON
    whose every `match` path has the wanted value (one of them, for a list; a list value in the payload
    matches when it contains one). Without either, every message matches."""
    if trigger.payload is not None:
        return payload.decode("utf-8", errors="replace").strip() == trigger.payload
    if not trigger.match:
        return True
    if len(payload) > MAX_PAYLOAD:
        return False
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    for path, wanted in trigger.match.items():
        found, actual = _lookup(data, path)
        choices = wanted if isinstance(wanted, list) else [wanted]
        values = actual if isinstance(actual, list) else [actual]
        if not found or not any(_equal(v, w) for v in values for w in choices):
            return False
    return True


class TriggerSubscriber:
    """Subscribes to the triggers' topics and calls `on_trigger(camera, label)` for each match."""

    def __init__(self, settings: MqttSettings, triggers: Sequence[tuple[str, TriggerSettings]],
                 on_trigger: Callable[[str, str], None]) -> None:
        self.settings, self.triggers, self.on_trigger = settings, tuple(triggers), on_trigger
        self.topics = sorted({t.topic for _, t in self.triggers})
        self.client: paho.Client | None = None
        self.fired = 0  # matching messages handed to on_trigger
        self._subscribed = threading.Event()

    def start(self) -> None:
        """Connect in the background (paho reconnects with backoff). ConfigError for an unreadable
        password or TLS file."""
        s = self.settings
        password, tls = s.resolve_password(), s.ssl_context()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{s.effective_client_id()}-triggers",
                             clean_session=True, protocol=paho.MQTTv311)
        if s.username is not None:
            client.username_pw_set(s.username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        log.info("MQTT triggers: listening on %s for %d trigger(s)", ", ".join(self.topics), len(self.triggers))
        client.connect_async(s.host, s.port, s.keepalive)
        client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker acknowledged the subscriptions (every trigger sent from then on is seen)."""
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    # -- paho's network thread

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT triggers: broker %s:%d refused the connection: %s; retrying with backoff",
                        self.settings.host, self.settings.port, reason)
            return
        client.subscribe([(topic, 1) for topic in self.topics])  # again after every reconnect

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._subscribed.clear()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if message.retain:  # state from before we listened, not an event now
            return
        try:
            for camera, trigger in self.triggers:
                if paho.topic_matches_sub(trigger.topic, message.topic) and payload_matches(trigger, message.payload):
                    self.fired += 1
                    log.info("camera %s: trigger %r on %s: the next window is analysed", camera, trigger.label,
                             message.topic)
                    self.on_trigger(camera, trigger.label)
        except Exception:  # a failing handler must not kill paho's network thread
            log.exception("MQTT triggers: handling a message on %s failed", message.topic)
