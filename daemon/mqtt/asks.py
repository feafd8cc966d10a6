"""Ad-hoc questions: a message on `<base>/<camera>/ask` becomes an `AskRequest` for `on_ask`, or an
error reply saying what was wrong. Runs on paho's thread, so it never waits: `on_ask` only queues,
and error replies go to `deliver` (memory) for the outbox sender.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from daemon.config.mqtt import topic_problem
from daemon.errors import Busy
from daemon.mqtt.messages import (
    RESERVED_CAMERA_NAMES,
    AskError,
    AskRequest,
    Topics,
    encode,
    error_reply_json,
    parse_ask,
    shorten,
)
from daemon.mqtt.outbox import Kind, OutboxMessage

log = logging.getLogger(__name__)


class Asks:
    """Parses questions, checks their camera, calls `on_ask`; counts questions and rejections."""

    def __init__(
        self,
        topics: Topics,
        cameras: Sequence[str],
        max_bytes: int,
        on_ask: Callable[[AskRequest], None] | None,
        deliver: Callable[[OutboxMessage], None],
        clock: Callable[[], float],
    ) -> None:
        self.topics, self.cameras, self.max_bytes = topics, tuple(cameras), max_bytes
        self._on_ask, self._deliver, self._clock = on_ask, deliver, clock
        self.asked = 0
        self.rejected = 0

    def handle(self, camera: str, payload: bytes) -> None:
        """A question arrived on `<base>/<camera>/ask` (paho's thread)."""
        self.asked += 1
        if camera in RESERVED_CAMERA_NAMES:  # a reply would land among the summaries (<base>/summary/reply)
            self.rejected += 1
            log.info("MQTT: ignored a question on %s: %r cannot be a camera", self.topics.ask(camera), camera)
            return
        problem = topic_problem(self.topics.reply(camera))
        if problem is not None:  # e.g. a 65,522-byte camera level: <base>/<camera>/reply is over MQTT's limit
            self.rejected += 1
            log.info("MQTT: ignored a question on %s without a reply: the reply topic cannot be published (%s)",
                     shorten(self.topics.ask(camera)), problem)
            return
        try:
            request = parse_ask(camera, payload, self.max_bytes, self._clock())
        except AskError as exc:
            self._deliver(self.rejection(camera, exc.request_id, str(exc)))
            return
        error = self._hand_over(request)
        if error is not None:
            self._deliver(self.rejection(camera, request.id, *error))

    def rejection(self, camera: str, request_id: Any, error: str, level: int = logging.INFO) -> OutboxMessage:
        """The error reply telling the asker why there is no answer; counted and logged."""
        self.rejected += 1
        log.log(level, "MQTT: rejected a question for camera %s: %s", shorten(camera), error)
        payload = encode(error_reply_json(camera, request_id, error, self._clock()))
        return OutboxMessage(Kind.REPLY, self.topics.reply(camera), payload, retain=False)

    def _hand_over(self, request: AskRequest) -> tuple[str, int] | None:
        """Give a well-formed question to `on_ask`; the error to reply with (and its log level) when that
        cannot be done."""
        if request.camera not in self.cameras:
            return (f"unknown camera {shorten(repr(request.camera))}; known cameras: {', '.join(self.cameras)}",
                    logging.INFO)
        if self._on_ask is None:
            return "this vlmwatch does not take ad-hoc questions", logging.INFO
        try:
            self._on_ask(request)
        except Busy as exc:  # rate limit or full queue: expected under a flood, so no warning per question
            return str(exc), logging.DEBUG
        except Exception as exc:  # noqa: BLE001 - a failing handler must not kill the network thread
            log.warning("MQTT: could not queue the question %r for %s: %s", request.id, request.camera, exc)
            return f"the question could not be queued: {exc}", logging.INFO
        return None
