"""The MQTT publisher: the daemon's only door to home automation.

    publisher = Publisher(settings, state_dir / "outbox.sqlite", cameras=["porch"], on_ask=queue_question)
    publisher.start()                      # returns at once; paho connects in the background
    publisher.publish_result(result)       # -> vlmwatch/porch/description (retained)
    publisher.stop(timeout=5)              # flush briefly, publish `offline`, disconnect

Threads: paho's network thread runs the callbacks; one sender thread moves
messages from the SQLite outbox to paho, at most `IN_FLIGHT` unacknowledged
at a time, oldest first, and deletes each on the broker's PUBACK. Callbacks
only queue acks and wake the sender, so the two never wait on each other.
Every unacknowledged message handed to paho stays in paho's memory across
reconnects (it resends it itself), so the sender only ever moves forward
through the outbox; after a restart it starts again from the oldest row.

Status and discovery configs are state that is rebuilt on every connect, so
they go straight to paho instead of through the outbox.
"""

from __future__ import annotations

import logging
import queue
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from daemon.errors import ConfigError, PublishError
from daemon.mqtt.discovery import OFF, OFFLINE, ON, ONLINE, Discovery, RuleInfo
from daemon.mqtt.messages import (
    RESERVED_CAMERA_NAMES,
    AskError,
    AskRequest,
    Topics,
    alert_json,
    check_name,
    encode,
    error_reply_json,
    new_message_id,
    parse_ask,
    reply_json,
    result_json,
    summary_json,
)
from daemon.mqtt.outbox import Kind, Outbox, OutboxMessage
from daemon.mqtt.settings import MqttSettings
from daemon.types import Alert, Result, Summary

log = logging.getLogger(__name__)


__all__ = ["AskRequest", "MqttSettings", "Publisher", "PublisherStats", "RuleInfo"]

IN_FLIGHT = 32  # outbox messages handed to paho and not yet acknowledged
_REFUSALS = {133, 134, 135, 138, 140}  # CONNACK: client id rejected, bad credentials, not authorised, banned


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


def _guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """paho re-raises callback exceptions on its network thread and dies; log them instead."""

    def run(self: Publisher, *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception:
            log.exception("MQTT: unexpected error in %s", callback.__name__)

    run.__name__ = callback.__name__
    return run


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
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.base_topic)
        try:
            self.cameras = tuple(check_name("camera", c) for c in cameras)
            reserved = RESERVED_CAMERA_NAMES & set(self.cameras)
            if reserved:
                raise ValueError(f"camera name {min(reserved)!r} is reserved (<base>/summary/<job> is taken)")
            self.discovery = Discovery(settings.discovery, self.topics, self.cameras, rules, summary_jobs)
        except ValueError as exc:
            raise ConfigError(f"mqtt: {exc}") from None
        self._on_ask = on_ask
        self._clock = clock
        self._outbox = Outbox(outbox_path, settings.outbox.max_messages, settings.outbox.max_bytes, clock)
        self._client: paho.Client | None = None
        self._sender: threading.Thread | None = None
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._connected = threading.Event()
        self._progress = threading.Condition()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox row id; sender thread only
        self._cursor = 0  # highest outbox row id handed to paho; sender thread only
        self._stopping = False
        self._error: PublishError | None = None
        self._refusals = 0
        self._last_failure = ""
        self._counts = dict.fromkeys(("sent", "acknowledged", "connects", "connect_failures", "asks", "asks_rejected"), 0)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open the outbox and connect in the background. ConfigError for an unreadable password or TLS file."""
        if self._client is not None or self._stopping:
            raise RuntimeError("Publisher.start() may be called once")
        s = self.settings
        password = s.resolve_password()
        tls = s.ssl_context()
        self._outbox.open()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=s.effective_client_id(),
                             clean_session=True, protocol=paho.MQTTv311)
        client.max_inflight_messages_set(0)  # the sender bounds it; paho's own queueing stalls resends on reconnect
        if s.username is not None:
            client.username_pw_set(s.username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        log.info("MQTT: connecting to %s:%d as %s (%s, user %s)", s.host, s.port, s.effective_client_id(),
                 "TLS" if tls else "plain TCP", s.username or "none")
        client.connect_async(s.host, s.port, s.keepalive)
        client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-outbox", daemon=True)
        self._sender.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Flush the outbox for most of `timeout`, publish `offline`, disconnect. Unsent messages stay queued."""
        client = self._client
        if client is None or self._stopping:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        with self._progress:
            self._progress.wait_for(lambda: self._outbox.depth == 0 or not self.connected,
                                    max(0.0, deadline - time.monotonic() - min(1.0, timeout / 4)))
        if self.connected:
            info = client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # connection went away meanwhile: the broker publishes the will instead
        client.disconnect()
        client.loop_stop()
        self._halt.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=max(1.0, deadline - time.monotonic()))
        self._connected.clear()
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
        with self._progress:
            self._progress.wait_for(lambda: self.connected or self._error is not None, timeout)
        if self._error is not None:
            raise self._error
        return self.connected

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def error(self) -> PublishError | None:
        """Set when the broker refused us `refused_attempts` times; the publisher has stopped trying."""
        return self._error

    def stats(self) -> PublisherStats:
        c = self._counts
        return PublisherStats(self.connected, self._outbox.depth, self._outbox.size_bytes, len(self._in_flight),
                              c["sent"], c["acknowledged"], self._outbox.dropped, c["connects"],
                              c["connect_failures"], c["asks"], c["asks_rejected"])

    # -- what the daemon publishes (any thread) ---------------------------------

    def publish_result(self, result: Result) -> str:
        """Text -> `<camera>/description`, choice -> `<camera>/answer/<prompt>`; both retained. Returns the id."""
        check_name("camera", result.camera)
        message_id = new_message_id()
        payload = encode(result_json(result, message_id))
        if result.choice is not None:
            topic = self.topics.answer(result.camera, check_name("prompt", result.prompt_id))
            self._enqueue(Kind.ANSWER, topic, payload, retain=True)
        else:
            self._enqueue(Kind.DESCRIPTION, self.topics.description(result.camera), payload, retain=True)
        return message_id

    def publish_alert(self, alert: Alert) -> str:
        """Snapshot (retained), alert JSON (not retained), rule state ON (retained). Returns the alert's id."""
        camera, rule = check_name("camera", alert.camera), check_name("rule", alert.rule)
        message_id = new_message_id()
        if alert.snapshot_jpeg is not None:
            self._enqueue(Kind.SNAPSHOT, self.topics.snapshot(camera), alert.snapshot_jpeg, retain=True)
        self._enqueue(Kind.ALERT, self.topics.alert(camera), encode(alert_json(alert, message_id)), retain=False)
        self._enqueue(Kind.RULE, self.topics.rule(camera, rule), ON.encode(), retain=True)
        return message_id

    def publish_rule_state(self, camera: str, rule: str, on: bool) -> None:
        topic = self.topics.rule(check_name("camera", camera), check_name("rule", rule))
        self._enqueue(Kind.RULE, topic, (ON if on else OFF).encode(), retain=True)

    def publish_summary(self, summary: Summary) -> str:
        message_id = new_message_id()
        topic = self.topics.summary(check_name("summary job", summary.job))
        self._enqueue(Kind.SUMMARY, topic, encode(summary_json(summary, message_id)), retain=True)
        return message_id

    def reply(self, request: AskRequest, result: Result) -> None:
        """Answer an `AskRequest` on `<camera>/reply`, echoing its id."""
        self._enqueue(Kind.REPLY, self.topics.reply(request.camera), encode(reply_json(request, result)), retain=False)

    def reply_error(self, request: AskRequest, error: str) -> None:
        """Tell the asker why there is no answer (no window yet, question too long for the model, ...)."""
        self._reject(request.camera, request.id, error)

    # -- internals: outbox -> paho ----------------------------------------------

    def _enqueue(self, kind: Kind, topic: str, payload: bytes, retain: bool) -> None:
        if self._client is None:
            raise RuntimeError("Publisher.start() must be called before publishing")
        self._outbox.put(OutboxMessage(kind, topic, payload, retain))  # PublishError if the disk is full
        self._wake.set()

    def _send_loop(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._drain_acks()
                if self.connected and not self._halt.is_set():
                    self._fill_window()
            except Exception:
                log.exception("MQTT: outbox sender failed; retrying in a second")
                self._halt.wait(1.0)
            with self._progress:
                self._progress.notify_all()

    def _drain_acks(self) -> None:
        row_ids = []
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                break
            row_id = self._in_flight.pop(mid, None)
            if row_id is not None:  # None: status or discovery, which bypass the outbox
                row_ids.append(row_id)
        if row_ids:
            self._outbox.ack(*row_ids)  # one commit per batch, not per message
            self._counts["acknowledged"] += len(row_ids)

    def _fill_window(self) -> None:
        assert self._client is not None
        while len(self._in_flight) < IN_FLIGHT and self.connected:
            batch = self._outbox.pending(after_id=self._cursor, limit=IN_FLIGHT - len(self._in_flight))
            if not batch:
                return
            for row in batch:
                info = self._client.publish(row.topic, row.payload, qos=1, retain=row.retain)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    return  # message id still in use: try again on the next wake-up
                # MQTT_ERR_NO_CONN is fine too: paho keeps the message and sends it on reconnect.
                self._in_flight[info.mid] = row.id
                self._cursor = row.id
                self._counts["sent"] += 1

    # -- internals: paho callbacks (network thread) ------------------------------

    @_guarded
    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        s = self.settings
        if reason.is_failure:
            self._counts["connect_failures"] += 1
            if reason.value in _REFUSALS:
                self._refused(client, f"MQTT broker {s.host}:{s.port} refused the connection: {reason}",
                              f"Check mqtt.username ({s.username or 'not set'}) and the password "
                              f"({s.password_source()}), and that client id {s.effective_client_id()} is allowed.")
            else:
                self._unreachable(f"MQTT broker {s.host}:{s.port} refused the connection: {reason}")
            return
        self._refusals, self._last_failure = 0, ""
        topics = [(self.topics.ask_filter, 1)]
        if s.discovery.enabled:
            topics += [(self.discovery.ha_status_topic, 1), (self.discovery.own_configs_filter, 1)]
        client.subscribe(topics)
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)  # birth, after every (re)connect
        self._publish_discovery(client)
        self._counts["connects"] += 1
        log.info("MQTT: connected to %s:%d; %d messages waiting in the outbox", s.host, s.port, self._outbox.depth)

    @_guarded
    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int, _codes: Any, _props: Any) -> None:
        # Connected counts from the subscription's acknowledgement: from then on no question sent to
        # <base>/<camera>/ask can be missed, which is what wait_connected() promises.
        self._connected.set()
        self._wake.set()
        with self._progress:
            self._progress.notify_all()

    @_guarded
    def _on_connect_fail(self, client: paho.Client, _userdata: Any) -> None:
        # paho calls this from inside its `except OSError:`, so the cause is the exception being handled.
        exc = sys.exc_info()[1]
        self._counts["connect_failures"] += 1
        s = self.settings
        where = f"MQTT broker {s.host}:{s.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            ca = s.tls.ca_file if s.tls and s.tls.ca_file else "the system's CAs"
            self._refused(client, f"TLS: the certificate of {where} failed verification ({exc.verify_message})",
                          f"Set mqtt.tls.ca_file (now {ca}) to the CA that signed the broker's certificate, and "
                          "make mqtt.host a name that certificate lists.")
        elif isinstance(exc, ssl.SSLError):
            self._refused(client, f"TLS handshake with {where} failed ({exc.reason or exc})",
                          "Check that the port speaks TLS, and mqtt.tls.cert_file/key_file if the broker "
                          "requires a client certificate.")
        else:
            self._unreachable(f"cannot reach {where}: {exc or 'connection failed'}")

    @_guarded
    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        was_connected = self.connected
        self._connected.clear()
        if was_connected and not self._stopping:
            log.warning("MQTT: lost the connection to %s:%d (%s); reconnecting with backoff, messages wait in "
                        "the outbox", self.settings.host, self.settings.port, reason)
        with self._progress:
            self._progress.notify_all()

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        # Runs under paho's message lock: only hand the ack over, never call back into paho here.
        self._acks.put(mid)
        self._wake.set()

    @_guarded
    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        topic = message.topic
        if self.settings.discovery.enabled and topic == self.discovery.ha_status_topic:
            # A retained `online` is an old birth replayed on subscribe; discovery just went out anyway.
            if message.payload == b"online" and not message.retain:
                log.info("MQTT: Home Assistant came online; sending discovery configs again")
                self._publish_discovery(client)
        elif self.settings.discovery.enabled and self.discovery.is_stale(topic, message.payload):
            log.info("MQTT: removing Home Assistant entity %s (its camera, rule or job is gone)", topic)
            client.publish(topic, b"", qos=1, retain=True)
        elif (camera := self.topics.ask_camera(topic)) is not None:
            self._handle_ask(camera, message.payload)

    # -- internals: connection trouble, discovery, questions -------------------------

    def _refused(self, client: paho.Client, problem: str, remedy: str) -> None:
        """The broker (or its certificate) says no: retry a bounded number of times, then stop for good."""
        self._refusals += 1
        limit = self.settings.refused_attempts
        if self._refusals < limit:
            level = logging.WARNING if self._refusals == 1 else logging.DEBUG
            log.log(level, "%s (attempt %d of %d; retrying with backoff). %s", problem, self._refusals, limit, remedy)
            return
        self._error = PublishError(f"{problem}. {remedy} Gave up after {limit} refused attempt(s); "
                                   "restart vlmwatch after fixing the configuration.")
        log.error("%s", self._error)
        client.disconnect()  # ends paho's reconnect loop
        with self._progress:
            self._progress.notify_all()

    def _unreachable(self, problem: str) -> None:
        """Network trouble: paho retries with backoff for ever; say so once per distinct cause."""
        if problem != self._last_failure:
            log.warning("%s; retrying with backoff, messages wait in the outbox", problem)
            self._last_failure = problem
        else:
            log.debug("%s; still retrying", problem)

    def _publish_discovery(self, client: paho.Client) -> None:
        if not self.settings.discovery.enabled:
            return
        for topic, payload in self.discovery.configs().items():
            client.publish(topic, payload, qos=1, retain=True)

    def _handle_ask(self, camera: str, payload: bytes) -> None:
        self._counts["asks"] += 1
        if camera in RESERVED_CAMERA_NAMES:  # a reply would land among the summaries (<base>/summary/reply)
            self._counts["asks_rejected"] += 1
            log.info("MQTT: ignored a question on %s: %r cannot be a camera", self.topics.ask(camera), camera)
            return
        try:
            request = parse_ask(camera, payload, self.settings.ask_max_bytes, self._clock())
        except AskError as exc:
            self._reject(camera, exc.request_id, str(exc))
            return
        if camera not in self.cameras:
            self._reject(camera, request.id, f"unknown camera {camera!r}; known cameras: {', '.join(self.cameras)}")
        elif self._on_ask is None:
            self._reject(camera, request.id, "this vlmwatch does not take ad-hoc questions")
        else:
            try:
                self._on_ask(request)
            except Exception as exc:  # noqa: BLE001 - a failing handler must not kill the network thread
                log.warning("MQTT: could not queue the question %r for %s: %s", request.id, camera, exc)
                self._reject(camera, request.id, f"the question could not be queued: {exc}")

    def _reject(self, camera: str, request_id: Any, error: str) -> None:
        self._counts["asks_rejected"] += 1
        log.info("MQTT: rejected a question for camera %s: %s", camera, error)
        payload = encode(error_reply_json(camera, request_id, error, self._clock()))
        self._enqueue(Kind.REPLY, self.topics.reply(camera), payload, retain=False)
