"""What sources go through (`SourceEvent`, sent with `emit`) and how they are named.

Every source has a `name` and `windows(stop) -> Iterator[Window]` (`Source`).
Trouble (a missing, corrupt or truncated file, a lost camera) is an *event*
(`SourceEvent`, passed to `on_event` and logged with the camera's name),
never an exception out of `windows()`. URLs are logged only through
`redact_url`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol
from urllib.parse import urlsplit

from daemon.redact import redact_text, redact_url
from daemon.types import Window

log = logging.getLogger(__name__)


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".m4v", ".ts", ".webm")


# ---------------------------------------------------------------- events, protocol, names


@dataclass(frozen=True)
class SourceEvent:
    """Something a source went through: connected | lost | retrying | error | finished."""

    camera: str
    kind: str
    message: str  # human-readable, credentials redacted
    ts: float


EventSink = Callable[[SourceEvent], None]


class Source(Protocol):
    """`live` (optional, default False): windows should arrive all the time (a camera), so a
    silent source is restarted by the daemon's camera watchdog. `recorded(window)` (optional):
    the daemon has recorded the window, so a file may resume after it (`FileSource`)."""

    name: str

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        """Windows as they complete, until the source ends or `stop` is set."""
        ...


def emit(camera: str, kind: str, message: str, on_event: EventSink | None, level: int = logging.INFO) -> None:
    """Log a source event with the camera's name and hand it to the listener (if any); any
    `user:password@` in the message is redacted first."""
    message = redact_text(message)
    log.log(level, "camera %s: %s", camera, message)
    if on_event is not None:
        on_event(SourceEvent(camera, kind, message, time.time()))


def source_name(uri: str) -> str:
    """A default name: the host of a URL, the file's stem, the folder's name."""
    if "://" in uri:
        host = urlsplit(redact_url(uri)).hostname
        return host or "camera"
    path = Path(uri.rstrip("/") or "/")
    return path.stem if path.suffix else path.name or "source"
