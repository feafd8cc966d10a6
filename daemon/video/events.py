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
    """What the daemon reads windows from; `SourceBase` gives the defaults of everything but `windows`."""

    name: str
    live: bool  # windows should arrive all the time (a camera): the camera watchdog restarts a silent one
    paced: bool  # a recording read no faster than the NPU queue takes its windows (none are dropped)
    dropped: int  # windows the source itself dropped because the daemon was behind
    last_frame_at: float | None  # time.monotonic() of the last frame read, None before the first

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        """Windows as they complete, until the source ends or `stop` is set."""
        ...

    def recorded(self, window: Window) -> None:
        """The daemon has recorded `window` for good: a file may resume after it."""
        ...

    def close(self) -> None:
        """Let go of what the source keeps open between runs (its progress record)."""
        ...


class SourceBase:
    """The defaults of `Source`: not live, not paced, nothing dropped or kept."""

    live = False
    paced = False
    dropped = 0
    last_frame_at: float | None = None

    def recorded(self, window: Window) -> None:
        pass

    def close(self) -> None:
        pass


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
