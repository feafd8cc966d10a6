"""External triggers: MQTT messages (a Frigate event, a Home Assistant motion sensor) that make a
camera's next window analysed whatever the gate says.

    subscriber = TriggerSubscriber(mqtt_settings, [("front", trigger_settings)], on_trigger)
    subscriber.start()           # its own paho client; subscribes on every (re)connect
    ...                          # on_trigger("front", "frigate person") on paho's thread
    subscriber.stop()

Inbound only, on a connection of its own (client id `<client_id>-triggers`),
so it neither waits behind the outbox nor shares the publisher's callbacks.
Retained messages are old state (a sensor that was ON an hour ago), so they
are ignored; only messages published while we listen trigger.
"""

from daemon.mqtt.triggers.subscriber import TriggerSubscriber, payload_matches

__all__ = ["TriggerSubscriber", "payload_matches"]
