"""The systemd notification protocol (sd_notify) in plain Python: READY, WATCHDOG, STOPPING, STATUS,
EXTEND_TIMEOUT_USEC over the datagram socket in `NOTIFY_SOCKET` (a path or `@abstract`).
Outside systemd every call is a no-op; a failed send never raises.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Talks to systemd over `NOTIFY_SOCKET`; thread-safe, never raises on send.

    `address`: the socket (`/run/...` path or `@abstract`); None reads
    `NOTIFY_SOCKET` from `environ` (default `os.environ`); "" disables.
    `pid`: this process's id for the `WATCHDOG_PID` check (default `os.getpid()`).
    The socket is created on the first send, not here.
    """

    def __init__(
        self,
        address: str | None = None,
        environ: Mapping[str, str] | None = None,
        pid: int | None = None,
    ) -> None:
        self._environ = os.environ if environ is None else environ
        self.address = self._environ.get("NOTIFY_SOCKET", "") if address is None else address
        self._pid = pid
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failed = False  # a send has failed: later failures log at debug level only

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    # -- the messages the daemon sends ------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete; systemd starts the unit's watchdog clock now."""
        return self.notify("READY=1", *self._status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun (systemd then waits up to TimeoutStopSec)."""
        return self.notify("STOPPING=1", *self._status_line(status))

    def watchdog(self) -> bool:
        """Still healthy. Send only while the daemon's threads really are."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """A one-line state for `systemctl status` (newlines become spaces)."""
        return self.notify(*self._status_line(text))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start (or stop) timeout fires, e.g. while loading models."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half of WATCHDOG_USEC, as systemd recommends.

        None when no watchdog is configured, when WATCHDOG_PID names another
        process (the watchdog is not ours), or when the variables are garbled.
        """
        usec = self._environ.get("WATCHDOG_USEC")
        if not usec:
            return None
        owner = self._environ.get("WATCHDOG_PID")
        pid = os.getpid() if self._pid is None else self._pid
        try:
            if owner and int(owner) != pid:
                return None
            value = int(usec)
        except ValueError:
            log.warning("ignoring the systemd watchdog: WATCHDOG_USEC=%r / WATCHDOG_PID=%r are not integers",
                        usec, owner)
            return None
        if value <= 0:
            return None
        return value / 2e6

    # -- the protocol -----------------------------------------------------

    def notify(self, *fields: str) -> bool:
        """Send `KEY=value` fields in one datagram; True when sent, False when disabled or failed."""
        if not self.address or not fields:
            return False
        message = "\n".join(fields).encode("utf-8")
        with self._lock:
            try:
                sock = self._socket()
                sock.sendto(message, _sockaddr(self.address))
            except (OSError, ValueError) as exc:
                self._report_failure(exc)
                return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._sock

    def _report_failure(self, exc: Exception) -> None:
        if self._failed:
            log.debug("systemd notification to %s failed again: %s", self.address, exc)
            return
        self._failed = True
        log.warning(
            "cannot notify systemd through NOTIFY_SOCKET=%s: %s. The service keeps running, but systemd may "
            "consider its start-up or watchdog overdue; check the unit's NotifyAccess= and that this process "
            "is the unit's main process (further failures are logged at debug level)", self.address, exc)

    @staticmethod
    def _status_line(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        return ("STATUS=" + " ".join(text.splitlines()),)


def _sockaddr(address: str) -> str:
    """`@name` is a socket in the abstract namespace (a leading NUL byte); anything else must be a path."""
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    # e.g. systemd 254's "vsock:CID:PORT", which a unix socket cannot reach.
    raise ValueError(f"unsupported NOTIFY_SOCKET address {address!r} (expected /path or @abstract)")
