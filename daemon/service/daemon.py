"""The running daemon: starts the threads' owners, ticks once a second, shuts down, reports health.

No job logic lives here: a window's trip is `daemon.service.windows`, the NPU
workers' dispatch and error policy `daemon.service.jobs`. The owners of threads,
all started in `start` and stopped in `shutdown`: the HTTP server, the MQTT
publisher (its outbox sender) and trigger subscriber, the camera watchdog
(capture per camera), the NPU pool (one worker per NPU) and the summary
scheduler. `run` returns the exit code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from daemon.config import Config
from daemon.engine.engine import Engine
from daemon.errors import EXIT_NEEDS_FIX, EXIT_OK, EXIT_TRANSIENT, PublishError, VlmwatchError
from daemon.rules.runner import RuleRunner
from daemon.service.asks import AskHandler
from daemon.service.cameras import Camera, CameraWatch
from daemon.service.chat import ChatService
from daemon.service.events import EventService
from daemon.service.jobs import STORAGE_ERRORS, JobRunner
from daemon.service.ledger import WindowLedger
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.publishing import Publishing
from daemon.service.windows import WindowHandler
from daemon.service.workers import NpuPool
from daemon.service.workqueue import SummaryJob, WorkQueue
from daemon.state.history import History
from daemon.state.recovery import queue_unqueued
from daemon.summaries.runner import Fire, Summarizer
from daemon.summaries.scheduler import SummaryScheduler
from daemon.types import CameraStatus

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0  # seconds between retention passes
LOAD_LOG_EVERY = 300.0  # seconds between log lines with each NPU's load


class Serving(Protocol):
    """A connection's owner the daemon starts and stops: the HTTP server, the MQTT trigger subscriber."""

    def start(self) -> None: ...  # ConfigError when it cannot (a taken port, an unreadable password file)

    def stop(self) -> None: ...


@dataclass(frozen=True, eq=False)
class Pipeline:
    """The connected parts a running daemon drives (built by `daemon.service.build.assemble`)."""

    queue: WorkQueue
    ledger: WindowLedger
    windows: WindowHandler
    asks: AskHandler
    chat: ChatService | None = None
    rules: RuleRunner | None = None
    summarizer: Summarizer | None = None
    scheduler: SummaryScheduler | None = None
    events: EventService | None = None


class Daemon:
    def __init__(self, config: Config, npus: NpuPool, cameras: dict[str, Camera], pipeline: Pipeline,
                 history: History, stop: threading.Event, *, metrics: Metrics, notifier: Notifier,
                 publisher: Publishing | None = None, triggers: Serving | None = None,
                 http: Callable[[Daemon], Serving] | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config, self.npus, self.cameras, self.pipeline = config, npus, cameras, pipeline
        self.history, self.stop, self.metrics, self.notifier = history, stop, metrics, notifier
        self.publisher, self.triggers, self.clock = publisher, triggers, clock
        self._open_http = http  # the server reads this daemon (its page's live view): made in start()
        self.http: Serving | None = None
        self.queue, self.ledger = pipeline.queue, pipeline.ledger
        self.jobs = JobRunner(cameras, pipeline.windows, pipeline.asks, pipeline.chat, pipeline.queue,
                              pipeline.ledger, metrics, stop, self.fail, pipeline.events)
        status = self._publish_status if publisher is not None else None
        self.watch = CameraWatch(cameras, self._capture, config.health, metrics, monotonic=monotonic, wall=clock,
                                 on_status=status)
        self.ledger.listen(self.watch.on_settled)
        self.fatal: VlmwatchError | None = None  # a storage failure that stopped the daemon
        self._fatal_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The first NPU's engine (the only one by default)."""
        return self.npus[0].engine

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start every thread's owner. The connections come first, the HTTP server before all: a taken port
        or an unreadable password file is a ConfigError (exit 2) before any camera or NPU works. What a crash
        kept out of the outbox is queued before new results."""
        self._connect()
        if self.publisher is not None:
            queue_unqueued(self.history, self.publisher)
        if self.pipeline.events is not None:
            self.pipeline.events.recover()  # events a crash left open end as interrupted
        for cam in self.cameras.values():
            if cam.main is not None:
                cam.main.start(self.stop)
        self.watch.start()
        for npu in self.npus:
            self.metrics.add_npu(npu.label)
        self.npus.start(self.jobs.handle)
        if self.pipeline.scheduler is not None:
            self.pipeline.scheduler.start(self._queue_summary)
        self.notifier.ready("watching %d camera(s)" % len(self.cameras))
        log.info("vlmwatch running: %d camera(s), model %s on %s", len(self.cameras), self.engine.name,
                 self.npus.labels)

    def run(self, once: bool = False) -> int:
        """Start, then `loop`; the exit code."""
        self.start()
        return self.loop(once)

    def loop(self, once: bool = False) -> int:
        """Tick until stopped (or, with once, until the sources end and the queue drained), then shut down."""
        interval = min(self.notifier.watchdog_interval() or 1.0, 1.0)
        ticks = _Ticks()
        while not self.stop.wait(interval):
            if not self.tick(ticks):
                break
            if once and not self.watch.capturing() and self.queue.wait_idle(0):
                break
        return self.shutdown()

    def tick(self, ticks: _Ticks) -> bool:
        """The once-a-second work: watchdogs, retention, rule expiry, metrics and reports; False to stop."""
        self.watch.check()
        if self.healthy():
            self.notifier.watchdog()
        now = self.clock()
        if now - ticks.pruned > PRUNE_EVERY:
            ticks.pruned = now
            try:
                self.history.prune(now, self.config.retention.keep_seconds)
                if self.pipeline.events is not None:
                    self.pipeline.events.prune(now, self.config.retention.keep_seconds)
            except STORAGE_ERRORS as exc:
                self.fail(exc)
                return False
        if self.pipeline.rules is not None:
            self.pipeline.rules.expire(now)  # sensors whose hold ran out turn OFF, gated windows or not
        self._export_load(ticks, now)
        return self.publisher is None or self._check_publisher()

    def shutdown(self, timeout: float = 10.0) -> int:
        """Stop everything; 0, or the exit code of what stopped us (daemon.errors: 2 needs a person, 1 may pass)."""
        self.notifier.stopping()
        if self.http is not None:
            self.http.stop()  # no new requests; open ones are cancelled, their NPU jobs with them
        if self.pipeline.scheduler is not None:
            self.pipeline.scheduler.shutdown()  # no new fires; queued summaries are abandoned with the queue
        self.stop.set()
        self.watch.halt()
        self.queue.close()
        deadline = time.monotonic() + timeout
        self.watch.join(deadline)
        for cam in self.cameras.values():
            if cam.main is not None:
                cam.main.close()
        self.npus.join(deadline)
        if self.pipeline.events is not None:
            self.pipeline.events.shutdown()  # open events end now (activity OFF), told from their descriptions
        if self.triggers is not None:
            self.triggers.stop()
        if self.publisher is not None:
            self.publisher.stop(max(1.0, min(5.0, deadline - time.monotonic())))  # flush, then `offline`
        return self._exit_code()

    def fail(self, exc: VlmwatchError) -> None:
        """Stop the daemon for a storage failure (any thread); the first one sets the exit code."""
        with self._fatal_lock:
            first = self.fatal is None
            if first:
                self.fatal = exc
        if first:
            log.error("stopping: %s", exc)
        self.stop.set()

    # -- health ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """What the systemd watchdog ping stands for: every NPU worker runs and no camera is down."""
        return self.npus.healthy() and not self.watch.down()

    def rule_states(self) -> dict[tuple[str, str], bool]:
        """(rule, camera) -> ON now, for every rule on every camera it watches (any thread)."""
        rules = self.pipeline.rules
        return {} if rules is None else rules.sensor_states(list(self.cameras), self.clock())

    def log_load(self, span: float) -> None:
        """One line: how busy each NPU was over the last `span` seconds, and what waits."""
        loads = ", ".join(f"{label} {100 * load:.0f} %" for label, load in self.npus.loads(span).items())
        log.info("NPU load over the last %.0f min: %s; %d job(s) waiting", span / 60, loads, self.queue.depth)

    # -- internals ---------------------------------------------------------------------------

    def _connect(self) -> None:
        """Start the HTTP server, the publisher and the trigger subscriber, in this order; when one fails,
        stop those already started and raise its error."""
        started: list[Serving | Publishing] = []
        try:
            if self._open_http is not None:
                server = self._open_http(self)
                server.start()
                self.http = server
                started.append(server)
            for part in (self.publisher, self.triggers):
                if part is not None:
                    part.start()
                    started.append(part)
        except BaseException:
            for part in reversed(started):
                part.stop()
            raise

    def _capture(self, cam: Camera, halt: threading.Event, saw_window: Callable[[], None]) -> None:
        """A capture thread's body: the window handler's; a state file that cannot be written stops us."""
        try:
            self.pipeline.windows.capture(cam, halt, saw_window)
        except STORAGE_ERRORS as exc:
            self.fail(exc)

    def _queue_summary(self, settings, fire: Fire) -> bool:
        """A cron fire (scheduler thread): queue the summary behind the windows, one model call a turn."""
        return self.queue.put_summary(SummaryJob(settings.id, self.pipeline.summarizer.start(settings, fire,
                                                                                              self.stop)))

    def _export_load(self, ticks: _Ticks, now: float) -> None:
        self.metrics.set_queue_depth(self.queue.depth)
        for label, load in self.npus.loads(60.0).items():
            self.metrics.set_npu_load(label, load)
        if now - ticks.load_logged >= LOAD_LOG_EVERY:
            if ticks.load_logged:
                self.log_load(LOAD_LOG_EVERY)
            ticks.load_logged = now
        report = self.npus.report
        if self.publisher is not None and report.due():
            report.reported(self.publisher.publish_npu(report.load(), self.queue.depth, now))

    def _check_publisher(self) -> bool:
        """Export MQTT state; False once the broker refused us for good (bad credentials, TLS)."""
        stats = self.publisher.stats()
        self.metrics.set_mqtt_connected(stats.connected)
        self.metrics.set_outbox_depth(stats.outbox_depth)
        self.metrics.set_dead_letters(stats.dead_letters)
        return self.publisher.error is None

    def _publish_status(self, status: CameraStatus) -> None:
        try:
            self.publisher.publish_camera_status(status)
        except PublishError as exc:  # the outbox cannot take it: results will say so (and stop us) too
            log.warning("camera %s: status not published: %s", status.camera, exc)

    def _exit_code(self) -> int:
        if self.fatal is not None:
            log.error("stopped: %s", self.fatal)
            return self.fatal.exit_code
        if self.publisher is not None and self.publisher.error is not None:
            log.error("stopped: %s", self.publisher.error)
            return EXIT_NEEDS_FIX  # the broker refused us for good: credentials or TLS
        failed = self.npus.failed()
        if failed is not None:
            log.error("stopping after a fatal engine error: %s (on %s)", failed.worker.error, failed.label)
            return EXIT_TRANSIENT
        log.info("vlmwatch stopped")
        return EXIT_OK


@dataclass
class _Ticks:
    """When the main loop last pruned history and logged the NPU load (wall clock)."""

    pruned: float = 0.0
    load_logged: float = 0.0
