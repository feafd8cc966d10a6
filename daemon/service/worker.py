"""The NPU queue and the one worker thread that owns the engine.

The queue is bounded by construction: at most one pending window per camera
(a newer window replaces the pending one, and the replaced one is counted as
dropped), a short list of ad-hoc questions that go first, and summary jobs
that wait behind every window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Callable, Generator

from daemon.types import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowJob:
    window: Window
    reason: str = ""  # why the gate let it through


@dataclass(frozen=True)
class AskJob:
    camera: str
    request: Any  # the MQTT ask request; answered on the camera's latest analysed window


@dataclass(frozen=True, eq=False)
class SummaryWork:
    """A summary in progress: each step is one model call; the queue puts it behind waiting windows."""

    job_id: str
    steps: Generator[None, None, Any] = field(repr=False)


Job = WindowJob | AskJob | SummaryWork


class WorkQueue:
    """Asks first, then the oldest pending camera window, then summaries."""

    def __init__(self, max_asks: int = 16, max_summaries: int = 16):
        self._cond = threading.Condition()
        self._windows: dict[str, tuple[int, WindowJob]] = {}  # camera -> (arrival, newest window)
        self._asks: deque[AskJob] = deque()
        self._summaries: deque[SummaryWork] = deque()
        self._max_asks, self._max_summaries = max_asks, max_summaries
        self._seq = count()
        self._closed = False
        self._in_flight = 0  # jobs handed out and not yet marked done

    def put_window(self, job: WindowJob) -> WindowJob | None:
        """Queue a window; return the stale job of the same camera it replaced, if any."""
        camera = job.window.camera
        with self._cond:
            old = self._windows.get(camera)
            # A replaced window keeps its place in line: a busy camera is not pushed back.
            seq = old[0] if old else next(self._seq)
            self._windows[camera] = (seq, job)
            self._cond.notify()
        return old[1] if old else None

    def wait_slot(self, camera: str, stop: threading.Event) -> None:
        """Block until `camera` has no pending window (a recording is paced by the NPU, not dropped)."""
        with self._cond:
            while camera in self._windows and not self._closed and not stop.is_set():
                self._cond.wait(0.2)

    def put_ask(self, job: AskJob) -> bool:
        return self._put_bounded(self._asks, job, self._max_asks)

    def put_summary(self, job: SummaryWork) -> bool:
        return self._put_bounded(self._summaries, job, self._max_summaries)

    def _put_bounded(self, q: deque, job, limit: int) -> bool:
        with self._cond:
            if len(q) >= limit:
                return False
            q.append(job)
            self._cond.notify()
        return True

    def get(self, timeout: float | None = None) -> Job | None:
        """The next job, or None after `timeout` seconds or once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self.depth, timeout) or not self.depth:
                return None
            self._in_flight += 1
            if self._asks:
                return self._asks.popleft()
            if self._windows:
                camera = min(self._windows, key=lambda c: self._windows[c][0])
                self._cond.notify_all()  # wakes wait_slot
                return self._windows.pop(camera)[1]
            return self._summaries.popleft()

    def done(self) -> None:
        """Mark the job last returned by get() as finished."""
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or running."""
        with self._cond:
            return self._cond.wait_for(lambda: not self.depth and not self._in_flight, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        return len(self._asks) + len(self._windows) + len(self._summaries)


class NpuWorker:
    """One named thread: takes jobs and hands them to `handle`; a failure there is fatal."""

    def __init__(self, queue: WorkQueue, stop: threading.Event):
        self.queue, self.stop = queue, stop
        self.handle: Callable[[Job], None] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="npu-worker", daemon=True)
        self._busy = 0.0  # seconds spent in finished jobs
        self._busy_since: float | None = None  # time.monotonic() the running job started

    def start(self, handle: Callable[[Job], None]) -> None:
        self.handle = handle
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            job = self.queue.get(timeout=0.2)
            if job is None:
                continue
            self._busy_since = started = time.monotonic()
            try:
                self.handle(job)
            except Exception as exc:  # the engine is broken: let systemd restart us
                log.exception("NPU worker failed on %s", type(job).__name__)
                self.error = exc
                self.stop.set()
            finally:
                self._busy, self._busy_since = self._busy + time.monotonic() - started, None
                self.queue.done()

    def busy_seconds(self) -> float:
        """Seconds spent on jobs since start, the running one included (any thread)."""
        since = self._busy_since
        return self._busy + (time.monotonic() - since if since is not None else 0.0)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
