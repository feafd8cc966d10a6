"""MQTT: the daemon's door to Home Assistant and other home automation.

`settings` (the `mqtt:` section), `messages` (topics and JSON payloads),
`discovery` (Home Assistant configs), `outbox` (the lossless SQLite queue),
`connection` (paho's client and network thread), `sender` (outbox -> paho),
`asks` (ad-hoc questions) and `publisher` (the facade wiring them together).
"""
