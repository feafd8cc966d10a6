"""The MQTT publisher: the daemon's only door to home automation.

    publisher = Publisher(settings, state_dir / "outbox.sqlite", cameras=["porch"], on_ask=queue_question)
    publisher.start()                      # returns at once; paho connects in the background
    publisher.publish_result(result)       # -> vlmwatch/porch/description (retained)
    publisher.stop(timeout=5)              # flush briefly, publish `offline`, disconnect

A facade over `Connection` (paho's client), `Sender` (outbox -> paho) and `Asks`. A message
published from the daemon's threads is in the outbox when the call returns; paho's thread never
touches SQLite (its replies are stored by the sender).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.config.base import check_name
from daemon.config.mqtt import MqttSettings
from daemon.errors import ConfigError, PublishError
from daemon.mqtt.asks import Asks
from daemon.mqtt.connection import Connection
from daemon.mqtt.discovery import OFF, ON, Discovery, RuleInfo
from daemon.mqtt.messages import (
    RESERVED_CAMERA_NAMES,
    AskRequest,
    Topics,
    alert_json,
    encode,
    event_json,
    new_message_id,
    npu_json,
    reply_json,
    result_json,
    story_json,
    summary_json,
)
from daemon.mqtt.outbox import Kind, Outbox, OutboxMessage
from daemon.mqtt.sender import IN_FLIGHT, Sender
from daemon.times import iso
from daemon.types import Alert, CameraStatus, Event, Result, Summary

log = logging.getLogger(__name__)


__all__ = ["IN_FLIGHT", "AskRequest", "MqttSettings", "Publisher", "PublisherStats", "RuleInfo"]


@dataclass(frozen=True)
class PublisherStats:
    """Counters for the metrics endpoint."""

    connected: bool
    outbox_depth: int
    outbox_bytes: int
    in_flight: int
    sent: int  # outbox messages handed to paho (a resend after restart counts again)
    acknowledged: int
    dropped: dict[str, int]  # by kind, since start
    connects: int
    connect_failures: int
    asks: int
    asks_rejected: int
    dead_letters: int = 0  # messages that can never be published (moved aside so the rest go out), since start


def plan_entities(settings: MqttSettings, cameras: Iterable[str], rules: Iterable[RuleInfo] = (),
                  summary_jobs: Iterable[str] = (), events: bool = False) -> Discovery:
    """The topics and Home Assistant entities for these names; ConfigError when a name cannot be a
    topic level or an entity id, or two entities collide (`vlmwatch check-config` calls this too)."""
    try:
        checked = tuple(check_name(c, kind="camera name") for c in cameras)
        reserved = RESERVED_CAMERA_NAMES & set(checked)
        if reserved:
            raise ValueError(f"camera name {min(reserved)!r} is reserved (<base>/summary/<job> is taken)")
        return Discovery(settings.discovery, Topics(settings.base_topic), checked, rules, summary_jobs, events)
    except ValueError as exc:
        raise ConfigError(f"mqtt: {exc}") from None


class Publisher:
    """Publishes results, alerts and summaries; answers `ask` through `on_ask` and `reply`."""

    def __init__(
        self,
        settings: MqttSettings,
        outbox_path: Path | str,
        cameras: Iterable[str],
        rules: Iterable[RuleInfo] = (),
        summary_jobs: Iterable[str] = (),
        on_ask: Callable[[AskRequest], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rule_states: Callable[[], Mapping[tuple[str, str], bool]] | None = None,
        events: bool = False,
    ) -> None:
        self.settings = settings
        self._rule_states = rule_states  # (rule, camera) -> ON now; published on every connect
        self.discovery = plan_entities(settings, cameras, rules, summary_jobs, events)
        self.topics, self.cameras = self.discovery.topics, self.discovery.cameras
        self._outbox = Outbox(outbox_path, settings.outbox.max_messages, settings.outbox.max_bytes, clock,
                              settings.max_payload_bytes)
        self._progress = threading.Condition()  # notified on (dis)connects, refusals and every sender round
        self._sender = Sender(self._outbox, self._progress)
        self._asks = Asks(self.topics, self.cameras, settings.ask_max_bytes, on_ask, self._sender.post, clock)
        self._connection = Connection(settings, self.topics, self.discovery, self._sender, self._asks.handle,
                                      self._progress, self._current_rule_states)
        self._started = False
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open the outbox and connect in the background. ConfigError for an unreadable password or TLS file."""
        if self._started or self._stopping:
            raise RuntimeError("Publisher.start() may be called once")
        client = self._connection.create()
        self._outbox.open()
        self._started = True
        self._connection.connect()
        self._sender.start(client, lambda: self._connection.connected)

    def stop(self, timeout: float = 5.0) -> None:
        """Flush the outbox for most of `timeout`, publish `offline`, disconnect. Unsent messages stay queued."""
        if not self._started or self._stopping:
            return
        self._stopping = self._connection.stopping = True
        deadline = time.monotonic() + timeout
        with self._progress:
            self._progress.wait_for(lambda: self._sender.idle or not self.connected,
                                    max(0.0, deadline - time.monotonic() - min(1.0, timeout / 4)))
        self._connection.close(deadline)
        self._sender.stop(timeout=max(1.0, deadline - time.monotonic()))
        left = self._outbox.depth
        self._outbox.close()  # publishing now raises RuntimeError: the outbox is closed
        log.info("MQTT: stopped; %d unsent messages kept in the outbox for the next start", left)

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_connected(self, timeout: float) -> bool:
        """Wait for the broker to accept us; raises the PublishError if it refused us for good."""
        return self._connection.wait_connected(timeout)

    @property
    def connected(self) -> bool:
        return self._connection.connected

    @property
    def error(self) -> PublishError | None:
        """Set when the broker refused us `refused_attempts` times; the publisher has stopped trying."""
        return self._connection.error

    def stats(self) -> PublisherStats:
        box, sender, connection = self._outbox, self._sender, self._connection
        return PublisherStats(self.connected, box.depth, box.size_bytes, sender.in_flight, sender.sent,
                              sender.acknowledged, box.dropped, connection.connects, connection.connect_failures,
                              self._asks.asked, self._asks.rejected, box.dead_letters)

    # -- what the daemon publishes (any thread) ---------------------------------

    def publish_result(self, result: Result, message_id: str | None = None) -> str:
        """Description -> `<camera>/description`, a rule's choice or JSON answer -> `<camera>/answer/<prompt>`;
        both retained. Returns the id (`message_id`: the one recorded with the result in history; a new one
        if None)."""
        check_name(result.camera, kind="camera name")
        message_id = message_id or new_message_id()
        payload = encode(result_json(result, message_id))
        if result.choice is not None or result.prompt_id != "description":  # a rule's choice or JSON answer
            topic = self.topics.answer(result.camera, check_name(result.prompt_id, kind="prompt"))
            self._enqueue(OutboxMessage(Kind.ANSWER, topic, payload, retain=True))
        else:
            self._enqueue(OutboxMessage(Kind.DESCRIPTION, self.topics.description(result.camera), payload, retain=True))
        return message_id

    def publish_alert(self, alert: Alert, message_id: str | None = None) -> str:
        """Snapshot (retained), alert JSON (not retained), rule state ON (retained). Returns the alert's id."""
        camera, rule = check_name(alert.camera, kind="camera name"), check_name(alert.rule, kind="rule")
        message_id = message_id or new_message_id()
        if alert.snapshot_jpeg is not None:
            self._enqueue(OutboxMessage(Kind.SNAPSHOT, self.topics.snapshot(camera), alert.snapshot_jpeg, retain=True))
        self._enqueue(OutboxMessage(Kind.ALERT, self.topics.alert(camera), encode(alert_json(alert, message_id)),
                                    retain=False))
        self._enqueue(OutboxMessage(Kind.RULE, self.topics.rule(camera, rule), ON.encode(), retain=True))
        return message_id

    def publish_rule_state(self, camera: str, rule: str, on: bool) -> None:
        topic = self.topics.rule(check_name(camera, kind="camera name"), check_name(rule, kind="rule"))
        self._enqueue(OutboxMessage(Kind.RULE, topic, (ON if on else OFF).encode(), retain=True))

    def publish_npu(self, load: float, queue: int, ts: float) -> bool:
        """`<base>/npu`: retained, QoS 0, only while connected (a measurement: the next one replaces a
        lost one, so none waits in the outbox). False when not connected."""
        return self._connection.publish_now(self.topics.npu, encode(npu_json(load, queue, ts)), retain=True)

    def _current_rule_states(self) -> dict[str, bytes]:
        """Every rule sensor's current ON/OFF (paho's thread, on connect): Home Assistant shows OFF for a
        rule that never held, not `unknown`, and never a retained ON the daemon no longer holds."""
        if self._rule_states is None:
            return {}
        return {self.topics.rule(camera, rule): (ON if on else OFF).encode()
                for (rule, camera), on in self._rule_states().items()}

    def publish_summary(self, summary: Summary, message_id: str | None = None) -> str:
        message_id = message_id or new_message_id()
        topic = self.topics.summary(check_name(summary.job, kind="summary job"))
        self._enqueue(OutboxMessage(Kind.SUMMARY, topic, encode(summary_json(summary, message_id)), retain=True))
        return message_id

    def publish_event(self, kind: str, event: Event, message_id: str | None = None, before: Event | None = None,
                      snapshot: bytes | None = None) -> str:
        """`<camera>/event` (new | update | end; not retained) and `<camera>/activity` ON at `new`, OFF at
        `end`; at `end` also the story (`<camera>/story`) and the keyframe (`<camera>/event/snapshot`),
        both retained, before the event message, so an automation fired by it reads both. Returns the id."""
        camera = check_name(event.camera, kind="camera name")
        message_id = message_id or new_message_id()
        if kind == "end":
            if snapshot is not None:
                self._enqueue(OutboxMessage(Kind.SNAPSHOT, self.topics.event_snapshot(camera), snapshot, retain=True))
            self._enqueue(OutboxMessage(Kind.EVENT, self.topics.story(camera), encode(story_json(event, message_id)),
                                        retain=True))
        self._enqueue(OutboxMessage(Kind.EVENT, self.topics.event(camera),
                                    encode(event_json(kind, event, message_id, before)), retain=False))
        if kind in ("new", "end"):
            self._enqueue(OutboxMessage(Kind.EVENT, self.topics.activity(camera), (ON if kind == "new" else OFF)
                                        .encode(), retain=True))
        return message_id

    def publish_camera_status(self, status: CameraStatus) -> None:
        """`<camera>/status`, retained JSON from the camera watchdog: `state` (starting, up, restarting,
        down, ended), `last_frame_age` (s), `restarts`, `dropped` (windows), `error`."""
        camera = check_name(status.camera, kind="camera name")
        payload = encode({"id": new_message_id(), "camera": camera, "state": status.state, "ts": iso(status.ts),
                          "last_frame_age": status.last_frame_age, "restarts": status.restarts,
                          "dropped": status.dropped, "error": status.error})
        # Dropped first when the outbox is full, like a description: the next status supersedes it.
        self._enqueue(OutboxMessage(Kind.DESCRIPTION, f"{self.topics.base}/{camera}/status", payload, retain=True))

    def reply(self, request: AskRequest, result: Result) -> None:
        """Answer an `AskRequest` on `<camera>/reply`, echoing its id."""
        payload = encode(reply_json(request, result))
        self._enqueue(OutboxMessage(Kind.REPLY, self.topics.reply(request.camera), payload, retain=False))

    def reply_error(self, request: AskRequest, error: str) -> None:
        """Tell the asker why there is no answer (no window yet, question too long for the model, ...)."""
        self._enqueue(self._asks.rejection(request.camera, request.id, error))

    def _enqueue(self, message: OutboxMessage) -> None:
        if not self._started:
            raise RuntimeError("Publisher.start() must be called before publishing")
        if self._connection.on_network_thread():
            self._sender.post(message)  # an on_ask handler answering at once: paho's thread must not wait on SQLite
        else:
            self._sender.put(message)  # stored before we return; PublishError if the disk is full
