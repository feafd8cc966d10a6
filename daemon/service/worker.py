"""The NPU queue and the worker threads, one per NPU, each owning its engine.

The queue is bounded by construction: at most one pending window per camera
(a newer window replaces the pending one, and the replaced one is counted as
dropped), short lists of questions (MQTT asks, HTTP chat completions) that go
first, and summary jobs that wait behind every window.

Questions go first only while they stay within their share of NPU time: the
workers measure how long each job kept an NPU busy, and while a window waits
and questions took more than `ask_share` of the busy time of the last minute,
the window goes next (see `daemon.service.fairness`).

With several NPUs every worker takes from the same queue (`get(npu=i)`), so a
window goes to whichever NPU is free first: the least loaded. Two rules keep
the single-NPU guarantees:

- a camera's windows are analysed one at a time, in order: a window waits
  while the camera's previous one is still on another NPU (rule state,
  `latest` and history stay in the camera's order);
- a question goes to the NPU that holds its camera's prefix (`AskJob.npu`);
  any NPU could answer it, but another one would first prefill the prefix
  again (seconds of NPU time). HTTP chats bring their own frames: any NPU.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Callable, Generator, Sequence

from daemon.service.fairness import NpuShare
from daemon.types import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowJob:
    window: Window
    reason: str = ""  # why the gate let it through

    @property
    def key(self) -> str:
        """Its place in the queue: one pending window per camera (a newer one replaces it)."""
        return self.window.camera


@dataclass(frozen=True)
class StoryJob(WindowJob):
    """An ended event's story: one 8-frame model pass at a window's priority (daemon.service.events).
    `window` spans the event and has no frames: they are taken from the event book when the job runs."""

    event_id: str = ""

    @property
    def key(self) -> str:
        return f"{self.window.camera}/story/{self.event_id}"  # never replaced by a window or another story


@dataclass(frozen=True)
class AskJob:
    camera: str
    request: Any  # the MQTT ask request; answered on the camera's latest analysed window
    npu: int | None = None  # the NPU whose engine holds that window's prefix; None: any


@dataclass(frozen=True, eq=False)
class ChatJob:
    """An HTTP chat completion: its own frames and question, answered through `sink`.

    `cancel` is set when the client went away or gave up waiting: the worker
    skips the job, or the engine stops at its next step."""

    client: str
    request: Any  # daemon.http.messages.Completion
    sink: Any  # daemon.http.messages.Sink: started / token / finished / failed
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # set once the worker is through with it


@dataclass(frozen=True, eq=False)
class SummaryWork:
    """A summary in progress: each step is one model call; the queue puts it behind waiting windows."""

    job_id: str
    steps: Generator[None, None, Any] = field(repr=False)


Job = WindowJob | AskJob | ChatJob | SummaryWork
Question = AskJob | ChatJob


def kind_of(job: Job) -> str:
    """The accounting kind of a job: "ask" (MQTT or HTTP question), "window" or "summary"."""
    if isinstance(job, (AskJob, ChatJob)):
        return "ask"
    return "window" if isinstance(job, WindowJob) else "summary"


class WorkQueue:
    """Questions first (within their NPU share while windows wait), then the oldest pending
    camera window, then summaries; for each NPU, what it may take."""

    def __init__(self, max_asks: int = 16, max_summaries: int = 16, *, max_chats: int = 4,
                 ask_share: float = 0.5, share: NpuShare | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._cond = threading.Condition()
        self._windows: dict[str, tuple[int, WindowJob]] = {}  # camera -> (arrival, newest window)
        self._asks: deque[Question] = deque()  # MQTT asks and HTTP chats, in arrival order
        self._summaries: deque[SummaryWork] = deque()
        self._max_asks, self._max_chats, self._max_summaries = max_asks, max_chats, max_summaries
        self.ask_share, self.share, self._clock = ask_share, share or NpuShare(), clock
        self._seq = count()
        self._closed = False
        self._in_flight = 0  # jobs handed out and not yet marked done
        self._analysing: dict[int, str] = {}  # npu -> camera whose window it is analysing

    def put_window(self, job: WindowJob) -> WindowJob | None:
        """Queue a window; return the stale job of the same camera it replaced, if any."""
        camera = job.key
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

    def put_ask(self, job: Question) -> bool:
        """Queue a question; False when its kind's list (MQTT asks or HTTP chats) is full."""
        with self._cond:
            limit = self._max_chats if isinstance(job, ChatJob) else self._max_asks
            if sum(isinstance(j, type(job)) for j in self._asks) >= limit:
                return False
            self._asks.append(job)
            self._cond.notify()
        return True

    def withdraw(self, job: Question) -> bool:
        """Take a question out of line before it started (its asker gave up); False if it was not waiting."""
        with self._cond:
            try:
                self._asks.remove(job)
            except ValueError:
                return False
            self._cond.notify_all()
            return True

    def waiting(self, kind: type) -> int:
        """Questions of `kind` (AskJob or ChatJob) waiting in line."""
        with self._cond:
            return sum(isinstance(j, kind) for j in self._asks)

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
            camera = self._window_for(npu)
            if ask is not None and not (camera is not None and self._asks_over_share()):
                self._asks.remove(ask)
                return ask
            if camera is not None:
                self._analysing[npu] = camera
                self._cond.notify_all()  # wakes wait_slot
                return self._windows.pop(camera)[1]
            return self._summaries.popleft()

    def _has_work(self, npu: int) -> bool:
        return self._ask_for(npu) is not None or self._window_for(npu) is not None or bool(self._summaries)

    def _ask_for(self, npu: int) -> Question | None:
        """The oldest question NPU `npu` may take: one without affinity (`npu` None or absent), or its own."""
        return next((a for a in self._asks if getattr(a, "npu", None) in (None, npu)), None)

    def _window_for(self, npu: int) -> str | None:
        """The camera of the oldest pending window that no other NPU is analysing a window of."""
        busy = {c for n, c in self._analysing.items() if n != npu}
        waiting = [c for c in self._windows if c not in busy]
        return min(waiting, key=lambda c: self._windows[c][0]) if waiting else None

    def _asks_over_share(self) -> bool:
        return self.share.fraction("ask", self._clock()) > self.ask_share

    def done(self, job: Job | None = None, seconds: float = 0.0, npu: int = 0) -> None:
        """Mark the job last returned by get() for `npu` as finished; it kept the NPU busy for `seconds`."""
        with self._cond:
            self._in_flight -= 1
            self._analysing.pop(npu, None)
            if job is not None:
                self.share.record(kind_of(job), seconds, self._clock())
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
        self._total = 0.0  # seconds spent in finished jobs since start
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
            started = self.clock()
            self._mark(start=started)
            try:
                self.handle(job)
            except Exception as exc:  # the engine is broken: let systemd restart us
                log.exception("NPU worker %s failed on %s", self._thread.name, type(job).__name__)
                self.error = exc
                self.stop.set()
            finally:
                ended = self.clock()
                self._mark(end=ended)
                self.queue.done(job, ended - started, npu=self.npu)

    def _mark(self, start: float | None = None, end: float | None = None) -> None:
        with self._lock:
            if start is not None:
                self._current = start
            elif self._current is not None:
                self._busy.append((self._current, end))
                self._total += end - self._current
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

    def busy_seconds(self) -> float:
        """Seconds spent on jobs since start, the running one included (any thread)."""
        with self._lock:
            running = self.clock() - self._current if self._current is not None else 0.0
            return self._total + running

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


NPU_REPORT_EVERY = 30.0  # seconds between `<base>/npu` reports (load over this period, queue depth)


class NpuReport:
    """The NPUs' load between reports: the fraction of wall time their workers spent on jobs, the mean over
    the NPUs (each NPU's own load is in the metrics, `vlmwatch_npu_load`)."""

    def __init__(self, workers: NpuWorker | Sequence[NpuWorker], every: float = NPU_REPORT_EVERY):
        self.workers = [workers] if isinstance(workers, NpuWorker) else list(workers)
        self.every, self._clock = every, self.workers[0].clock  # the workers' own clock
        self._busy, self._at = self._busy_now(), self._clock()
        self._next = 0.0  # the first report goes out at once

    def _busy_now(self) -> float:
        return sum(w.busy_seconds() for w in self.workers) / len(self.workers)

    def due(self) -> bool:
        return self._clock() >= self._next

    def load(self) -> float:
        """Since the last report that went out."""
        return min(1.0, (self._busy_now() - self._busy) / max(self._clock() - self._at, 1e-3))

    def reported(self, sent: object) -> None:
        """After publishing: a report that went out starts the next period; one that did not (MQTT away)
        is tried again at the next tick, over the longer period."""
        if sent:
            self._busy, self._at = self._busy_now(), self._clock()
            self._next = self._at + self.every


def describe(job: Job) -> str:
    """The job in a log line."""
    if isinstance(job, StoryJob):
        return f"camera {job.window.camera}: story of event {job.event_id}"
    if isinstance(job, WindowJob):
        return f"camera {job.window.camera}: window at {job.window.start:.1f}"
    if isinstance(job, AskJob):
        return f"camera {job.camera}: question {job.request.id!r}"
    if isinstance(job, ChatJob):
        return f"HTTP request from {job.client}"
    if isinstance(job, SummaryWork):
        return f"summary {job.job_id}"
    return repr(job)
