"""The running daemon: capture threads -> gate -> NPU queue -> engine -> rules, history, MQTT.

`App` runs the parts `daemon.service.build` wired for it, until stopped, or
with `once` until every file and folder source has ended and the queue has
drained. `handle` (daemon.service.npu_side) is the NPU workers' one entry point
(one worker and engine per NPU, `daemon.service.npus`): every job goes through
it, on the engine of the NPU that took it, and so does every engine error:

- `Cancelled` (shutting down): nothing is published or stored for the job;
- `QuestionError` (a question the model cannot take): the asker gets it as the
  reply, a window or summary logs it and the daemon goes on (an HTTP chat job
  tells its client itself, see `daemon.service.chat`);
- a state file that cannot be written (`StateError`, `StorageError`, or a
  `PublishError` from the outbox) stops the daemon with that error's exit code:
  a storage problem, not an engine error;
- anything else (a broken runtime, a bug such as a `ShapeError`) is fatal:
  the worker stops and systemd restarts the daemon.

Capture threads belong to the camera watchdog (`daemon.service.cameras`), which
restarts a dead or stalled capture; a camera down for `health.down_after` makes
the daemon unhealthy, so the systemd watchdog restarts it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Callable, Protocol

from daemon.engine.engine import Engine
from daemon.errors import (
    EXIT_NEEDS_FIX,
    EXIT_OK,
    EXIT_TRANSIENT,
    Busy,
    PublishError,
    VlmwatchError,
)
from daemon.service.cameras import Camera, CameraWatch
from daemon.service.fairness import RateLimiter
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.npu_side import STORAGE_ERRORS, Analysed, NpuSide
from daemon.service.npus import EngineInUse, Npu
from daemon.service.worker import AskJob, NpuReport, NpuWorker, SummaryWork, WindowJob, WorkQueue
from daemon.state.history import History
from daemon.state.recovery import queue_unqueued
from daemon.types import CameraStatus, Result, Window
from daemon.video import FileSource, FolderSource

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.config.summaries import SummaryJob
    from daemon.rules.runner import RuleRunner
    from daemon.service.chat import ChatService
    from daemon.summaries.runner import Fire, Summarizer
    from daemon.summaries.scheduler import SummaryScheduler

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0  # seconds between retention passes
LOAD_LOG_EVERY = 300.0  # seconds between log lines with each NPU's load


class Publisher(Protocol):
    """What the App needs of daemon.mqtt.publisher.Publisher (tests may pass a fake)."""

    error: object

    def publish_result(self, result: Result, message_id: str | None = None) -> object: ...

    def reply(self, request, result: Result) -> None: ...

    def reply_error(self, request, error: str) -> None: ...

    def stats(self): ...

    def publish_npu(self, load: float, queue: int, ts: float) -> object: ...

    def stop(self, timeout: float) -> None: ...


__all__ = ["Analysed", "App", "Camera", "Publisher"]


class App(NpuSide):
    def __init__(self, config: Config, npus: list[Npu], cameras: dict[str, Camera], history: History,
                 queue: WorkQueue, stop: threading.Event, *, metrics: Metrics,
                 notifier: Notifier, publisher: Publisher | None = None, rules: RuleRunner | None = None,
                 summarizer: Summarizer | None = None, scheduler: SummaryScheduler | None = None,
                 summary_engine: EngineInUse | None = None, limiter: RateLimiter | None = None,
                 chat: ChatService | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.config, self.npus, self.cameras, self.history = config, npus, cameras, history
        self.queue, self.stop = queue, stop
        self.metrics, self.notifier, self.publisher, self.rules = metrics, notifier, publisher, rules
        self.summarizer, self.scheduler, self.clock = summarizer, scheduler, clock
        self.summary_engine = summary_engine  # what the summarizer holds: bound to the step's NPU
        self.limiter = limiter or RateLimiter(config.asks.per_minute, config.asks.burst)
        self.chat = chat  # the HTTP API's side of the NPU queue, when http is enabled
        self.latest: dict[str, Analysed] = {}  # written by NPU workers; one window per camera at a time
        self._rules_lock = threading.Lock()  # rule state is one read-modify-write per batch
        self._skipping: dict[str, int] = {}  # camera -> windows skipped in a row (said once at INFO)
        status = self._publish_status if hasattr(publisher, "publish_camera_status") else None
        self.watch = CameraWatch(cameras, self._capture, config.health, metrics, monotonic=monotonic, wall=clock,
                                 on_status=status)
        self.fatal: VlmwatchError | None = None  # a storage failure that stopped the daemon
        self._fatal_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The first NPU's engine (the only one by default)."""
        return self.npus[0].engine

    @property
    def worker(self) -> NpuWorker:
        """The first NPU's worker (the only one by default)."""
        return self.npus[0].worker

    # ------------------------------------------------------------------ lifecycle

    def run(self, once: bool = False) -> int:
        """Run until stopped (or, with once, until the sources end); the exit code (see `shutdown`)."""
        if self.publisher is not None:
            queue_unqueued(self.history, self.publisher)  # what a crash kept from the outbox goes first
        for cam in self.cameras.values():
            if cam.main is not None:
                cam.main.start(self.stop)
        self.watch.start()
        for npu in self.npus:
            self.metrics.add_npu(npu.label)
            npu.worker.start(lambda job, npu=npu: self.handle(job, npu))
        if self.scheduler is not None:
            self.scheduler.start(self._queue_summary)
        self.notifier.ready("watching %d camera(s)" % len(self.cameras))
        log.info("vlmwatch running: %d camera(s), model %s on %s", len(self.cameras), self.engine.name,
                 ", ".join(n.label for n in self.npus))
        interval = min(self.notifier.watchdog_interval() or 1.0, 1.0)
        last_prune = last_load_log = 0.0
        report = NpuReport([n.worker for n in self.npus])  # `<base>/npu`: the mean load over the NPUs
        while not self.stop.wait(interval):
            self.watch.check()
            if self.healthy():
                self.notifier.watchdog()
            if self.clock() - last_prune > PRUNE_EVERY:
                last_prune = self.clock()
                try:
                    self.history.prune(last_prune, self.config.retention.keep_seconds)
                except STORAGE_ERRORS as exc:
                    self.fail(exc)
                    break
            if self.rules is not None:
                self.rules.expire(self.clock())  # sensors whose hold ran out turn OFF, gated windows or not
            self.metrics.set_queue_depth(self.queue.depth)
            for npu in self.npus:
                self.metrics.set_npu_load(npu.label, npu.worker.load(60.0))
            if self.clock() - last_load_log >= LOAD_LOG_EVERY:
                if last_load_log:
                    self.log_load(LOAD_LOG_EVERY)
                last_load_log = self.clock()
            if self.publisher is not None and report.due():
                report.reported(self.publisher.publish_npu(report.load(), self.queue.depth, self.clock()))
            if self.publisher is not None and not self._check_publisher():
                break
            if once and not self._capturing() and self.queue.wait_idle(0):
                break
        return self.shutdown()

    def shutdown(self, timeout: float = 10.0) -> int:
        """Stop everything; 0, or the exit code of what stopped us (daemon.errors: 2 needs a person, 1 may pass)."""
        self.notifier.stopping()
        if self.scheduler is not None:
            self.scheduler.shutdown()  # no new fires; queued summaries are abandoned with the queue
        self.stop.set()
        self.watch.halt()
        self.queue.close()
        deadline = time.monotonic() + timeout
        self.watch.join(deadline)
        for cam in self.cameras.values():
            if cam.main is not None:
                cam.main.close()
        for npu in self.npus:
            npu.worker.join(max(0.1, deadline - time.monotonic()))
        if self.publisher is not None:
            self.publisher.stop(max(1.0, min(5.0, deadline - time.monotonic())))  # flush, then `offline`
        if self.fatal is not None:
            log.error("stopped: %s", self.fatal)
            return self.fatal.exit_code
        if self.publisher is not None and self.publisher.error is not None:
            log.error("stopped: %s", self.publisher.error)
            return EXIT_NEEDS_FIX  # the broker refused us for good: credentials or TLS
        failed = [npu for npu in self.npus if npu.worker.error is not None]
        if failed:
            log.error("stopping after a fatal engine error: %s (on %s)", failed[0].worker.error, failed[0].label)
            return EXIT_TRANSIENT
        log.info("vlmwatch stopped")
        return EXIT_OK

    def fail(self, exc: VlmwatchError) -> None:
        """Stop the daemon for a storage failure (any thread); the first one sets the exit code."""
        with self._fatal_lock:
            first = self.fatal is None
            if first:
                self.fatal = exc
        if first:
            log.error("stopping: %s", exc)
        self.stop.set()

    def _check_publisher(self) -> bool:
        """Export MQTT state; False once the broker refused us for good (bad credentials, TLS)."""
        stats = self.publisher.stats()
        self.metrics.set_mqtt_connected(stats.connected)
        self.metrics.set_outbox_depth(stats.outbox_depth)
        self.metrics.set_dead_letters(stats.dead_letters)
        return self.publisher.error is None

    def rule_states(self) -> dict[tuple[str, str], bool]:
        """(rule, camera) -> ON now, for every rule on every camera it watches (any thread)."""
        if self.rules is None:
            return {}
        return self.rules.sensor_states(list(self.cameras), self.clock())

    def healthy(self) -> bool:
        """What the systemd watchdog ping stands for: every NPU worker runs and no camera is down."""
        return all(npu.worker.alive() and npu.worker.error is None for npu in self.npus) and not self.watch.down()

    def log_load(self, span: float) -> None:
        """One line: how busy each NPU was over the last `span` seconds, and what waits."""
        loads = ", ".join(f"{npu.label} {100 * npu.worker.load(span):.0f} %" for npu in self.npus)
        log.info("NPU load over the last %.0f min: %s; %d job(s) waiting", span / 60, loads, self.queue.depth)

    def _capturing(self) -> bool:
        return self.watch.capturing()

    def _publish_status(self, status: CameraStatus) -> None:
        try:
            self.publisher.publish_camera_status(status)
        except PublishError as exc:  # the outbox cannot take it: results will say so (and stop us) too
            log.warning("camera %s: status not published: %s", status.camera, exc)

    # ------------------------------------------------------------------ capture side

    def _capture(self, cam: Camera, halt: threading.Event) -> None:
        """A capture thread's body (run and restarted by the camera watchdog) until the source ends or
        `halt`. Any other error is the watchdog's to log and restart; a state file that cannot be
        written stops the daemon."""
        name = cam.settings.name
        windows = cam.source.windows(halt)
        paced = self._paced_by_npu(cam)
        try:
            while True:
                if paced:  # before reading: a recording decodes its next window once the NPU can queue it
                    self.queue.wait_slot(name, halt)
                window = next(windows, None)
                if window is None:
                    break
                self.watch.saw_window(name)
                self._gate(cam, window)
                del window  # the queue holds it now (or nobody): do not keep its frames while the source reads on
        except STORAGE_ERRORS as exc:
            self.fail(exc)
        finally:
            windows.close()

    def _gate(self, cam: Camera, window: Window) -> None:
        """Skip a window without change (recorded as skipped), or queue it for the NPU; the stale window
        it replaces in the queue is recorded as dropped."""
        window, decision = cam.gate.check(window, now=window.end)
        if not decision.analyse:
            self.history.record_window(window, False, decision.reason, self.clock())
            self.metrics.window_skipped(window.camera)
            self._log_skip(window.camera, decision.reason)
            self._finished(window)
            return
        skipped = self._skipping.pop(window.camera, 0)
        if skipped:
            log.info("camera %s: analysing a window again after %d skipped: %s", window.camera, skipped,
                     decision.reason)
        if cam.main is not None:  # the gate read the substream; the model sees the main stream
            window = cam.main.take(window) or window
        dropped = self.queue.put_window(WindowJob(window, decision.reason))
        if dropped is not None:
            self.history.record_window(dropped.window, False, "dropped: a newer window replaced it", self.clock())
            self.watch.window_dropped(window.camera)
            self._finished(dropped.window)

    def _log_skip(self, camera: str, reason: str) -> None:
        """The first skip of a run at INFO (the gate at work, without a line every few seconds), the rest at DEBUG."""
        count = self._skipping[camera] = self._skipping.get(camera, 0) + 1
        level = logging.INFO if count == 1 else logging.DEBUG
        log.log(level, "camera %s: window skipped, %s%s", camera, reason,
                "; further skips are logged at debug level until a window is analysed" if count == 1 else "")

    def _finished(self, window: Window) -> None:
        """`window` is in history (analysed, skipped, dropped or refused): a file source remembers it,
        so that a restart resumes after it."""
        cam = self.cameras.get(window.camera)
        recorded = getattr(cam.source, "recorded", None) if cam is not None else None
        if recorded is not None:
            recorded(window)

    @staticmethod
    def _paced_by_npu(cam: Camera) -> bool:
        """Recordings not replayed in real time wait for the NPU; live sources drop stale windows."""
        return isinstance(cam.source, (FileSource, FolderSource)) and not cam.settings.realtime

    def on_ask(self, request) -> None:
        """MQTT ask (paho's thread): only queue it. Raising sends the asker an error reply
        (`Busy` for a client over its rate limit or a full queue)."""
        if request.camera not in self.cameras:
            raise ValueError(f"unknown camera {request.camera!r}")
        wait = self.limiter.take(f"mqtt:{request.camera}", time.monotonic())
        if wait > 0:
            self.metrics.ask_refused("mqtt", "rate")
            raise Busy(f"too many questions on camera {request.camera}: {self.limiter.describe()}; ask again in"
                       f" {math.ceil(wait)} s", wait, "rate")
        latest = self.latest.get(request.camera)
        if not self.queue.put_ask(AskJob(request.camera, request, latest.npu if latest else None)):
            self.metrics.ask_refused("mqtt", "queue")
            raise Busy("too many questions are waiting for the NPU; ask again in a minute", 60.0, "queue")

    def _queue_summary(self, job: SummaryJob, fire: Fire) -> bool:
        """A cron fire (scheduler thread): queue the summary behind the windows, one model call a turn."""
        return self.queue.put_summary(SummaryWork(job.id, self.summarizer.run_steps(job, fire, self.stop)))
