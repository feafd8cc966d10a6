"""The NPU side of the running daemon (`daemon.service.app.App`): what a worker does with each job.

`NpuSide.handle` is every NPU worker's one entry point; the job runs on the
engine of the NPU that took it (`daemon.service.npus`). The engine errors it
handles are listed in `daemon.service.app`. `App` inherits these methods and
provides the state they use (config, cameras, history, queue, metrics,
publisher, rules, latest, ...).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.config.cameras import CameraSettings
from daemon.engine.engine import Answer, Engine, Prefix
from daemon.errors import Cancelled, PublishError, QuestionError, StateError, StorageError
from daemon.service.npus import Npu
from daemon.service.worker import AskJob, ChatJob, Job, SummaryWork, WindowJob, describe, kind_of
from daemon.types import Prompt, Result, Window, new_message_id

if TYPE_CHECKING:
    from daemon.service.npus import EngineInUse

log = logging.getLogger("daemon.service.app")
STORAGE_ERRORS = (StateError, StorageError, PublishError)  # a state file (history, outbox, ...) cannot be written


@dataclass(frozen=True)
class Analysed:
    """A camera's last analysed window and its prefix (held by NPU `npu`'s engine), for ad-hoc questions."""

    window: Window
    prefix: Prefix
    npu: int = 0


class NpuSide:
    """Job handling for `App`: windows, MQTT asks, HTTP chats and summary steps, each on one NPU."""

    summary_engine: EngineInUse | None

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
            elif isinstance(job, ChatJob):
                self.chat.answer(job, self.stop, npu.engine)
            elif isinstance(job, SummaryWork):
                self._summary_step(job, npu)
            else:
                raise TypeError(f"the NPU queue handed out an unknown job: {job!r}")
        except Cancelled:
            log.info("%s: cancelled by shutdown; nothing was published for it", describe(job))
        except QuestionError as exc:
            # An asker's question refused is the asker's business (the reply says why); a window's or a
            # summary's prompt that does not fit is the configuration's, which someone must fix.
            log.log(logging.INFO if isinstance(job, AskJob) else logging.ERROR, "%s: %s", describe(job), exc)
            if isinstance(job, AskJob) and self.publisher is not None:
                self.publisher.reply_error(job.request, str(exc))
            elif isinstance(job, WindowJob):
                self._record_refused(job.window, exc)
        except STORAGE_ERRORS as exc:
            self.fail(exc)
        finally:
            self.metrics.npu_job(npu.label, kind_of(job), time.monotonic() - started)

    def _record_refused(self, window: Window, exc: QuestionError) -> None:
        try:
            self.history.record_window(window, False, f"error: {exc}", self.clock())
            self._finished(window)
        except STORAGE_ERRORS as failure:
            self.fail(failure)

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
        self._finished(window)

    def _record(self, window: Window, window_id: int, prompt: Prompt, answer: Answer, engine: Engine) -> Result:
        result = self._result(window, prompt.question, answer, engine)
        message_id = new_message_id() if self.publisher is not None else None
        row_id = self.history.record_result(window_id, result, message_id)  # before queueing: see recovery
        self.metrics.observe_timings(answer.timings)
        if self.publisher is not None:
            self.publisher.publish_result(result, message_id=message_id)
            self.history.mark_queued("results", row_id)
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
                      answer.timings, engine.name, zones=window.zones, trigger=window.trigger)


def _last_frame_only(analysed: Analysed | None) -> Window | None:
    """The previous analysed window as the rules need it (its last frame: what the model saw before),
    so that its other frames, features and prefix are let go while this window is analysed."""
    if analysed is None:
        return None
    w = analysed.window
    return Window(w.camera, w.start, w.end, w.frames[-1:], w.change)
