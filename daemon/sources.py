"""Video sources: cameras, files and folders, each turned into a stream of windows.

    source = open_source("porch", "rtsp://user:pw@cam/stream", SourceSettings())
    for window in source.windows(stop):      # blocks; ends when `stop` is set
        ...

Every source has a `name` and `windows(stop) -> Iterator[Window]`:

- `StreamSource` (`daemon.capture`): rtsp://, rtsps://, http(s):// through
  OpenCV's FFmpeg backend, one capture thread reading continuously, reconnect
  with capped exponential backoff. Never ends until `stop`.
- `FileSource` (here): one video file through decord, windows along the file's
  own timeline, paced at wall-clock speed with `realtime: true`. Ends at the
  end of the file.
- `FolderSource` (`daemon.folder`): each clip appearing in a folder, once.

Trouble (a missing, corrupt or truncated file, a lost camera) is an *event*
(`SourceEvent`, passed to `on_event` and logged with the camera's name),
never an exception out of `windows()`. URLs are logged only through
`redact_url`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.errors import SourceError
from daemon.gate import GateSettings
from daemon.types import Frame, Window
from daemon.windows import file_layout

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".m4v", ".ts", ".webm")


# ---------------------------------------------------------------- settings


class StreamSettings(BaseModel):
    """Camera connection behaviour (`stream:` under a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a camera to answer when connecting.")
    read_timeout: float = Field(
        5.0, gt=0, description="Seconds without a frame after which the stream counts as frozen and is reopened."
    )
    retry_min: float = Field(1.0, gt=0, description="Seconds before the first reconnect attempt.")
    retry_max: float = Field(60.0, gt=0, description="Cap of the exponential reconnect backoff, seconds.")
    queue: int = Field(
        2, ge=1, description="Finished windows held for a slow consumer; the oldest is dropped (and counted) beyond."
    )

    @model_validator(mode="after")
    def _retry_order(self) -> "StreamSettings":
        if self.retry_min > self.retry_max:
            raise ValueError(f"retry_min ({self.retry_min}) must not exceed retry_max ({self.retry_max})")
        return self


class FolderSettings(BaseModel):
    """Watching a folder of clips (`folder:` under a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll: float = Field(2.0, gt=0, description="Seconds between scans of the folder for new clips.")
    settle: float = Field(
        5.0, ge=0, description="Seconds a clip's size must stay unchanged before it counts as completely written."
    )


class SourceSettings(BaseModel):
    """Per-source windowing, gating and connection settings (embedded under each camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    span: float = Field(8.0, gt=0, description="Seconds of video one window covers.")
    stride: float = Field(
        8.0, gt=0, description="Seconds between window starts; default: same as span. Smaller overlaps windows."
    )
    frames: int = Field(8, ge=1, le=64, description="Frames per window, taken at the mid-points of equal segments.")
    realtime: bool = Field(
        False, description="Files only: emit windows at wall-clock speed, as if the recording were live."
    )
    gate: GateSettings = Field(default_factory=GateSettings, description="Scene-change gate.")
    stream: StreamSettings = Field(default_factory=StreamSettings, description="Camera connection and reconnects.")
    folder: FolderSettings = Field(default_factory=FolderSettings, description="Folder watching.")

    @model_validator(mode="before")
    @classmethod
    def _stride_defaults_to_span(cls, data):
        if isinstance(data, dict) and data.get("stride") is None:
            data = {k: v for k, v in data.items() if k != "stride"}
            span = data.get("span", cls.model_fields["span"].default)
            if isinstance(span, (int, float)) and not isinstance(span, bool):  # a bad span is reported once, as span
                data["stride"] = span
        return data


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
    name: str

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        """Windows as they complete, until the source ends or `stop` is set."""
        ...


def report(camera: str, kind: str, message: str, on_event: EventSink | None, level: int = logging.INFO) -> None:
    """Log a source event with the camera's name and hand it to the listener."""
    log.log(level, "camera %s: %s", camera, message)
    if on_event is not None:
        on_event(SourceEvent(camera, kind, message, time.time()))


_URL_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(.*)@")  # greedy: up to the last '@'
_SECRET_PARAM = re.compile(r"([?&;][^=&;#]*(?:pass|pwd|token|key|secret|auth|sig|user|login)[^=&;#]*=)[^&;#]*", re.I)


def redact_url(url: str) -> str:
    """The URL with user, password and secret-looking query values replaced by ***.

    Everything up to the last '@' counts as user information, so a password
    containing '@', ':' or '/' cannot leak through a misparse."""
    url = _URL_USERINFO.sub(r"\1***@", url)
    return _SECRET_PARAM.sub(r"\1***", url)


def source_name(uri: str) -> str:
    """A default name: the host of a URL, the file's stem, the folder's name."""
    if "://" in uri:
        host = urlsplit(redact_url(uri)).hostname
        return host or "camera"
    path = Path(uri.rstrip("/") or "/")
    return path.stem if path.suffix else path.name or "source"


def open_source(
    name: str,
    uri: str,
    settings: SourceSettings,
    *,
    on_event: EventSink | None = None,
    state_dir: str | os.PathLike | None = None,
    once: bool = False,
) -> Source:
    """The source for a URL, a video file or a folder of clips. Opens nothing yet.

    `once`: a folder source ends when every clip present has been processed."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in STREAM_SCHEMES:
        from daemon.capture import StreamSource

        return StreamSource(name, uri, settings, on_event=on_event)
    if scheme == "file":
        uri = urlsplit(uri).path
    elif scheme:
        raise SourceError(
            f"camera {name}: unsupported source {redact_url(uri)!r}; use rtsp://, rtsps://, http(s)://, "
            "a video file or a folder"
        )
    if uri.endswith("/") or Path(uri).is_dir():
        from daemon.folder import FolderSource, ProcessedFiles

        processed = ProcessedFiles(Path(state_dir) / "processed.sqlite") if state_dir else None
        return FolderSource(name, Path(uri), settings, processed=processed, on_event=on_event, once=once)
    return FileSource(name, Path(uri), settings, on_event=on_event)


# ---------------------------------------------------------------- files


class FileSource:
    """One video file through decord. Windows follow the file's timeline; only the
    frames that windows take are decoded to pictures, overlapping windows share them.

    Frame times are the file's media time plus an origin: the file's modification
    time minus its duration (when it was recorded, for an NVR export), or the wall
    clock at the start of the replay with `realtime`, so that it behaves as if live.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        settings: SourceSettings,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name, self.path, self.settings = name, Path(path), settings
        self.on_event, self._clock, self._wall = on_event, clock, wall
        self.windows_out = 0

    def _open(self):
        import decord

        if not self.path.is_file():
            raise SourceError(f"cannot read {self.path}: no such file; check the path")
        try:
            reader = decord.VideoReader(str(self.path), num_threads=1)
            frame_count, fps = len(reader), float(reader.get_avg_fps())
        except Exception as exc:  # decord raises bare RuntimeErrors (DECORDError) for bad files
            raise SourceError(f"cannot read {self.path}: {_first_line(exc)}; is it a complete video file?") from None
        if frame_count == 0 or not fps > 0:
            raise SourceError(f"cannot read {self.path}: no video frames; is it a complete video file?")
        return reader, frame_count, fps

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        try:
            reader, frame_count, fps = self._open()
        except SourceError as exc:
            report(self.name, "error", str(exc), self.on_event, logging.ERROR)
            return
        s = self.settings
        plans = file_layout(frame_count, fps, s.span, s.stride, s.frames)
        origin = self._wall() if s.realtime else self.path.stat().st_mtime - frame_count / fps
        paced_from = self._clock()
        report(self.name, "connected", f"reading {self.path.name} ({frame_count} frames, {fps:.1f} fps)", self.on_event)
        cache: dict[int, Frame] = {}
        for plan in plans:
            if stop.is_set():
                return
            try:
                frames = self._frames(reader, plan.indices, cache, origin)
            except Exception as exc:
                message = f"cannot decode {self.path.name} at {plan.start:.1f} s: {_first_line(exc)}; file truncated?"
                report(self.name, "error", message, self.on_event, logging.ERROR)
                return
            if s.realtime and stop.wait(max(0.0, paced_from + plan.end - plans[0].start - self._clock())):
                return
            self.windows_out += 1
            yield Window(self.name, origin + plan.start, origin + plan.end, frames)
        report(self.name, "finished", f"finished {self.path.name}: {len(plans)} windows", self.on_event)

    def _frames(self, reader, indices: tuple[int, ...], cache: dict[int, Frame], origin: float) -> tuple[Frame, ...]:
        """Frames at `indices`, reusing the objects of the previous window where they coincide."""
        for old in [i for i in cache if i < indices[0]]:
            del cache[old]
        missing = sorted({i for i in indices if i not in cache})
        if missing:
            batch = reader.get_batch(missing).asnumpy()  # [n, H, W, 3] RGB
            for i, rgb in zip(missing, batch):
                ts = origin + float(reader.get_frame_timestamp(i)[0])
                cache[i] = Frame(self.name, ts, i, rgb[:, :, ::-1].copy())  # BGR, contiguous
        return tuple(cache[i] for i in indices)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
