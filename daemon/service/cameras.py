"""The camera watchdog: each camera's capture thread, restarted with backoff when it dies or stalls.

`check()` runs about once a second: it restarts dead or stalled captures, marks a camera down
(which makes the daemon unhealthy, so systemd restarts it) and exports each camera's status.
The policy and its reasons: docs/design.md.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from daemon.config.cameras import CameraSettings
from daemon.config.daemon import HealthSettings
from daemon.service.ledger import Outcome, Settled
from daemon.service.metrics import Metrics
from daemon.types import CameraStatus
from daemon.video import MainFrames, Source
from daemon.video.gate import Gate
from daemon.video.stream import backoff_delay

log = logging.getLogger(__name__)

Capture = Callable[["Camera", threading.Event, Callable[[], None]], None]
STATUS_EVERY = 60.0  # seconds between status messages of a camera whose state did not change


@dataclass
class Camera:
    settings: CameraSettings
    source: Source  # the detect_source when there is one: what the gate reads
    gate: Gate
    thread: threading.Thread | None = None
    main: MainFrames | None = None  # with a detect_source: where passed windows take their frames


@dataclass
class _Watch:
    """One camera as the watchdog sees it; the capture thread writes under CameraWatch's lock."""

    halt: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0  # monotonic: the current capture thread's start
    last_window: float | None = None  # monotonic
    outcome: str | None = None  # how the current thread ended: ended | failed | halted
    error: str | None = None  # why the capture last failed or was restarted
    failing_since: float | None = None  # first failure or stall not followed by a window
    attempt: int = 0  # restarts since the capture last ran steadily: the backoff exponent
    restart_at: float | None = None  # a restart is due then (after the thread has ended)
    restarts: int = 0
    dropped: int = 0  # windows dropped unanalysed, NPU queue and capture queue
    source_dropped: int = 0  # the source's own count, as last seen
    state: str = "starting"
    published: tuple[str, float] | None = None  # state and time of the last status message


class CameraWatch:
    """Starts, watches and restarts the capture thread of every camera.

    `capture(camera, halt, saw_window)` is the thread's body (`daemon.service.windows`): it returns
    when the source ends or `halt` is set, raises when the capture breaks, and calls `saw_window()`
    for each window the source gives.
    """

    def __init__(self, cameras: dict[str, Camera], capture: Capture,
                 settings: HealthSettings, metrics: Metrics, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_status: Callable[[CameraStatus], None] | None = None) -> None:
        self.cameras, self.settings, self.metrics = cameras, settings, metrics
        self._capture, self._now, self._wall = capture, monotonic, wall
        self._rng, self._on_status = rng or random.Random(), on_status
        self._watches = {name: _Watch() for name in cameras}
        self._lock = threading.Lock()
        self._stopping = False
        self._since = 0.0  # when watching began

    # -- lifecycle (main thread) ------------------------------------------------

    def start(self) -> None:
        self._since = self._now()
        for name in self.cameras:
            self.metrics.add_camera(name)
            self._start(name, self._since)

    def halt(self) -> None:
        """Stop every capture (shutdown): nothing is restarted any more."""
        self._stopping = True
        for watch in self._watches.values():
            watch.halt.set()

    def join(self, deadline: float) -> None:
        """Wait for the capture threads until `deadline` (time.monotonic())."""
        for cam in self.cameras.values():
            if cam.thread is not None:
                cam.thread.join(max(0.1, deadline - time.monotonic()))

    def _start(self, name: str, now: float) -> None:
        cam, watch = self.cameras[name], self._watches[name]
        watch.halt, watch.started, watch.outcome, watch.restart_at = threading.Event(), now, None, None
        cam.thread = threading.Thread(target=self._run, args=(cam, watch, watch.halt), name=f"capture-{name}",
                                      daemon=True)
        cam.thread.start()

    def _run(self, cam: Camera, watch: _Watch, halt: threading.Event) -> None:
        name = cam.settings.name
        try:
            self._capture(cam, halt, lambda: self.saw_window(name))
        except Exception as exc:  # one broken camera must not take the others down: restarted by check()
            error = f"{type(exc).__name__}: {exc}"
            log.error("camera %s: capture failed: %s", name, error, exc_info=error != watch.error)
            self.metrics.set_source_state(name, "error")
            with self._lock:
                watch.outcome, watch.error = "failed", error
                if watch.failing_since is None:
                    watch.failing_since = self._now()
            return
        with self._lock:
            watch.outcome = "halted" if halt.is_set() else "ended"

    # -- from the capture and NPU threads -----------------------------------------

    def saw_window(self, name: str) -> None:
        """A window came from the camera's source: it is not down."""
        with self._lock:
            watch = self._watches[name]
            watch.last_window, watch.failing_since = self._now(), None

    def on_settled(self, settled: Settled) -> None:
        """A window's outcome (the window ledger's listener): dropped ones count in the camera's status."""
        if settled.outcome is Outcome.DROPPED and settled.window.camera in self._watches:
            with self._lock:
                self._watches[settled.window.camera].dropped += 1

    # -- the watchdog (main thread) ------------------------------------------------

    def check(self) -> None:
        """Restart what died or stalled, export each camera's health, publish what changed."""
        if self._stopping:
            return
        now = self._now()
        statuses = []
        for name, cam in self.cameras.items():
            with self._lock:
                status = self._check(name, cam, self._watches[name], now)
            if status is not None:
                statuses.append(status)
        if self._on_status is not None:
            for status in statuses:
                self._on_status(status)

    def down(self) -> list[str]:
        """Cameras down for health.down_after or longer (as of the last check)."""
        return [name for name, watch in self._watches.items() if watch.state == "down"]

    def states(self) -> dict[str, tuple[str, str | None]]:
        """Each camera's state (as of the last check) and why its capture last failed, for the web page."""
        with self._lock:
            return {name: (watch.state, watch.error) for name, watch in self._watches.items()}

    def capturing(self) -> bool:
        """Whether any camera may still deliver windows (not ended, not down)."""
        with self._lock:
            return any(w.outcome != "ended" and w.state != "down" for w in self._watches.values())

    def _check(self, name: str, cam: Camera, watch: _Watch, now: float) -> CameraStatus | None:
        alive = cam.thread is not None and cam.thread.is_alive()
        live = cam.source.live
        self._count_source_drops(name, cam, watch)
        if watch.outcome in ("failed", "halted") and not alive:
            if watch.restart_at is None:
                self._schedule_restart(name, cam, watch, now)
            elif now >= watch.restart_at:
                self._start(name, now)
                watch.restarts += 1
                self.metrics.capture_restarted(name)
                log.info("camera %s: capture restarted (%d so far)", name, watch.restarts)
        elif alive and live and watch.restart_at is None:
            quiet = now - max(watch.started, watch.last_window or watch.started)
            if quiet >= self.settings.stall_after:
                watch.error = f"no window for {quiet:.0f} s"
                log.warning("camera %s: %s (health.stall_after); restarting its capture", name, watch.error)
                if watch.failing_since is None:
                    watch.failing_since = watch.last_window if watch.last_window is not None else watch.started
                watch.halt.set()
                self._schedule_restart(name, cam, watch, now)
        elif alive and (watch.attempt or watch.failing_since) and self._steady(watch, live, now):
            watch.failing_since, watch.attempt = None, 0  # restarted and running steadily: the backoff starts afresh
        return self._update_state(name, cam, watch, now, live, alive)

    def _steady(self, watch: _Watch, live: bool, now: float) -> bool:
        """The current capture has run for health.stall_after (a live one with windows since its start)."""
        running = now - watch.started >= self.settings.stall_after
        return running and (not live or (watch.last_window or 0.0) >= watch.started)

    def _schedule_restart(self, name: str, cam: Camera, watch: _Watch, now: float) -> None:
        stream = cam.settings.stream
        delay = backoff_delay(watch.attempt, stream.retry_min, stream.retry_max, self._rng)
        watch.attempt += 1
        watch.restart_at = now + delay
        log.warning("camera %s: restarting its capture in %.1f s (attempt %d)", name, delay, watch.attempt)

    def _count_source_drops(self, name: str, cam: Camera, watch: _Watch) -> None:
        """Windows the source itself dropped because the daemon was behind (StreamSource.dropped)."""
        seen = cam.source.dropped
        if seen > watch.source_dropped:
            self.metrics.window_dropped(name, seen - watch.source_dropped)
            watch.dropped += seen - watch.source_dropped
            watch.source_dropped = seen

    def _update_state(self, name: str, cam: Camera, watch: _Watch, now: float, live: bool,
                      alive: bool) -> CameraStatus | None:
        quiet = now - (watch.last_window if watch.last_window is not None else self._since)
        failing = now - watch.failing_since if watch.failing_since is not None else 0.0
        down_for = max(quiet if live else 0.0, failing)
        down = watch.outcome != "ended" and self.settings.down_after > 0 and down_for >= self.settings.down_after
        if watch.outcome == "ended":
            state = "ended"
        elif down:
            state = "down"
        elif watch.restart_at is not None or not alive:
            state = "restarting"
        elif live and (watch.last_window is None or watch.last_window < watch.started):
            state = "starting"
        else:
            state = "up"
        if state == "down" and watch.state != "down":
            log.error("camera %s: down for %.0f s (health.down_after): the daemon reports itself unhealthy, so "
                      "systemd's watchdog restarts it", name, down_for)
        watch.state = state
        seen = self._last_frame(cam, watch)
        age = now - (self._since if seen is None else seen)
        self.metrics.camera_health(name, age, down)
        if watch.published is not None and watch.published[0] == state and now - watch.published[1] < STATUS_EVERY:
            return None
        watch.published = (state, now)
        return CameraStatus(name, state, self._wall(), None if seen is None else round(age, 1), watch.restarts,
                            watch.dropped, watch.error)

    @staticmethod
    def _last_frame(cam: Camera, watch: _Watch) -> float | None:
        """Monotonic time of the camera's last frame, the source's own (StreamSource.last_frame_at) or
        that of its last window; None before the first."""
        times = [t for t in (cam.source.last_frame_at, watch.last_window) if t is not None]
        return max(times) if times else None
