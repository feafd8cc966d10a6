"""MQTT: the daemon's door to Home Assistant and other home automation.

`settings` (the `mqtt:` section), `messages` (topics and JSON payloads),
`discovery` (Home Assistant configs), `outbox` (the lossless SQLite queue) and
`publisher` (connection, outbox sender and ad-hoc questions).
"""
