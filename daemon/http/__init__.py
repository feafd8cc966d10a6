"""An OpenAI-compatible HTTP API on the daemon's NPU queue: `POST /v1/chat/completions`,
`GET /v1/models`, `GET /healthz` (see README, "An OpenAI-compatible endpoint").

A part like `daemon.mqtt`: it never imports the service. `daemon.service.build`
starts `server.HttpServer` with a `server.Backend` that queues each request as
an NPU job; this package only speaks HTTP, parses requests and decodes images.
"""
