"""The running daemon: capture threads -> gate -> NPU queue -> engine -> rules, history, MQTT.

`App` runs the parts `daemon.service.build` wired for it, until stopped, or
with `once` until every file and folder source has ended and the queue has
drained. `handle` is the NPU workers' one entry point (one worker and engine
per NPU, `daemon.service.npus`): every job goes through it, on the engine of
the NPU that took it, and so does every engine error:

- `Cancelled` (shutting down): nothing is published or stored for the job;
- `QuestionError` (a question the model cannot take): the asker gets it as the
  reply, a window or summary logs it and the daemon goes on;
- anything else (a broken runtime, a bug such as a `ShapeError`) is fatal:
  the worker stops and systemd restarts the daemon.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from daemon.engine.engine import Answer, Engine, Prefix
from daemon.errors import Cancelled, QuestionError
from daemon.service.history import History
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.npus import EngineInUse, Npu
from daemon.service.settings import CameraSettings
from daemon.service.worker import AskJob, Job, NpuWorker, SummaryWork, WindowJob, WorkQueue
from daemon.types import Prompt, Result, Window
from daemon.video import FileSource, FolderSource, Source
from daemon.video.gate import Gate

if TYPE_CHECKING:
    from daemon.config import Config
    from daemon.rules.runner import RuleRunner
    from daemon.summaries.runner import Fire, Summarizer
    from daemon.summaries.scheduler import SummaryScheduler
    from daemon.summaries.settings import SummaryJob

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0  # seconds between retention passes
LOAD_LOG_EVERY = 300.0  # seconds between log lines with each NPU's load


class Publisher(Protocol):
    """What the App needs of daemon.mqtt.publisher.Publisher (tests may pass a fake)."""

    error: object

    def publish_result(self, result: Result) -> object: ...

    def reply(self, request, result: Result) -> None: ...

    def reply_error(self, request, error: str) -> None: ...

    def stats(self): ...

    def stop(self, timeout: float) -> None: ...


@dataclass
class Camera:
    settings: CameraSettings
    source: Source
    gate: Gate
    thread: threading.Thread | None = None


@dataclass(frozen=True)
class Analysed:
    """A camera's last analysed window and its prefix (held by NPU `npu`'s engine), for ad-hoc questions."""

    window: Window
    prefix: Prefix
    npu: int = 0


class App:
    def __init__(self, config: Config, npus: list[Npu], cameras: dict[str, Camera], history: History,
                 queue: WorkQueue, stop: threading.Event, *, metrics: Metrics,
                 notifier: Notifier, publisher: Publisher | None = None, rules: RuleRunner | None = None,
                 summarizer: Summarizer | None = None, scheduler: SummaryScheduler | None = None,
                 summary_engine: EngineInUse | None = None, clock: Callable[[], float] = time.time):
        self.config, self.npus, self.cameras, self.history = config, npus, cameras, history
        self.queue, self.stop = queue, stop
        self.metrics, self.notifier, self.publisher, self.rules = metrics, notifier, publisher, rules
        self.summarizer, self.scheduler, self.clock = summarizer, scheduler, clock
        self.summary_engine = summary_engine  # what the summarizer holds: bound to the step's NPU
        self.latest: dict[str, Analysed] = {}  # written by NPU workers; one window per camera at a time
        self._rules_lock = threading.Lock()  # rule state is one read-modify-write per batch

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
        """Run until stopped (or, with once, until the sources end). 0, or 1 after a fatal engine error."""
        for name, cam in self.cameras.items():
            self.metrics.add_camera(name)
            cam.thread = threading.Thread(target=self._capture, args=(cam,), name=f"capture-{name}", daemon=True)
            cam.thread.start()
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
        while not self.stop.wait(interval):
            if self.healthy():
                self.notifier.watchdog()
            if self.clock() - last_prune > PRUNE_EVERY:
                last_prune = self.clock()
                self.history.prune(last_prune, self.config.retention.keep_seconds)
            self.metrics.set_queue_depth(self.queue.depth)
            for npu in self.npus:
                self.metrics.set_npu_load(npu.label, npu.worker.load(60.0))
            if self.clock() - last_load_log >= LOAD_LOG_EVERY:
                if last_load_log:
                    self.log_load(LOAD_LOG_EVERY)
                last_load_log = self.clock()
            if self.publisher is not None and not self._check_publisher():
                break
            if once and not self._capturing() and self.queue.wait_idle(0):
                break
        return self.shutdown()

    def shutdown(self, timeout: float = 10.0) -> int:
        self.notifier.stopping()
        if self.scheduler is not None:
            self.scheduler.shutdown()  # no new fires; queued summaries are abandoned with the queue
        self.stop.set()
        self.queue.close()
        deadline = time.monotonic() + timeout
        for cam in self.cameras.values():
            if cam.thread:
                cam.thread.join(max(0.1, deadline - time.monotonic()))
        for npu in self.npus:
            npu.worker.join(max(0.1, deadline - time.monotonic()))
        if self.publisher is not None:
            self.publisher.stop(max(1.0, min(5.0, deadline - time.monotonic())))  # flush, then `offline`
        if self.publisher is not None and self.publisher.error is not None:
            log.error("stopped: %s", self.publisher.error)
            return 2
        failed = [npu for npu in self.npus if npu.worker.error is not None]
        if failed:
            log.error("stopping after a fatal engine error on NPU %s: %s", failed[0].label, failed[0].worker.error)
            return 1
        log.info("vlmwatch stopped")
        return 0

    def _check_publisher(self) -> bool:
        """Export MQTT state; False once the broker refused us for good (bad credentials, TLS)."""
        stats = self.publisher.stats()
        self.metrics.set_mqtt_connected(stats.connected)
        self.metrics.set_outbox_depth(stats.outbox_depth)
        return self.publisher.error is None

    def healthy(self) -> bool:
        return all(npu.worker.alive() and npu.worker.error is None for npu in self.npus)

    def log_load(self, span: float) -> None:
        """One line: how busy each NPU was over the last `span` seconds, and what waits."""
        loads = ", ".join(f"{npu.label} {100 * npu.worker.load(span):.0f} %" for npu in self.npus)
        log.info("NPU load over the last %.0f min: %s; %d job(s) waiting", span / 60, loads, self.queue.depth)

    def _capturing(self) -> bool:
        return any(c.thread and c.thread.is_alive() for c in self.cameras.values())

    # ------------------------------------------------------------------ capture side

    def _capture(self, cam: Camera) -> None:
        name = cam.settings.name
        windows = cam.source.windows(self.stop)
        paced = self._paced_by_npu(cam)
        try:
            while True:
                if paced:  # before reading: a recording decodes its next window once the NPU can queue it
                    self.queue.wait_slot(name, self.stop)
                window = next(windows, None)
                if window is None:
                    break
                self._gate(cam, window)
                del window  # the queue holds it now (or nobody): do not keep its frames while the source reads on
        except Exception:  # one broken camera must not take the others down
            log.exception("camera %s: capture failed; this camera stops, the others go on", name)
            self.metrics.set_source_state(name, "error")
        finally:
            windows.close()

    def _gate(self, cam: Camera, window: Window) -> None:
        """Skip a window without change (recorded as skipped), or queue it for the NPU; the stale window
        it replaces in the queue is recorded as dropped."""
        window, decision = cam.gate.check(window, now=window.end)
        if not decision.analyse:
            self.history.record_window(window, False, decision.reason, self.clock())
            self.metrics.window_skipped(window.camera)
            return
        dropped = self.queue.put_window(WindowJob(window, decision.reason))
        if dropped is not None:
            self.history.record_window(dropped.window, False, "dropped: a newer window replaced it", self.clock())
            self.metrics.window_dropped(window.camera)

    @staticmethod
    def _paced_by_npu(cam: Camera) -> bool:
        """Recordings not replayed in real time wait for the NPU; live sources drop stale windows."""
        return isinstance(cam.source, (FileSource, FolderSource)) and not cam.settings.realtime

    def on_ask(self, request) -> None:
        """MQTT ask (paho's thread): only queue it. Raising sends the asker an error reply."""
        if request.camera not in self.cameras:
            raise ValueError(f"unknown camera {request.camera!r}")
        latest = self.latest.get(request.camera)
        if not self.queue.put_ask(AskJob(request.camera, request, latest.npu if latest else None)):
            raise ValueError("too many questions are waiting; ask again in a minute")

    def _queue_summary(self, job: SummaryJob, fire: Fire) -> bool:
        """A cron fire (scheduler thread): queue the summary behind the windows, one model call a turn."""
        return self.queue.put_summary(SummaryWork(job.id, self.summarizer.run_steps(job, fire, self.stop)))

    # ------------------------------------------------------------------ NPU side

    def handle(self, job: Job, npu: Npu | None = None) -> None:
        """An NPU worker's entry point: one job on `npu`'s engine (default the first NPU), with every engine
        error handled in one place."""
        npu = npu or self.npus[0]
        started = time.monotonic()
        try:
            if isinstance(job, WindowJob):
                self._analyse(job, npu)
            elif isinstance(job, AskJob):
                self._answer_ask(job, npu)
            elif isinstance(job, SummaryWork):
                self._summary_step(job, npu)
            else:
                raise TypeError(f"the NPU queue handed out an unknown job: {job!r}")
        except Cancelled:
            log.info("%s: cancelled by shutdown; nothing was published for it", _describe(job))
        except QuestionError as exc:
            log.error("%s: %s", _describe(job), exc)
            if isinstance(job, AskJob) and self.publisher is not None:
                self.publisher.reply_error(job.request, str(exc))
            elif isinstance(job, WindowJob):
                self.history.record_window(job.window, False, f"error: {exc}", self.clock())
        finally:
            self.metrics.npu_job(npu.label, _kind(job), time.monotonic() - started)

    def _analyse(self, job: WindowJob, npu: Npu) -> None:
        """Rule questions first, then the description, on one prefix: alerts from rule answers go
        out before the description is generated."""
        window, engine = job.window, npu.engine
        prompts = self.prompts_for(self.cameras[window.camera].settings)
        try:
            prefix = engine.prefill(window.frames, prompts, stop=self.stop)
        except Cancelled:
            self.history.record_window(window, False, "cancelled: shutting down", self.clock())
            raise
        window_id = self.history.record_window(window, True, job.reason, self.clock())
        previous = _last_frame_only(self.latest.get(window.camera))
        self.latest[window.camera] = Analysed(window, prefix, npu.index)
        self.metrics.window_analysed(window.camera)
        self.metrics.observe_timings(prefix.timings)
        for batch in ([p for p in prompts if p.choices], [p for p in prompts if not p.choices]):
            if not batch:
                continue
            results = [self._record(window, window_id, p, engine.answer(prefix, p, stop=self.stop), engine)
                       for p in batch]
            if self.rules is not None:
                with self._rules_lock:
                    self.rules.on_results(window, results, previous)

    def _record(self, window: Window, window_id: int, prompt: Prompt, answer: Answer, engine: Engine) -> Result:
        result = self._result(window, prompt.question, answer, engine)
        self.history.record_result(window_id, result)
        self.metrics.observe_timings(answer.timings)
        if self.publisher is not None:
            self.publisher.publish_result(result)
        log.info("camera %s: %s: %s", window.camera, answer.prompt_id, answer.text[:200])
        return result

    def _answer_ask(self, job: AskJob, npu: Npu) -> None:
        """An ad-hoc question on the camera's latest analysed window (its prefix reused). The queue gives it
        to the NPU that held that prefix when it was asked; had a newer window moved to another NPU since,
        this engine prefills the prefix again: slower, same answer."""
        request = job.request
        latest = self.latest.get(job.camera)
        if latest is None:
            raise QuestionError(f"camera {job.camera} has no analysed window yet; ask again later")
        prompt = Prompt(f"ask-{request.id}", request.question, tuple(request.choices),
                        max_new_tokens=self.config.prompts.max_new_tokens)
        answer = npu.engine.answer(latest.prefix, prompt, stop=self.stop)
        result = self._result(latest.window, request.question, answer, npu.engine)
        self.history.record_result(None, result)
        if self.publisher is not None:
            self.publisher.reply(request, result)

    def _summary_step(self, work: SummaryWork, npu: Npu) -> None:
        """One model call of a summary (on this NPU's engine), then back in line behind the windows that
        arrived meanwhile; the next call may run on another NPU."""
        with self._summary_engine(npu):
            try:
                next(work.steps)
            except StopIteration:
                return
            while not self.queue.put_summary(work):  # the summary list is full: finish this one here
                try:
                    next(work.steps)
                except StopIteration:
                    return

    def _summary_engine(self, npu: Npu):
        if self.summary_engine is None:
            return contextlib.nullcontext()
        return self.summary_engine.using(npu.engine)

    def prompts_for(self, camera: CameraSettings) -> list[Prompt]:
        """The camera's rule questions (choice prompts), then its description prompt."""
        p = self.config.prompts
        rule_prompts = self.rules.prompts(camera.name) if self.rules is not None else []
        return rule_prompts + [Prompt("description", camera.prompts.description or p.description,
                                      max_new_tokens=camera.prompts.max_new_tokens or p.max_new_tokens)]

    def _result(self, window: Window, question: str, answer: Answer, engine: Engine) -> Result:
        return Result(window.camera, answer.prompt_id, question, window.start, window.end, self.clock(),
                      answer.text, answer.tokens, answer.stop_reason, answer.choice, answer.probabilities,
                      answer.timings, engine.name)


def _describe(job: Job) -> str:
    if isinstance(job, WindowJob):
        return f"camera {job.window.camera}: window at {job.window.start:.1f}"
    if isinstance(job, AskJob):
        return f"camera {job.camera}: question {job.request.id!r}"
    if isinstance(job, SummaryWork):
        return f"summary {job.job_id}"
    return repr(job)


def _last_frame_only(analysed: Analysed | None) -> Window | None:
    """The previous analysed window as the rules need it (its last frame: what the model saw before),
    so that its other frames, features and prefix are let go while this window is analysed."""
    if analysed is None:
        return None
    w = analysed.window
    return Window(w.camera, w.start, w.end, w.frames[-1:], w.change)


def _kind(job: Job) -> str:
    """The metrics' name for a job's kind."""
    return {WindowJob: "window", AskJob: "ask", SummaryWork: "summary"}.get(type(job), "other")
