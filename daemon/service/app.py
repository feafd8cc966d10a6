"""The running daemon: capture threads -> gate -> NPU queue -> engine -> history / MQTT.

`App` wires the parts it is given (STYLE: dependencies in one place) and runs
until stopped, or with `once` until every file and folder source has ended
and the queue has drained.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from daemon.config import Config
from daemon.engine.engine import Engine
from daemon.errors import Cancelled, ModelError, PromptTooLongError
from daemon.rules.runner import RuleRunner
from daemon.service.history import History
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.settings import CameraSettings
from daemon.service.worker import AskJob, NpuWorker, SummaryJob, WindowJob, WorkQueue
from daemon.summaries.runner import Fire, Summarizer
from daemon.types import Prompt, Result, Window
from daemon.video.events import Source
from daemon.video.gate import Gate

if TYPE_CHECKING:
    from daemon.summaries.scheduler import SummaryScheduler
    from daemon.summaries.settings import (
        SummaryJob as SummarySettings,  # worker.SummaryJob is the queue item
    )

log = logging.getLogger(__name__)


PRUNE_EVERY = 3600.0  # seconds between retention passes


class Publisher(Protocol):
    """What the App needs of daemon.mqtt.Publisher (tests may pass a fake)."""

    error: object

    def publish_result(self, result: Result) -> object: ...

    def publish_summary(self, summary) -> object: ...

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


class App:
    def __init__(self, config: Config, engine: Engine, sources: dict[str, Source], history: History,
                 metrics: Metrics | None = None, notifier: Notifier | None = None,
                 publisher: Publisher | None = None, clock: Callable[[], float] = time.time,
                 rules: RuleRunner | None = None, scheduler: SummaryScheduler | None = None):
        self.config, self.engine, self.history, self.rules = config, engine, history, rules
        if rules is not None and rules.publisher is None:
            rules.publisher = publisher  # alerts, rule states and snapshots go out the same door
        self.metrics, self.publisher, self.clock = metrics or Metrics(), publisher, clock
        self.notifier = notifier or Notifier("")
        self.cameras = {c.name: Camera(c, sources[c.name], Gate(c.gate)) for c in config.cameras}
        self.stop = threading.Event()
        self.queue = WorkQueue()
        self.worker = NpuWorker(self.queue, self._handle, self.stop)
        self.latest: dict[str, Window] = {}  # last analysed window per camera, for ad-hoc questions
        self.scheduler = scheduler
        self.summarizer = Summarizer(history, engine, scheduler.runlog if scheduler else None,
                                     [c.name for c in config.cameras],
                                     publisher.publish_summary if publisher is not None else None, clock)

    # ------------------------------------------------------------------ lifecycle

    def run(self, once: bool = False) -> int:
        """Run until stopped (or, with once, until the sources end). 0, or 1 after a fatal engine error."""
        for name, cam in self.cameras.items():
            self.metrics.add_camera(name)
            cam.thread = threading.Thread(target=self._capture, args=(cam,), name=f"capture-{name}", daemon=True)
            cam.thread.start()
        self.worker.start()
        if self.scheduler is not None:
            self.scheduler.start(self._queue_summary)
        self.notifier.ready("watching %d camera(s)" % len(self.cameras))
        log.info("vlmwatch running: %d camera(s), model %s", len(self.cameras), self.engine.model.name)
        interval = min(self.notifier.watchdog_interval() or 1.0, 1.0)
        last_prune = 0.0
        while not self.stop.wait(interval):
            if self.healthy():
                self.notifier.watchdog()
            if self.clock() - last_prune > PRUNE_EVERY:
                last_prune = self.clock()
                self.history.prune(last_prune, self.config.retention.keep_seconds)
            self.metrics.set_queue_depth(self.queue.depth)
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
        self.worker.join(max(0.1, deadline - time.monotonic()))
        if self.publisher is not None:
            self.publisher.stop(max(1.0, min(5.0, deadline - time.monotonic())))  # flush, then `offline`
        if self.publisher is not None and self.publisher.error is not None:
            log.error("stopped: %s", self.publisher.error)
            return 2
        if self.worker.error is not None:
            log.error("stopping after a fatal engine error: %s", self.worker.error)
            return 1
        log.info("vlmwatch stopped")
        return 0

    def _check_publisher(self) -> bool:
        """Export MQTT state; False once the broker refused us for good (bad credentials, TLS)."""
        stats = self.publisher.stats()
        self.metrics.set_mqtt_connected(stats.connected)
        self.metrics.set_outbox_depth(stats.outbox_depth)
        return self.publisher.error is None

    def _queue_summary(self, job: SummarySettings, fire: Fire) -> bool:
        """A cron fire (scheduler thread): queue the summary behind the windows; it re-queues after each step."""
        return self.queue.put_summary(self.summarizer.work(job, fire, self.stop, requeue=self.queue.put_summary))

    def healthy(self) -> bool:
        return self.worker.alive() and self.worker.error is None

    def _capturing(self) -> bool:
        return any(c.thread and c.thread.is_alive() for c in self.cameras.values())

    # ------------------------------------------------------------------ capture side

    def _capture(self, cam: Camera) -> None:
        name = cam.settings.name
        windows = cam.source.windows(self.stop)
        try:
            for window in windows:
                window, decision = cam.gate.check(window, now=window.end)
                if not decision.analyse:
                    self.history.record_window(window, False, decision.reason, self.clock())
                    self.metrics.window_skipped(name)
                    continue
                if self._paced_by_npu(cam):
                    self.queue.wait_slot(name, self.stop)
                dropped = self.queue.put_window(WindowJob(window, decision.reason))
                if dropped is not None:
                    self.history.record_window(dropped.window, False, "dropped: a newer window replaced it",
                                               self.clock())
                    self.metrics.window_dropped(name)
        except Exception:  # one broken camera must not take the others down
            log.exception("camera %s: capture failed; this camera stops, the others go on", name)
            self.metrics.set_source_state(name, "error")
        finally:
            windows.close()

    @staticmethod
    def _paced_by_npu(cam: Camera) -> bool:
        """Recordings not replayed in real time wait for the NPU; live sources drop stale windows."""
        from daemon.video.file import FileSource
        from daemon.video.folder import FolderSource

        return isinstance(cam.source, (FileSource, FolderSource)) and not cam.settings.realtime

    # ------------------------------------------------------------------ NPU side

    def _handle(self, job) -> None:
        if isinstance(job, WindowJob):
            self._analyse(job)
        elif isinstance(job, SummaryJob):
            job.run()
        elif isinstance(job, AskJob):
            self._answer_ask(job)

    def on_ask(self, request) -> None:
        """MQTT ask (paho's thread): only queue it. Raising sends the asker an error reply."""
        if request.camera not in self.cameras:
            raise ValueError(f"unknown camera {request.camera!r}")
        if not self.queue.put_ask(AskJob(request.camera, request)):
            raise ValueError("too many questions are waiting; ask again in a minute")

    def _answer_ask(self, job: AskJob) -> None:
        """An ad-hoc question on the camera's latest analysed window (shared prefix reused)."""
        request = job.request
        window = self.latest.get(job.camera)
        if window is None:
            self.publisher.reply_error(request, f"camera {job.camera} has no analysed window yet; ask again later")
            return
        prompt = Prompt(f"ask-{request.id}", request.question, tuple(request.choices),
                        max_new_tokens=self.config.prompts.max_new_tokens)
        try:
            if prompt.choices:
                self.engine.choice_tokens(prompt.choices)
            answer = self.engine.ask(window.frames, [prompt], stop=self.stop).answers[0]
        except (PromptTooLongError, ModelError) as exc:  # the question's fault, not the engine's
            self.publisher.reply_error(request, str(exc))
            return
        except Cancelled:
            return
        result = self._result(window, request.question, answer)
        self.history.record_result(None, result)
        self.publisher.reply(request, result)

    def prompts_for(self, camera: CameraSettings) -> list[Prompt]:
        """The camera's rule questions (choice prompts), then its description prompt."""
        p = self.config.prompts
        rule_prompts = self.rules.prompts(camera.name) if self.rules is not None else []
        return rule_prompts + [Prompt("description", camera.prompts.description or p.description,
                                      max_new_tokens=camera.prompts.max_new_tokens or p.max_new_tokens)]

    def _analyse(self, job: WindowJob) -> None:
        """Rule questions first, then the description, as two engine calls on the same frames: the
        engine keeps the shared prefix between them (one prefill), and alerts from rule answers go
        out before the description is generated."""
        window, cam = job.window, self.cameras[job.window.camera].settings
        previous = self.latest.get(window.camera)
        prompts = self.prompts_for(cam)
        window_id = None
        for batch in ([p for p in prompts if p.choices], [p for p in prompts if not p.choices]):
            if not batch:
                continue
            try:
                analysis = self.engine.ask(window.frames, batch, stop=self.stop)
            except Cancelled:
                if window_id is None:
                    self.history.record_window(window, False, "cancelled: shutting down", self.clock())
                return
            if window_id is None:
                window_id = self.history.record_window(window, True, job.reason, self.clock())
                self.latest[window.camera] = window
                self.metrics.window_analysed(window.camera)
            self.metrics.observe_timings(analysis.shared)
            results = self._record(window, window_id, batch, analysis)
            if self.rules is not None:
                self.rules.on_results(window, results, previous)

    def _record(self, window: Window, window_id: int, prompts: list[Prompt], analysis) -> list[Result]:
        questions = {p.id: p.question for p in prompts}
        results = []
        for answer in analysis.answers:
            result = self._result(window, questions[answer.prompt_id], answer)
            self.history.record_result(window_id, result)
            self.metrics.observe_timings(answer.timings)
            if self.publisher is not None:
                self.publisher.publish_result(result)
            log.info("camera %s: %s: %s", window.camera, answer.prompt_id, answer.text[:200])
            results.append(result)
        return results

    def _result(self, window: Window, question: str, answer) -> Result:
        return Result(window.camera, answer.prompt_id, question, window.start, window.end, self.clock(),
                      answer.text, answer.tokens, answer.stop_reason, answer.choice, answer.probabilities,
                      answer.timings, self.engine.model.name)
