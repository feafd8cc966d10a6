"""The running daemon: capture threads -> gate -> NPU queue -> engine -> rules, history, MQTT.

`App` runs the parts `daemon.service.build` wired for it, until stopped, or
with `once` until every file and folder source has ended and the queue has
drained. `handle` is the NPU worker's one entry point: every job goes through
it, and so does every engine error:

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from daemon.engine.engine import Answer, Engine, Prefix
from daemon.errors import (
    EXIT_NEEDS_FIX,
    EXIT_OK,
    EXIT_TRANSIENT,
    Busy,
    Cancelled,
    PublishError,
    QuestionError,
    StateError,
    StorageError,
    VlmwatchError,
)
from daemon.service.cameras import Camera, CameraWatch
from daemon.service.fairness import RateLimiter
from daemon.service.history import History
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.recovery import queue_unqueued
from daemon.service.settings import CameraSettings
from daemon.service.worker import (
    AskJob,
    ChatJob,
    Job,
    NpuReport,
    NpuWorker,
    SummaryWork,
    WindowJob,
    WorkQueue,
    describe,
)
from daemon.types import CameraStatus, Prompt, Result, Window, new_message_id
from daemon.video import FileSource, FolderSource

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.rules.runner import RuleRunner
    from daemon.service.chat import ChatService
    from daemon.summaries.runner import Fire, Summarizer
    from daemon.summaries.scheduler import SummaryScheduler
    from daemon.summaries.settings import SummaryJob

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0  # seconds between retention passes


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
STORAGE_ERRORS = (StateError, StorageError, PublishError)  # a state file (history, outbox, ...) cannot be written


@dataclass(frozen=True)
class Analysed:
    """A camera's last analysed window and its prefix, for ad-hoc questions."""

    window: Window
    prefix: Prefix


class App:
    def __init__(self, config: Config, engine: Engine, cameras: dict[str, Camera], history: History,
                 queue: WorkQueue, worker: NpuWorker, stop: threading.Event, *, metrics: Metrics,
                 notifier: Notifier, publisher: Publisher | None = None, rules: RuleRunner | None = None,
                 summarizer: Summarizer | None = None, scheduler: SummaryScheduler | None = None,
                 limiter: RateLimiter | None = None, chat: ChatService | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.config, self.engine, self.cameras, self.history = config, engine, cameras, history
        self.queue, self.worker, self.stop = queue, worker, stop
        self.metrics, self.notifier, self.publisher, self.rules = metrics, notifier, publisher, rules
        self.summarizer, self.scheduler, self.clock = summarizer, scheduler, clock
        self.limiter = limiter or RateLimiter(config.asks.per_minute, config.asks.burst)
        self.chat = chat  # the HTTP API's side of the NPU queue, when http is enabled
        self.latest: dict[str, Analysed] = {}  # NPU thread only
        status = self._publish_status if hasattr(publisher, "publish_camera_status") else None
        self.watch = CameraWatch(cameras, self._capture, config.health, metrics, monotonic=monotonic, wall=clock,
                                 on_status=status)
        self.fatal: VlmwatchError | None = None  # a storage failure that stopped the daemon
        self._fatal_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def run(self, once: bool = False) -> int:
        """Run until stopped (or, with once, until the sources end); the exit code (see `shutdown`)."""
        if self.publisher is not None:
            queue_unqueued(self.history, self.publisher)  # what a crash kept from the outbox goes first
        for cam in self.cameras.values():
            if cam.main is not None:
                cam.main.start(self.stop)
        self.watch.start()
        self.worker.start(self.handle)
        if self.scheduler is not None:
            self.scheduler.start(self._queue_summary)
        self.notifier.ready("watching %d camera(s)" % len(self.cameras))
        log.info("vlmwatch running: %d camera(s), model %s", len(self.cameras), self.engine.name)
        interval = min(self.notifier.watchdog_interval() or 1.0, 1.0)
        last_prune = 0.0
        npu = NpuReport(self.worker)
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
            if self.publisher is not None and npu.due():
                npu.reported(self.publisher.publish_npu(npu.load(), self.queue.depth, self.clock()))
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
        self.worker.join(max(0.1, deadline - time.monotonic()))
        if self.publisher is not None:
            self.publisher.stop(max(1.0, min(5.0, deadline - time.monotonic())))  # flush, then `offline`
        if self.fatal is not None:
            log.error("stopped: %s", self.fatal)
            return self.fatal.exit_code
        if self.publisher is not None and self.publisher.error is not None:
            log.error("stopped: %s", self.publisher.error)
            return EXIT_NEEDS_FIX  # the broker refused us for good: credentials or TLS
        if self.worker.error is not None:
            log.error("stopping after a fatal engine error: %s", self.worker.error)
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
        """What the systemd watchdog ping stands for: the NPU worker runs and no camera is down."""
        return self.worker.alive() and self.worker.error is None and not self.watch.down()

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
        try:
            for window in windows:
                self.watch.saw_window(name)
                window, decision = cam.gate.check(window, now=window.end)
                if not decision.analyse:
                    self.history.record_window(window, False, decision.reason, self.clock())
                    self.metrics.window_skipped(name)
                    self._finished(window)
                    continue
                if cam.main is not None:  # the gate read the substream; the model sees the main stream
                    window = cam.main.take(window) or window
                if self._paced_by_npu(cam):
                    self.queue.wait_slot(name, halt)
                dropped = self.queue.put_window(WindowJob(window, decision.reason))
                if dropped is not None:
                    self.history.record_window(dropped.window, False, "dropped: a newer window replaced it",
                                               self.clock())
                    self.watch.window_dropped(name)
                    self._finished(dropped.window)
        except STORAGE_ERRORS as exc:
            self.fail(exc)
        finally:
            windows.close()

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
        if not self.queue.put_ask(AskJob(request.camera, request)):
            self.metrics.ask_refused("mqtt", "queue")
            raise Busy("too many questions are waiting for the NPU; ask again in a minute", 60.0, "queue")

    def _queue_summary(self, job: SummaryJob, fire: Fire) -> bool:
        """A cron fire (scheduler thread): queue the summary behind the windows, one model call a turn."""
        return self.queue.put_summary(SummaryWork(job.id, self.summarizer.run_steps(job, fire, self.stop)))

    # ------------------------------------------------------------------ NPU side

    def handle(self, job: Job) -> None:
        """The NPU worker's entry point: one job, with every engine error handled in one place."""
        try:
            if isinstance(job, WindowJob):
                self._analyse(job)
            elif isinstance(job, AskJob):
                self._answer_ask(job)
            elif isinstance(job, ChatJob):
                self.chat.answer(job, self.stop)
            elif isinstance(job, SummaryWork):
                self._summary_step(job)
            else:
                raise TypeError(f"the NPU queue handed out an unknown job: {job!r}")
        except Cancelled:
            log.info("%s: cancelled by shutdown; nothing was published for it", describe(job))
        except QuestionError as exc:
            log.error("%s: %s", describe(job), exc)
            if isinstance(job, AskJob) and self.publisher is not None:
                self.publisher.reply_error(job.request, str(exc))
            elif isinstance(job, WindowJob):
                self._record_refused(job.window, exc)
        except STORAGE_ERRORS as exc:
            self.fail(exc)

    def _record_refused(self, window: Window, exc: QuestionError) -> None:
        try:
            self.history.record_window(window, False, f"error: {exc}", self.clock())
            self._finished(window)
        except STORAGE_ERRORS as failure:
            self.fail(failure)

    def _analyse(self, job: WindowJob) -> None:
        """Rule questions first, then the description, on one prefix: alerts from rule answers go
        out before the description is generated."""
        window = job.window
        prompts = self.prompts_for(self.cameras[window.camera].settings)
        try:
            prefix = self.engine.prefill(window.frames, prompts, stop=self.stop)
        except Cancelled:
            self.history.record_window(window, False, "cancelled: shutting down", self.clock())
            raise
        window_id = self.history.record_window(window, True, job.reason, self.clock())
        previous = self.latest.get(window.camera)
        self.latest[window.camera] = Analysed(window, prefix)
        self.metrics.window_analysed(window.camera)
        self.metrics.observe_timings(prefix.timings)
        for batch in ([p for p in prompts if p.choices], [p for p in prompts if not p.choices]):
            if not batch:
                continue
            results = [self._record(window, window_id, p, self.engine.answer(prefix, p, stop=self.stop))
                       for p in batch]
            if self.rules is not None:
                self.rules.on_results(window, results, previous.window if previous else None)
        self._finished(window)

    def _record(self, window: Window, window_id: int, prompt: Prompt, answer: Answer) -> Result:
        result = self._result(window, prompt.question, answer)
        message_id = new_message_id() if self.publisher is not None else None
        row_id = self.history.record_result(window_id, result, message_id)  # before queueing: see recovery
        self.metrics.observe_timings(answer.timings)
        if self.publisher is not None:
            self.publisher.publish_result(result, message_id=message_id)
            self.history.mark_queued("results", row_id)
        log.info("camera %s: %s: %s", window.camera, answer.prompt_id, answer.text[:200])
        return result

    def _answer_ask(self, job: AskJob) -> None:
        """An ad-hoc question on the camera's latest analysed window (its prefix reused)."""
        request = job.request
        latest = self.latest.get(job.camera)
        if latest is None:
            raise QuestionError(f"camera {job.camera} has no analysed window yet; ask again later")
        prompt = Prompt(f"ask-{request.id}", request.question, tuple(request.choices),
                        max_new_tokens=self.config.prompts.max_new_tokens)
        answer = self.engine.answer(latest.prefix, prompt, stop=self.stop)
        result = self._result(latest.window, request.question, answer)
        self.history.record_result(None, result)
        if self.publisher is not None:
            self.publisher.reply(request, result)

    def _summary_step(self, work: SummaryWork) -> None:
        """One model call of a summary, then back in line behind the windows that arrived meanwhile."""
        try:
            next(work.steps)
        except StopIteration:
            return
        while not self.queue.put_summary(work):  # the summary list is full: finish this one here
            try:
                next(work.steps)
            except StopIteration:
                return

    def prompts_for(self, camera: CameraSettings) -> list[Prompt]:
        """The camera's rule questions (choice prompts), then its description prompt."""
        p = self.config.prompts
        rule_prompts = self.rules.prompts(camera.name) if self.rules is not None else []
        return rule_prompts + [Prompt("description", camera.prompts.description or p.description,
                                      max_new_tokens=camera.prompts.max_new_tokens or p.max_new_tokens)]

    def _result(self, window: Window, question: str, answer: Answer) -> Result:
        return Result(window.camera, answer.prompt_id, question, window.start, window.end, self.clock(),
                      answer.text, answer.tokens, answer.stop_reason, answer.choice, answer.probabilities,
                      answer.timings, self.engine.name, zones=window.zones, trigger=window.trigger)
