"""`vlmwatch demo --remove-device --mqtt HOST:PORT`: take the demo's device out of Home Assistant.

The demo announces its entities with retained discovery configs, so they stay on the
broker (and in Home Assistant, as unavailable) after it stops. An empty retained payload
on each of those topics is how MQTT discovery removes an entity: Home Assistant deletes it,
and the device with its last entity. The embedded broker keeps nothing after the demo.
"""

from __future__ import annotations

import threading

from daemon.errors import PublishError

CAMERAS = ("front_door",)  # what write_demo_config configures


def demo_config_topics() -> list[str]:
    """The discovery config topics the demo's daemon publishes: its config's (write_demo_config:
    one camera, no rules or summaries, the default mqtt and events settings), planned as the
    daemon plans them."""
    from daemon.config.events import EventSettings
    from daemon.config.mqtt import MqttSettings
    from daemon.mqtt.publisher import plan_entities

    return sorted(plan_entities(MqttSettings(), CAMERAS, events=EventSettings().enabled).configs())


def remove_device(host: str, port: int, username: str | None, password: str | None, timeout: float = 10.0) -> int:
    """Clear the demo's retained discovery configs on the broker; returns how many topics."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    topics = demo_config_topics()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="vlmwatch-demo-remove", protocol=paho.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    connected, refusal = threading.Event(), []

    def on_connect(_c, _u, _f, reason, _p) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        raise PublishError(f"--mqtt {host}:{port}: cannot reach an MQTT broker there ({why}); nothing removed")\
            from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or refusal:
            raise PublishError(f"--mqtt {host}:{port}: the broker did not accept us"
                               f" ({refusal[0] if refusal else 'no answer'}); check --mqtt-username and the"
                               " password; nothing removed")
        sent = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
        for message in sent:
            message.wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(topics)
