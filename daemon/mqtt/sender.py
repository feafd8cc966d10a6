"""The outbox sender: one thread moving outbox rows to paho, at most `IN_FLIGHT` unacknowledged,
deleting them on PUBACK. It only moves forward (paho resends what is unacknowledged); a row paho
refuses for good becomes a dead letter. paho's thread hands acks and replies over in memory
(`ack`, `post`), so neither thread waits on the other or on the disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from daemon.errors import VlmwatchError
from daemon.mqtt.outbox import Outbox, OutboxMessage

log = logging.getLogger(__name__)

IN_FLIGHT = 32  # outbox messages handed to paho and not yet acknowledged


class Sender:
    """`start(client, connected)`, then `put` (any thread but paho's), `post` and `ack` (paho's thread), `stop`."""

    def __init__(self, outbox: Outbox, progress: threading.Condition) -> None:
        self.outbox = outbox
        self._progress = progress  # notified after every round, for Publisher.stop's flush
        self._client: paho.Client | None = None
        self._connected: Callable[[], bool] = lambda: False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._posted: queue.SimpleQueue[OutboxMessage] = queue.SimpleQueue()
        self._in_flight: dict[int, int] = {}  # paho mid -> outbox row id; sender thread only
        self._cursor = 0  # highest outbox row id handed to paho; sender thread only
        self.sent = 0  # outbox messages handed to paho (a resend after restart counts again)
        self.acknowledged = 0

    def start(self, client: paho.Client, connected: Callable[[], bool]) -> None:
        self._client, self._connected = client, connected
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """End the thread; replies still posted in memory are stored in the outbox first."""
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    # -- handing messages over -------------------------------------------------

    def put(self, message: OutboxMessage) -> None:
        """Store a message in the outbox now (PublishError if the disk is full) and wake the sender."""
        self.outbox.put(message)
        self._wake.set()

    def post(self, message: OutboxMessage) -> None:
        """Queue a message in memory for the sender to store: for paho's network thread, which must not
        wait on SQLite. A failure to store it is logged, not raised."""
        self._posted.put(message)
        self._wake.set()

    def ack(self, mid: int) -> None:
        """The broker acknowledged message `mid` (paho's thread, under its message lock: no calls back)."""
        self._acks.put(mid)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # -- state -----------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing waiting: the outbox is empty and no posted message is still in memory."""
        return self.outbox.depth == 0 and self._posted.empty()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        while not self._halt.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._store_posted()
                self._drain_acks()
                if self._connected() and not self._halt.is_set():
                    self._fill_window()
            except Exception:
                log.exception("MQTT: outbox sender failed; retrying in a second")
                self._halt.wait(1.0)
            with self._progress:
                self._progress.notify_all()
        self._store_posted()  # replies produced while stopping wait in the outbox for the next start

    def _store_posted(self) -> None:
        while True:
            try:
                message = self._posted.get_nowait()
            except queue.Empty:
                return
            try:
                self.outbox.put(message)
            except (VlmwatchError, RuntimeError) as exc:  # PublishError: disk full; RuntimeError: closed
                log.warning("MQTT: could not queue a %s for %s: %s", message.kind.value, message.topic, exc)

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
            self.outbox.ack(*row_ids)  # one commit per batch, not per message
            self.acknowledged += len(row_ids)

    def _fill_window(self) -> None:
        assert self._client is not None
        while len(self._in_flight) < IN_FLIGHT and self._connected():
            batch = self.outbox.pending(after_id=self._cursor, limit=IN_FLIGHT - len(self._in_flight))
            if not batch:
                return
            for row in batch:
                try:
                    info = self._client.publish(row.topic, row.payload, qos=1, retain=row.retain)
                except ValueError as exc:  # "Publish topic is too long.", "Payload too large.", not UTF-8, ...
                    # Refused for good: retrying would block every message behind it, for ever.
                    self.outbox.dead_letter(row, f"paho refused it: {exc}")
                    self._cursor = row.id
                    continue
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    return  # message id still in use: try again on the next wake-up
                # MQTT_ERR_NO_CONN is fine too: paho keeps the message and sends it on reconnect.
                self._in_flight[info.mid] = row.id
                self._cursor = row.id
                self.sent += 1
