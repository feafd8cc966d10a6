"""Main-stream frames on demand, for cameras whose gate reads a low-resolution substream.

    main = open_main_frames("porch", "rtsp://cam/main", settings, detect=substream_source)
    main.start(stop)                    # cameras: a thread keeping the main stream's packets
    window = main.take(window) or window  # a window the gate passed, with the main stream's frames
    main.close()

Why packets: an H.264/H.265 frame can only be decoded from the keyframe before
it, so a main stream whose frames may be wanted must either be decoded all the
time (what the substream is there to avoid: ~17 % of a fast x86 core for
1080p25, far more on a Cortex-A55) or kept *compressed*. `StreamFrames` reads
the main stream without decoding it (OpenCV's raw mode: demuxing only, about
1 % of a core) and keeps `span + stride + KEEP_MARGIN` seconds of packets, a
few MB at camera bit rates. When the gate passes a window, the packets from
the keyframe before it to its end are decoded once (one GOP plus the window,
on the capture thread) and the frames nearest to the substream frames' times
are taken. Packets are stamped with the wall clock on arrival, as the
substream's frames are, so the two streams agree to within their network
latency difference (usually well under a frame interval at 1 fps sampling).
Streams with B-frames decode in another order than they arrive; frames are
then matched by position, off by at most the reorder depth (2-3 frames).

`FileFrames` does the same for a pair of files (a recording and its
low-resolution copy): frames at the same media time.
"""

from __future__ import annotations

import logging
import random
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

from daemon.config.cameras import SourceSettings
from daemon.redact import redact_url
from daemon.types import Frame, Window
from daemon.video.events import EventSink, emit
from daemon.video.decoders import decoding, open_capture
from daemon.video.stream import backoff_delay
from daemon.video.windows import segment_times

log = logging.getLogger(__name__)

KEEP_MARGIN = 10.0  # seconds of packets kept beyond span + stride (the capture queue's lag, a late gate)
MAX_BYTES = 128 * 1024 * 1024  # packets kept at most, whatever the bit rate
SUFFIXES = {"h264": ".h264", "avc1": ".h264", "hevc": ".hevc", "hev1": ".hevc", "hvc1": ".hevc", "h265": ".hevc"}


class MainFrames(Protocol):
    def start(self, stop: threading.Event) -> None: ...

    def take(self, window: Window) -> Window | None:
        """The window with the main stream's frames at its frames' times, or None (logged) if it has none."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Packet:
    ts: float  # arrival, POSIX seconds (the clock's)
    number: int  # monotonic per stream: the frame's index
    data: bytes
    key: bool


class StreamFrames:
    """A camera's main stream kept as packets (see the module's docstring). `clock` stamps packets."""

    def __init__(self, name: str, url: str, settings: SourceSettings, *, on_event: EventSink | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.name, self.settings, self.on_event = name, settings, on_event
        self._url, self.safe_url = url, redact_url(url)
        self._clock, self._rng = clock, rng or random.Random()
        self.keep = settings.span + settings.stride + KEEP_MARGIN
        # the gate read keyframes only: its frames are not at the segment mid-points, the model's must be
        self.at_segments = settings.stream.gate_decode == "keyframes"
        self._packets: deque[Packet] = deque()
        self._bytes = 0
        self._header = b""  # codec extradata (H.264 SPS/PPS), written before the packets
        self._suffix: str | None = None
        self._number = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # -- the capture thread (packets only)

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._run, args=(stop,), name=f"main-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(self.settings.stream.open_timeout + self.settings.stream.read_timeout + 2.0)

    def _stopped(self, stop: threading.Event) -> bool:
        return stop.is_set() or self._halt.is_set()

    def _run(self, stop: threading.Event) -> None:
        attempt = 0
        while not self._stopped(stop):
            capture = self._open()
            if capture is not None and self._read(capture, stop) > 0:
                attempt = 0
            if self._stopped(stop):
                break
            s = self.settings.stream
            delay = backoff_delay(attempt, s.retry_min, s.retry_max, self._rng)
            attempt += 1
            if stop.wait(delay) or self._halt.is_set():
                break

    def _open(self):
        import cv2

        s = self.settings.stream
        params = [cv2.CAP_PROP_FORMAT, -1, cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(s.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(s.read_timeout * 1000)]
        capture = open_capture(self._url, params)
        if not capture.isOpened():
            capture.release()
            emit(self.name, "error", f"main stream {self.safe_url}: cannot open it; check address and credentials",
                 self.on_event, logging.WARNING)
            return None
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").lower()
        suffix = SUFFIXES.get(fourcc)
        if suffix is None:
            capture.release()
            remedy = "set stream.gate_decode: all" if self.at_segments else "set frames_from: detect"
            emit(self.name, "error", f"main stream {self.safe_url}: codec {fourcc!r} cannot be kept as packets "
                 f"(H.264 or H.265 can); {remedy} for this camera", self.on_event, logging.ERROR)
            return None
        ok, extradata = capture.retrieve(flag=int(capture.get(cv2.CAP_PROP_CODEC_EXTRADATA_INDEX)))
        with self._cond:
            self._suffix, self._header = suffix, bytes(extradata.ravel()) if ok and extradata is not None else b""
            self._packets.clear()  # a new connection: the old packets do not continue into the new ones
            self._bytes = 0
        emit(self.name, "connected", f"main stream {self.safe_url} ({fourcc}): keeping {self.keep:.0f} s of packets",
             self.on_event)
        return capture

    def _read(self, capture, stop: threading.Event) -> int:
        import cv2

        count = 0
        try:
            while not self._stopped(stop):
                ok, data = capture.read()
                if not ok or data is None:
                    emit(self.name, "lost", f"main stream {self.safe_url}: lost after {count} packets", self.on_event,
                         logging.WARNING)
                    break
                key = bool(capture.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME))
                self._number += 1
                self._add(Packet(self._clock(), self._number, bytes(data.ravel()), key))
                count += 1
        finally:
            capture.release()
        return count

    def _add(self, packet: Packet) -> None:
        with self._cond:
            self._packets.append(packet)
            self._bytes += len(packet.data)
            self._trim(packet.ts - self.keep)
            self._cond.notify_all()

    def _trim(self, oldest: float) -> None:
        """Drop packets before the last keyframe older than `oldest` (what is kept stays decodable), and
        whole GOPs beyond MAX_BYTES."""
        packets = self._packets
        while len(packets) > 1:
            after = next((i for i, p in enumerate(packets) if i > 0 and p.key), None)
            if after is None or (packets[after].ts > oldest and self._bytes <= MAX_BYTES):
                return
            for _ in range(after):
                self._bytes -= len(packets.popleft().data)

    # -- on demand (the capture thread of the substream)

    def take(self, window: Window) -> Window | None:
        wanted = segment_times(window.start, window.end, self.settings.frames) if self.at_segments \
            else [f.ts for f in window.frames]
        with self._cond:  # the main stream may lag the substream a little: wait for its packets
            self._cond.wait_for(lambda: self._packets and self._packets[-1].ts >= wanted[-1],
                                timeout=self.settings.stream.read_timeout)
            packets, header, suffix = list(self._packets), self._header, self._suffix
        first = max((i for i, p in enumerate(packets) if p.key and p.ts <= wanted[0]), default=None)
        if first is None or suffix is None:
            log.warning("camera %s: the main stream has no frames from %.1f s ago (not connected, or keyframes "
                        "further apart than %.0f s); the window keeps the gate's frames", self.name,
                        time.time() - wanted[0], self.keep)
            return None
        last = next((i for i in range(first, len(packets)) if packets[i].ts > wanted[-1]), len(packets) - 1)
        segment = packets[first : last + 1]
        picks = [min(range(len(segment)), key=lambda i: abs(segment[i].ts - t)) for t in wanted]
        images = decode(header + b"".join(p.data for p in segment), suffix, set(picks))
        if any(i not in images for i in picks):
            log.warning("camera %s: %d of %d main-stream packets decoded; the window keeps the gate's frames",
                        self.name, len(images), len(segment))
            return None
        frames = {i: Frame(self.name, segment[i].ts, segment[i].number, images[i]) for i in set(picks)}
        return replace(window, frames=tuple(frames[i] for i in picks))


def decode(stream: bytes, suffix: str, wanted: set[int]) -> dict:
    """Decode an elementary stream (from a keyframe); the pictures at the `wanted` positions (BGR)."""
    with tempfile.NamedTemporaryFile(suffix=suffix, prefix="vlmwatch-main-") as file:
        file.write(stream)
        file.flush()
        capture = open_capture(file.name, (), decoding().options(suffix.lstrip(".")))
        images: dict = {}
        try:
            position = 0
            while position <= max(wanted) and capture.grab():  # decode every frame, convert only the wanted
                if position in wanted:
                    ok, image = capture.retrieve()
                    if ok:
                        images[position] = image
                position += 1
        finally:
            capture.release()
    return images


class FileFrames:
    """The main file of a pair whose gate reads the low-resolution copy: frames at the same media
    time (`media_time(ts)` turns a window frame's time into seconds since the file's start)."""

    def __init__(self, name: str, path: Path, media_time: Callable[[float], float | None]) -> None:
        self.name, self.path, self.media_time = name, Path(path), media_time
        self._reader = None

    def start(self, stop: threading.Event) -> None:  # opened on first use
        pass

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None

    def take(self, window: Window) -> Window | None:
        from daemon.video.file import VideoFile

        try:
            if self._reader is None:
                self._reader = VideoFile(self.path)
            reader = self._reader
            times = [self.media_time(f.ts) for f in window.frames]
            if any(t is None for t in times):
                return None
            indices = [min(reader.frame_count - 1, max(0, round(t * reader.fps))) for t in times]
            images = {i: bgr for i, _, bgr in reader.read(sorted(set(indices)))}
        except Exception as exc:  # noqa: BLE001 - OpenCV and a broken file raise many kinds
            log.warning("camera %s: cannot read %s (%s); the window keeps the detect file's frames", self.name,
                        self.path, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            return None
        frames = {i: Frame(self.name, f.ts, i, images[i]) for i, f in zip(indices, window.frames)}
        return replace(window, frames=tuple(frames[i] for i in indices))
