"""The web page's read-only view of the running daemon (`daemon.http.live.Live`); runs nothing on its own.

A camera's picture is its latest analysed window's most changed frame, encoded once per window; the
frames of the last RECENT analysed windows are kept as small JPEGs, taken when the page looks.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from daemon.http.live import LiveCamera, LiveNpu
from daemon.types import Window
from daemon.video.snapshot import changed_most, jpeg

if TYPE_CHECKING:
    from daemon.service.daemon import Daemon

RECENT = 8  # analysed windows per camera whose frames are kept (about 8 x 8 x 25 KB)
FRAME_QUALITY = 70


class LiveView:
    """Snapshots of the daemon's cameras and NPUs for the page; thread-safe, bounded."""

    def __init__(self, daemon: Daemon, timezone: str) -> None:
        self.daemon, self.timezone = daemon, timezone
        self._lock = threading.Lock()
        self._pictures: dict[str, tuple[Window, bytes]] = {}
        self._recent: dict[str, deque[tuple[float, list[bytes]]]] = {c: deque(maxlen=RECENT) for c in daemon.cameras}

    def cameras(self) -> list[LiveCamera]:
        states = self.daemon.watch.states()
        out = []
        for name, cam in self.daemon.cameras.items():
            state, error = states.get(name, ("starting", None))
            latest = self.daemon.pipeline.windows.latest.get(name)
            out.append(LiveCamera(name, state, error, latest.window.start if latest else None,
                                  tuple(cam.settings.gate.masks), tuple(cam.settings.zones.items())))
        return out

    def picture(self, camera: str) -> bytes | None:
        latest = self.daemon.pipeline.windows.latest.get(camera)
        if latest is None:
            return None
        window = latest.window
        with self._lock:
            seen = self._pictures.get(camera)
            if seen is not None and seen[0] is window:
                return seen[1]
        picture = jpeg(changed_most(window.frames, None))
        frames = [jpeg(f, FRAME_QUALITY) for f in window.frames]
        with self._lock:
            self._pictures[camera] = (window, picture)
            recent = self._recent.setdefault(camera, deque(maxlen=RECENT))
            if not recent or recent[-1][0] != window.start:
                recent.append((window.start, frames))
        return picture

    def frames(self, camera: str, start: float) -> list[bytes] | None:
        self.picture(camera)  # the latest window's frames are kept now if they were not yet
        with self._lock:
            return next((frames for s, frames in self._recent.get(camera, ()) if s == start), None)

    def npus(self) -> list[LiveNpu]:
        return [LiveNpu(npu.label, npu.worker.load(60.0), npu.engine.kv_path) for npu in self.daemon.npus]

    def queue_depth(self) -> int:
        return self.daemon.queue.depth
