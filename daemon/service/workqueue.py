"""The NPU work queue: what waits for an NPU, in which order, and who may add more.

Bounded by construction: one pending window per camera (a newer one replaces it in place),
short lists of questions that go first within their share of NPU time (`NpuShare`), summary
steps last. Why, and how several NPUs share it: docs/design.md.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any, Callable

from daemon.types import Window

if TYPE_CHECKING:
    from daemon.summaries.runner import SummaryRun


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
class SummaryJob:
    """A summary in progress: each `run.step(engine)` is one model call; between calls it waits in line
    behind the windows, and the next call may run on another NPU."""

    job_id: str
    run: SummaryRun = field(repr=False)


Job = WindowJob | AskJob | ChatJob | SummaryJob
Question = AskJob | ChatJob


def kind_of(job: Job) -> str:
    """The accounting kind of a job: "ask" (MQTT or HTTP question), "window", "story" (an event's) or "summary"."""
    if isinstance(job, (AskJob, ChatJob)):
        return "ask"
    if isinstance(job, StoryJob):
        return "story"
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
        self._summaries: deque[SummaryJob] = deque()
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

    def put_summary(self, job: SummaryJob) -> bool:
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
        return next((a for a in self._asks if not isinstance(a, AskJob) or a.npu in (None, npu)), None)

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


class NpuShare:
    """NPU busy time by job kind over a sliding window of `horizon` seconds."""

    def __init__(self, horizon: float = 60.0):
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self.horizon = horizon
        self._spans: deque[tuple[float, str, float]] = deque()  # (end, kind, seconds), oldest first
        self._busy: dict[str, float] = defaultdict(float)

    def record(self, kind: str, seconds: float, now: float) -> None:
        """A job of `kind` kept the NPU busy for `seconds`, ending at `now`."""
        seconds = max(0.0, seconds)
        self._spans.append((now, kind, seconds))
        self._busy[kind] += seconds
        self._forget(now)

    def fraction(self, kind: str, now: float) -> float:
        """The part (0..1) of the busy time within the horizon that went to `kind`; 0 when idle."""
        self._forget(now)
        total = sum(self._busy.values())
        return self._busy[kind] / total if total > 0 else 0.0

    def seconds(self, kind: str, now: float) -> float:
        self._forget(now)
        return self._busy[kind]

    def _forget(self, now: float) -> None:
        while self._spans and self._spans[0][0] < now - self.horizon:
            _, kind, seconds = self._spans.popleft()
            self._busy[kind] = max(0.0, self._busy[kind] - seconds)


class RateLimiter:
    """A token bucket per client: `burst` questions at once, then `per_minute` a minute.

    `per_minute` 0 turns limiting off. At most `max_clients` buckets are kept
    (the least recently seen are forgotten, which only ever lets a client
    ask sooner), so a stream of new client addresses cannot grow memory.
    Thread-safe: MQTT's network thread and the HTTP server call it.
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 4096):
        if per_minute < 0 or burst < 1:
            raise ValueError(f"need per_minute >= 0 and burst >= 1, got {per_minute} and {burst}")
        self.rate, self.burst, self.max_clients = per_minute / 60.0, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def describe(self) -> str:
        """The limit in words, for refusals: 'at most 6 a minute (bursts of 3)'."""
        return f"at most {self.rate * 60:g} a minute (bursts of {self.burst})"

    def take(self, client: str, now: float) -> float:
        """Take one question for `client`: 0.0 when allowed, else the seconds until one is."""
        if not self.enabled:
            return 0.0
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


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
    if isinstance(job, SummaryJob):
        return f"summary {job.job_id}"
    return repr(job)
