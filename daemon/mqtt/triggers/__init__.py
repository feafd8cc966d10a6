"""External triggers: MQTT messages (a Frigate event, a Home Assistant motion sensor) that make a
camera's next window analysed whatever the gate says.

    subscriber = TriggerSubscriber(mqtt_settings, [("front", trigger_settings)], on_trigger)
    subscriber.start()           # its own paho client; on_trigger("front", "frigate person") on its thread

Inbound only, on a connection of its own; retained messages (old state) are ignored.
"""

from daemon.mqtt.triggers.subscriber import TriggerSubscriber, payload_matches

__all__ = ["TriggerSubscriber", "payload_matches"]
