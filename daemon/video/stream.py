"""Live cameras: one capture thread (`stream-<name>`) per camera, reading continuously, reconnecting forever.

OpenCV's FFmpeg backend does the network work. The thread grabs (demuxes and
decodes) every frame so the stream never goes stale, but converts to a picture
only the frames a window takes (`LiveWindows.wants`), and keeps of those only
what the gate, snapshots and the model need (`FrameMaker`). Finished windows wait in
a small queue; when the consumer falls behind the oldest is dropped and
counted, so capture never blocks.

Failure handling: an open that takes longer than `open_timeout`, or a read
without a frame for `read_timeout` (a frozen or vanished camera), closes the
capture; the thread waits a capped exponential backoff with jitter and opens
again. While the camera's TCP port is closed (an outage, a reboot) the port is
checked every second during that wait and the camera opened as soon as it
accepts, so a backoff grown during a long outage never keeps it away for long.
When a camera will not open, `probe.why_not_open` asks it why (unauthorized,
unreachable, not a video stream). Each state change is one log line with the camera's name; the URL is
only ever shown redacted.

FFmpeg options come from OPENCV_FFMPEG_CAPTURE_OPTIONS ("key;value|key;value").
When it is unset, `rtsp_transport;tcp` is used: UDP loses packets (smeared
frames) on busy Wi-Fi and through NAT. Set it in the service's environment to
override, e.g. for a camera that only offers UDP. Each capture opens through
`daemon.video.decoders` (its own options, e.g. keyframes only for the gate's
stream with `stream.gate_decode: keyframes`; the board's hardware decoder).

OpenCV and FFmpeg write their own log lines straight to file descriptor 2,
past Python's logging ("[tcp @ 0x...] Connection refused" on every retry).
They say nothing the state-change lines above do not, so they are kept out
unless debug logging is on (`-v`, or `logging.level: debug`): then they show
as the libraries write them. OPENCV_LOG_LEVEL and OPENCV_FFMPEG_LOGLEVEL set in
the environment win.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from daemon.config.cameras import KEYFRAME_GAP, SourceSettings
from daemon.redact import redact_url
from daemon.types import Window
from daemon.video.decoders import KEYFRAMES_ONLY, CameraDecoder, open_capture
from daemon.video.events import EventSink, SourceBase, emit
from daemon.video.frames import FrameMaker
from daemon.video.probe import OK, accepts, camera_address, why_not_open
from daemon.video.windows import KeyframeWindows, LiveWindows

log = logging.getLogger(__name__)


FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"  # read once, when OpenCV first opens anything with FFmpeg
OPENCV_LOGLEVEL_ENV = "OPENCV_LOG_LEVEL"
AV_LOG_QUIET = -8
PROBE_TIMEOUT = 5.0  # seconds for asking a camera that would not open why
PORT_CHECK = 1.0  # seconds between checks of a closed camera port during a backoff


def quiet_native_logs(debug: bool) -> None:
    """Keep OpenCV's and FFmpeg's own stderr lines out, unless `debug` (or the user's environment
    says otherwise). Call before the first capture opens: FFmpeg's level is fixed then."""
    import cv2

    if debug:
        return
    os.environ.setdefault(FFMPEG_LOGLEVEL_ENV, str(AV_LOG_QUIET))
    if OPENCV_LOGLEVEL_ENV not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def backoff_delay(attempt: int, first: float, cap: float, rng: random.Random) -> float:
    """Seconds before reconnect attempt `attempt` (0-based): doubling from `first`,
    capped at `cap`, then scaled by a random 50..100 % so that cameras that
    dropped together do not reconnect in lockstep."""
    return min(cap, first * 2.0 ** min(attempt, 30)) * (0.5 + 0.5 * rng.random())


class StreamSource(SourceBase):
    """An rtsp://, rtsps:// or http(s):// (MJPEG) camera.

    `clock` stamps each grabbed frame (called once per frame; POSIX seconds by
    default). `rng` jitters the backoff. Counters for metrics: `connects`,
    `dropped` (windows the consumer was too slow for), `last_frame_at`
    (time.monotonic() of the last frame, for a watchdog).
    """

    live = True  # windows arrive all the time while the camera works: the watchdog restarts a silent one

    def __init__(
        self,
        name: str,
        url: str,
        settings: SourceSettings,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        make_frame: FrameMaker | None = None,
        decoder: CameraDecoder | None = None,
    ) -> None:
        self.name, self.settings, self.on_event = name, settings, on_event
        self.decoder = decoder or CameraDecoder(name)  # software or the board's hardware decoder
        self.keyframes = settings.stream.gate_decode == "keyframes"
        self.make_frame = make_frame or FrameMaker(settings.picture_width)
        self._url = url  # never log this one: it may carry credentials
        self.safe_url = redact_url(url)
        self._address = camera_address(url)  # (host, port) whose TCP port tells an outage from other trouble
        self._clock, self._rng = clock, rng or random.Random()
        self._index = 0  # frame number, monotonic across reconnects
        self.connects = 0
        self.dropped = 0
        self.last_frame_at: float | None = None

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        """Start the capture thread and yield its windows until `stop` (or until
        the caller stops iterating); the thread is joined before this returns."""
        out: queue.Queue[Window] = queue.Queue(maxsize=self.settings.stream.queue)
        halt = threading.Event()
        thread = threading.Thread(target=self._run, args=(halt, out), name=f"stream-{self.name}", daemon=True)
        thread.start()
        try:
            while not stop.is_set():
                try:
                    yield out.get(timeout=0.1)  # short, so that `stop` is noticed promptly
                except queue.Empty:
                    continue
        finally:
            halt.set()
            limit = self.settings.stream.open_timeout + self.settings.stream.read_timeout + 2.0
            thread.join(timeout=limit)
            if thread.is_alive():
                log.warning("camera %s: capture thread still busy %.0f s after stop; leaving it", self.name, limit)

    # -- capture thread

    def _run(self, halt: threading.Event, out: queue.Queue) -> None:
        attempt = 0
        while not halt.is_set():
            capture = self._open()
            if capture is not None:
                if self._read(capture, halt, out) > 0:
                    attempt = 0  # it worked for a while: start the backoff afresh
            if halt.is_set():
                break
            s = self.settings.stream
            delay = backoff_delay(attempt, s.retry_min, s.retry_max, self._rng)
            attempt += 1
            emit(self.name, "retrying", f"retrying in {delay:.1f} s (attempt {attempt})", self.on_event)
            if self._wait(halt, delay):
                break

    def _wait(self, halt: threading.Event, delay: float) -> bool:
        """Wait out the backoff, or less: while the camera's port is closed (an outage, a reboot) it is
        checked every PORT_CHECK seconds, and the camera is tried again as soon as the port accepts, so
        a backoff grown during a long outage does not keep it away once it is back. True when halted."""
        host, port = self._address
        if not host or accepts(host, port, PORT_CHECK / 2):
            return halt.wait(delay)  # it answers, yet failed: a login or stream problem; back off in full
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            if halt.wait(min(PORT_CHECK, left)):
                return True
            if accepts(host, port, PORT_CHECK / 2):
                emit(self.name, "retrying", f"{host}:{port} accepts connections again; reconnecting now",
                     self.on_event)
                return False
        return False

    def _open(self):
        """A connected cv2.VideoCapture, or None after reporting why not."""
        import cv2

        s = self.settings.stream
        quiet_native_logs(log.isEnabledFor(logging.DEBUG))
        read_timeout = s.read_timeout + (KEYFRAME_GAP if self.keyframes else 0.0)  # grab() waits for a keyframe
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, round(s.open_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(read_timeout * 1000),
        ]  # fmt: skip
        threads = self.settings.threads(live=True)
        if threads > 0:
            params += [cv2.CAP_PROP_N_THREADS, threads]
        started = time.monotonic()
        capture = self.decoder.open(self._url, params, (KEYFRAMES_ONLY,) if self.keyframes else ())
        if capture.isOpened():
            self.connects += 1
            width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            shape = f"{width}x{height}, {capture.get(cv2.CAP_PROP_FPS):.0f} fps" + self._decoding_note()
            emit(self.name, "connected", f"connected to {self.safe_url} ({shape})", self.on_event)
            return capture
        capture.release()
        waited = time.monotonic() - started
        if waited >= 0.9 * s.open_timeout:
            why = "unreachable: no answer (open timeout); check the address and the network"
        else:  # FFmpeg's error does not say which: ask the camera (401, refused, 404, ...)
            why = str(why_not_open(self._url, min(s.open_timeout, PROBE_TIMEOUT)))
        message = f"cannot open {self.safe_url} after {waited:.1f} s: {why}"
        emit(self.name, "error", message, self.on_event, logging.WARNING)
        return None

    def _decoding_note(self) -> str:
        """What the connected line adds when this camera does not decode every frame in software."""
        notes = (["the gate decodes keyframes only"] if self.keyframes else []) + \
            ([f"decoder {self.decoder.in_use}"] if self.decoder.in_use != "software" else [])
        return "; " + ", ".join(notes) if notes else ""

    def _read(self, capture, halt: threading.Event, out: queue.Queue) -> int:
        """Grab frames until the stream fails or `halt`; returns how many were grabbed."""
        s = self.settings
        windows = KeyframeWindows(self.name, s.span, s.stride, s.frames, KEYFRAME_GAP) if self.keyframes \
            else LiveWindows(self.name, s.span, s.stride, s.frames)
        grabbed, why = 0, "stopped"
        try:
            while not halt.is_set():
                started = time.monotonic()
                if not capture.grab():
                    waited = time.monotonic() - started
                    timeout = waited >= 0.9 * self.settings.stream.read_timeout
                    why = f"no frame for {waited:.1f} s (read timeout)" if timeout else "stream ended or broke"
                    break
                ts, self.last_frame_at = self._clock(), time.monotonic()
                self._index += 1
                grabbed += 1
                if windows.wants(ts):
                    ok, image = capture.retrieve()
                    if not ok:
                        why = "a frame could not be decoded"
                        break
                    frame = self.make_frame(self.name, ts, self._index, image)  # keeps reduced copies only
                    for window in windows.add(frame):
                        self._deliver(out, window)
        finally:
            capture.release()
        if not halt.is_set():
            message = f"lost {self.safe_url} after {grabbed} frames: {why}"
            emit(self.name, "lost", message, self.on_event, logging.WARNING)
        return grabbed

    def _deliver(self, out: queue.Queue, window: Window) -> None:
        """Queue a window; if the consumer is behind, drop the oldest (latest wins)."""
        while True:
            try:
                out.put_nowait(window)
                return
            except queue.Full:
                try:
                    out.get_nowait()
                    self.dropped += 1
                    log.debug("camera %s: consumer behind, dropped a window (%d so far)", self.name, self.dropped)
                except queue.Empty:
                    pass


@dataclass(frozen=True)
class ProbeResult:
    verdict: str
    detail: str  # "1920x1080, 25 fps" when OK


def probe_camera(url: str, timeout: float) -> ProbeResult:
    """Open the camera once through OpenCV, as the daemon does, and read one frame; on failure, why."""
    import cv2

    quiet_native_logs(False)
    ms = round(timeout * 1000)
    started = time.monotonic()
    capture = open_capture(url, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    try:
        if capture.isOpened() and capture.grab():
            width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            return ProbeResult(OK, f"{width}x{height}, {capture.get(cv2.CAP_PROP_FPS):.0f} fps")
    finally:
        capture.release()
    diagnosis = why_not_open(url, max(1.0, timeout - (time.monotonic() - started)))
    return ProbeResult(diagnosis.verdict, diagnosis.detail)
