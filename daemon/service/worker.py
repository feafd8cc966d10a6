"""The NPU queue and the worker threads, one per NPU, each owning its engine.

The queue is bounded by construction: at most one pending window per camera
(a newer window replaces the pending one, and the replaced one is counted as
dropped), a short list of ad-hoc questions that go first, and summary jobs
that wait behind every window.

With several NPUs every worker takes from the same queue (`get(npu=i)`), so a
window goes to whichever NPU is free first: the least loaded. Two rules keep
the single-NPU guarantees:

- a camera's windows are analysed one at a time, in order: a window waits
  while the camera's previous one is still on another NPU (rule state,
  `latest` and history stay in the camera's order);
- a question goes to the NPU that holds its camera's prefix (`AskJob.npu`);
  any NPU could answer it, but another one would first prefill the prefix
  again (seconds of NPU time).
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
    npu: int | None = None  # the NPU whose engine holds that window's prefix; None: any


@dataclass(frozen=True, eq=False)
class SummaryWork:
    """A summary in progress: each step is one model call; the queue puts it behind waiting windows."""

    job_id: str
    steps: Generator[None, None, Any] = field(repr=False)


Job = WindowJob | AskJob | SummaryWork


class WorkQueue:
    """Asks first, then the oldest pending camera window, then summaries; for each NPU, what it may take."""

    def __init__(self, max_asks: int = 16, max_summaries: int = 16):
        self._cond = threading.Condition()
        self._windows: dict[str, tuple[int, WindowJob]] = {}  # camera -> (arrival, newest window)
        self._asks: deque[AskJob] = deque()
        self._summaries: deque[SummaryWork] = deque()
        self._max_asks, self._max_summaries = max_asks, max_summaries
        self._seq = count()
        self._closed = False
        self._in_flight = 0  # jobs handed out and not yet marked done
        self._analysing: dict[int, str] = {}  # npu -> camera whose window it is analysing

    def put_window(self, job: WindowJob) -> WindowJob | None:
        """Queue a window; return the stale job of the same camera it replaced, if any."""
        camera = job.window.camera
        with self._cond:
            old = self._windows.get(camera)
            # A replaced window keeps its place in line: a busy camera is not pushed back.
            seq = old[0] if old else next(self._seq)
            self._windows[camera] = (seq, job)
            self._cond.notify_all()  # every idle NPU: not every one may take every job
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
            self._cond.notify_all()
        return True

    def get(self, timeout: float | None = None, npu: int = 0) -> Job | None:
        """The next job NPU `npu` may take, or None after `timeout` seconds or once closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._has_work(npu), timeout):
                return None
            if not self._has_work(npu):
                return None
            self._in_flight += 1
            ask = self._ask_for(npu)
            if ask is not None:
                self._asks.remove(ask)
                return ask
            camera = self._window_for(npu)
            if camera is not None:
                self._analysing[npu] = camera
                self._cond.notify_all()  # wakes wait_slot
                return self._windows.pop(camera)[1]
            return self._summaries.popleft()

    def _has_work(self, npu: int) -> bool:
        return self._ask_for(npu) is not None or self._window_for(npu) is not None or bool(self._summaries)

    def _ask_for(self, npu: int) -> AskJob | None:
        """The oldest question NPU `npu` may take: one without affinity (`npu` None or absent), or its own."""
        return next((a for a in self._asks if getattr(a, "npu", None) in (None, npu)), None)

    def _window_for(self, npu: int) -> str | None:
        """The camera of the oldest pending window that no other NPU is analysing a window of."""
        busy = {c for n, c in self._analysing.items() if n != npu}
        waiting = [c for c in self._windows if c not in busy]
        return min(waiting, key=lambda c: self._windows[c][0]) if waiting else None

    def done(self, npu: int = 0) -> None:
        """Mark the job last returned by get() for `npu` as finished."""
        with self._cond:
            self._in_flight -= 1
            self._analysing.pop(npu, None)
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
    """One named thread per NPU: takes the jobs that NPU may take and hands them to `handle`; a failure
    there is fatal. Keeps when it was busy, for its load."""

    LOAD_SPAN = 300.0  # seconds of job history kept for `load`

    def __init__(self, queue: WorkQueue, stop: threading.Event, npu: int = 0, name: str = "npu-worker",
                 clock=time.monotonic):
        self.queue, self.stop, self.npu, self.clock = queue, stop, npu, clock
        self.handle: Callable[[Job], None] | None = None
        self.error: BaseException | None = None
        self._busy: deque[tuple[float, float]] = deque()  # (start, end) of finished jobs, oldest first
        self._current: float | None = None  # start of the job in hand
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self, handle: Callable[[Job], None]) -> None:
        self.handle = handle
        self._thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            job = self.queue.get(timeout=0.2, npu=self.npu)
            if job is None:
                continue
            self._mark(start=self.clock())
            try:
                self.handle(job)
            except Exception as exc:  # the engine is broken: let systemd restart us
                log.exception("NPU worker %s failed on %s", self._thread.name, type(job).__name__)
                self.error = exc
                self.stop.set()
            finally:
                self._mark(end=self.clock())
                self.queue.done(self.npu)

    def _mark(self, start: float | None = None, end: float | None = None) -> None:
        with self._lock:
            if start is not None:
                self._current = start
            elif self._current is not None:
                self._busy.append((self._current, end))
                self._current = None
                while self._busy and self._busy[0][1] < end - self.LOAD_SPAN:
                    self._busy.popleft()

    def load(self, span: float = 60.0, now: float | None = None) -> float:
        """Fraction of the last `span` seconds (at most LOAD_SPAN) spent on jobs, the running one included."""
        now = self.clock() if now is None else now
        since = now - min(span, self.LOAD_SPAN)
        with self._lock:
            spans = list(self._busy) + ([(self._current, now)] if self._current is not None else [])
        busy = sum(max(0.0, min(end, now) - max(start, since)) for start, end in spans)
        return min(1.0, busy / (now - since)) if now > since else 0.0

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
