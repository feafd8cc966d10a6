"""The NPU workers: one named thread per NPU, the only caller of that NPU's engine.

`model.devices` lists the NPUs (default one). `NpuPool` owns the workers' lifecycle
(start, health, join) and their load figures; what a worker does with a job is
`daemon.service.jobs`'s business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from daemon.engine.engine import Engine
from daemon.service.workqueue import Job, WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Npu:
    """One NPU: its position in `model.devices` (`index`, the queue's affinity), its name in metrics and
    logs (`npu<index>`), its engine and the worker thread that alone calls that engine."""

    index: int
    label: str
    engine: Engine
    worker: NpuWorker


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


class NpuPool:
    """Every NPU's worker thread: started together, healthy together, joined together."""

    def __init__(self, npus: Sequence[Npu]) -> None:
        self.npus = list(npus)
        self.report = NpuReport([n.worker for n in self.npus])  # `<base>/npu`: the mean load over the NPUs

    def __iter__(self):
        return iter(self.npus)

    def __getitem__(self, index: int) -> Npu:
        return self.npus[index]

    def __len__(self) -> int:
        return len(self.npus)

    @property
    def labels(self) -> str:
        return ", ".join(n.label for n in self.npus)

    def start(self, handle: Callable[[Job, Npu], None]) -> None:
        for npu in self.npus:
            npu.worker.start(lambda job, npu=npu: handle(job, npu))

    def healthy(self) -> bool:
        return all(npu.worker.alive() and npu.worker.error is None for npu in self.npus)

    def failed(self) -> Npu | None:
        """The first NPU whose worker stopped on an error, if any."""
        return next((npu for npu in self.npus if npu.worker.error is not None), None)

    def join(self, deadline: float) -> None:
        """Wait for the workers until `deadline` (time.monotonic())."""
        for npu in self.npus:
            npu.worker.join(max(0.1, deadline - time.monotonic()))

    def loads(self, span: float) -> dict[str, float]:
        """Each NPU's busy fraction over the last `span` seconds."""
        return {npu.label: npu.worker.load(span) for npu in self.npus}
