"""The broker connection: paho's client and everything its network thread does.

Last will before connecting; subscriptions, the rules' states, the birth message and discovery
again on every connect; paho's backoff reconnects; a refusal is retried `refused_attempts`
times, then given up as a `PublishError`. The callbacks never touch the outbox: acks go to the
`Sender`, questions to `Asks`, in memory. The reasons: docs/design.md.
"""

from __future__ import annotations

import functools
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.config.mqtt import MqttSettings
from daemon.errors import PublishError
from daemon.mqtt.discovery import OFFLINE, ONLINE, Discovery
from daemon.mqtt.messages import Topics
from daemon.mqtt.sender import Sender

log = logging.getLogger(__name__)

REDISCOVERY_INTERVAL = 5.0  # seconds: Home Assistant announcing itself more often gets one coalesced re-send
_REFUSALS = {133, 134, 135, 138, 140}  # CONNACK: client id rejected, bad credentials, not authorised, banned


def _callback(method: Callable[..., None]) -> Callable[..., None]:
    """A paho callback: remembers paho's network thread, and logs exceptions that would
    otherwise be re-raised on that thread and kill it."""

    @functools.wraps(method)
    def run(self: Connection, *args: Any) -> None:
        self.network_thread = threading.current_thread()
        try:
            method(self, *args)
        except Exception:
            log.exception("MQTT: unexpected error in %s", method.__name__)

    return run


class Connection:
    """`create()` (may raise ConfigError), `connect()`, `wait_connected()`, `close()`."""

    def __init__(self, settings: MqttSettings, topics: Topics, discovery: Discovery, sender: Sender,
                 on_ask: Callable[[str, bytes], None], progress: threading.Condition,
                 retained_state: Callable[[], dict[str, bytes]] = dict) -> None:
        self.settings, self.topics, self.discovery = settings, topics, discovery
        self._retained_state = retained_state  # topic -> payload, republished on every connect
        self._sender, self._on_ask, self._progress = sender, on_ask, progress
        self.client: paho.Client | None = None
        self.network_thread: threading.Thread | None = None  # set by the first callback
        self.stopping = False  # set by Publisher.stop: a lost connection is expected then
        self.connects = 0
        self.connect_failures = 0
        self._connected = threading.Event()
        self._error: PublishError | None = None
        self._refusals = 0
        self._last_failure = ""
        self._rediscovery = threading.Lock()  # guards the three below: paho's thread and the timer's
        self._last_rediscovery = float("-inf")  # time.monotonic() of the last re-send for Home Assistant
        self._deferred: threading.Timer | None = None  # the coalesced re-send, when one is due
        self._coalesced = 0  # announcements since the last re-send

    # -- lifecycle -----------------------------------------------------------------

    def create(self) -> paho.Client:
        """The paho client with credentials, TLS, last will and callbacks. ConfigError for an unreadable
        password or TLS file."""
        s = self.settings
        password, tls = s.resolve_password(), s.ssl_context()
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
        self.client = client
        return client

    def connect(self) -> None:
        """Start paho's network thread; it connects in the background and reconnects with backoff."""
        assert self.client is not None, "create() first"
        s = self.settings
        log.info("MQTT: connecting to %s:%d as %s (%s, user %s)", s.host, s.port, s.effective_client_id(),
                 "TLS" if s.tls is not None else "plain TCP", s.username or "none")
        self.client.connect_async(s.host, s.port, s.keepalive)
        self.client.loop_start()

    def close(self, deadline: float) -> None:
        """Publish `offline` (until `deadline`, time.monotonic), disconnect, end paho's network thread."""
        client = self.client
        if client is None:
            return
        if self.connected:
            info = client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # connection went away meanwhile: the broker publishes the will instead
        with self._rediscovery:
            deferred, self._deferred = self._deferred, None
        if deferred is not None:
            deferred.cancel()
        client.disconnect()
        client.loop_stop()
        self._connected.clear()

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
        return self._error

    def publish_now(self, topic: str, payload: bytes, retain: bool) -> bool:
        """QoS 0, only while connected, past the outbox: for measurements the next one replaces."""
        if self.client is None or not self.connected:
            return False
        self.client.publish(topic, payload, qos=0, retain=retain)
        return True

    def on_network_thread(self) -> bool:
        """True when called from paho's network thread (a callback, or code it calls)."""
        return self.network_thread is not None and threading.current_thread() is self.network_thread

    # -- paho callbacks (network thread) ---------------------------------------------

    @_callback
    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        s = self.settings
        if reason.is_failure:
            self.connect_failures += 1
            problem = f"MQTT broker {s.host}:{s.port} refused the connection: {reason}"
            if reason.value in _REFUSALS:
                self._refused(client, problem,
                              f"Check mqtt.username ({s.username or 'not set'}) and the password "
                              f"({s.password_source()}), and that client id {s.effective_client_id()} is allowed.")
            else:
                self._unreachable(problem)
            return
        self._refusals, self._last_failure = 0, ""
        topics = [(self.topics.ask_filter, 1)]
        if s.discovery.enabled:
            topics += [(self.discovery.ha_status_topic, 1), (self.discovery.own_configs_filter, 1)]
        client.subscribe(topics)
        for topic, payload in self._retained_state().items():
            client.publish(topic, payload, qos=1, retain=True)
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)  # birth, after every (re)connect
        self._publish_discovery(client)
        self.connects += 1
        log.info("MQTT: connected to %s:%d; %d messages waiting in the outbox", s.host, s.port,
                 self._sender.outbox.depth)

    @_callback
    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int, _codes: Any, _props: Any) -> None:
        # Connected counts from the subscription's acknowledgement: from then on no question sent to
        # <base>/<camera>/ask can be missed, which is what wait_connected() promises.
        self._connected.set()
        self._sender.wake()
        self._notify()

    @_callback
    def _on_connect_fail(self, client: paho.Client, _userdata: Any) -> None:
        # paho calls this from inside its `except OSError:`, so the cause is the exception being handled.
        exc = sys.exc_info()[1]
        self.connect_failures += 1
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

    @_callback
    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        was_connected = self.connected
        self._connected.clear()
        if was_connected and not self.stopping:
            log.warning("MQTT: lost the connection to %s:%d (%s); reconnecting with backoff, messages wait in "
                        "the outbox", self.settings.host, self.settings.port, reason)
        self._notify()

    @_callback
    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, _reason: Any, _props: Any) -> None:
        # Runs under paho's message lock: only hand the ack over, never call back into paho here.
        self._sender.ack(mid)

    @_callback
    def _on_message(self, client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        topic, discovery = message.topic, self.settings.discovery.enabled
        if discovery and topic == self.discovery.ha_status_topic:
            # A retained `online` is an old birth replayed on subscribe; discovery just went out anyway.
            if message.payload == b"online" and not message.retain:
                self._home_assistant_online(client)
        elif discovery and self.discovery.is_stale(topic, message.payload):
            log.info("MQTT: removing Home Assistant entity %s (its camera, rule or job is gone)", topic)
            client.publish(topic, b"", qos=1, retain=True)
        elif (camera := self.topics.ask_camera(topic)) is not None:
            self._on_ask(camera, message.payload)

    # -- connection trouble and discovery ------------------------------------------------

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
        self._notify()

    def _unreachable(self, problem: str) -> None:
        """Network trouble: paho retries with backoff for ever; say so once per distinct cause."""
        if problem != self._last_failure:
            log.warning("%s; retrying with backoff, messages wait in the outbox", problem)
            self._last_failure = problem
        else:
            log.debug("%s; still retrying", problem)

    def _home_assistant_online(self, client: paho.Client) -> None:
        """Send the discovery configs again, at most once per REDISCOVERY_INTERVAL: announcements in
        between are coalesced into one re-send at the end of the interval (a flood of `online` costs
        two rounds of configs and two log lines, not one round per message)."""
        with self._rediscovery:
            wait = self._last_rediscovery + REDISCOVERY_INTERVAL - time.monotonic()
            if wait > 0 or self._deferred is not None:
                self._coalesced += 1
                if self._deferred is None:
                    self._deferred = threading.Timer(wait, self._coalesced_rediscovery, args=(client,))
                    self._deferred.name, self._deferred.daemon = "mqtt-rediscovery", True
                    self._deferred.start()
                return
            self._last_rediscovery = time.monotonic()
        log.info("MQTT: Home Assistant came online; sending discovery configs again")
        self._publish_discovery(client)

    def _coalesced_rediscovery(self, client: paho.Client) -> None:
        """The timer's end of `_home_assistant_online`."""
        with self._rediscovery:
            if self._deferred is None:  # cancelled by close()
                return
            self._deferred, count, self._coalesced = None, self._coalesced, 0
            self._last_rediscovery = time.monotonic()
        if self.stopping or not self.connected:
            return  # the next connect sends every config anyway
        log.info("MQTT: Home Assistant announced itself %d more time(s) within %.0f s; sending discovery configs "
                 "once more", count, REDISCOVERY_INTERVAL)
        self._publish_discovery(client)

    def _publish_discovery(self, client: paho.Client) -> None:
        if not self.settings.discovery.enabled:
            return
        for topic, payload in self.discovery.configs().items():
            client.publish(topic, payload, qos=1, retain=True)

    def _notify(self) -> None:
        with self._progress:
            self._progress.notify_all()
