"""A window's trip, top to bottom: source -> gate -> NPU queue -> engine -> history, MQTT, rules.

`capture` is a camera's capture thread (started and restarted by the camera
watchdog, `daemon.service.cameras`); `analyse` runs on the NPU worker that took
the window. Every outcome goes through the window ledger (`daemon.service.ledger`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from daemon.config import Config
from daemon.config.cameras import CameraSettings
from daemon.engine.constrain import json_constraint
from daemon.engine.engine import Answer, Engine, Prefix
from daemon.errors import Cancelled
from daemon.rules.runner import RuleRunner
from daemon.service.cameras import Camera
from daemon.service.events import EventService
from daemon.service.ledger import Outcome, WindowLedger
from daemon.service.metrics import Metrics
from daemon.service.publishing import Publishing
from daemon.service.workers import Npu
from daemon.service.workqueue import WindowJob, WorkQueue
from daemon.state.history import History
from daemon.types import Alert, Prompt, Result, Window, new_message_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Analysed:
    """A camera's last analysed window and its prefix (held by NPU `npu`'s engine), for ad-hoc questions."""

    window: Window
    prefix: Prefix
    npu: int = 0


class LatestWindows:
    """Each camera's last analysed window: written by the NPU workers, read by asks (any thread)."""

    def __init__(self, all_pictures: bool = True) -> None:
        """`all_pictures`: keep every frame's picture (the page shows them) or the last frame's alone (what
        the rules need): 5.5 MB a camera at the default picture width."""
        self._latest: dict[str, Analysed] = {}
        self._lock = threading.Lock()
        self._all_pictures = all_pictures

    def get(self, camera: str) -> Analysed | None:
        with self._lock:
            return self._latest.get(camera)

    def put(self, analysed: Analysed) -> Window | None:
        """Keep `analysed` with its frames' pictures alone (the ViT's inputs, and through the frames their
        features, are let go: the prefix holds the features); return the camera's previous window, reduced
        to its last frame (what the rules need to pick a snapshot), so that its other frames and prefix are
        let go now."""
        w = analysed.window
        kept = w.frames if self._all_pictures else w.frames[-1:]
        pictures = tuple(replace(f, model_input=None) for f in kept)
        analysed = replace(analysed, window=replace(w, frames=pictures))
        with self._lock:
            previous = self._latest.get(analysed.window.camera)
            self._latest[analysed.window.camera] = analysed
        if previous is None:
            return None
        w = previous.window
        return Window(w.camera, w.start, w.end, w.frames[-1:], w.change)

    def __getitem__(self, camera: str) -> Analysed:
        found = self.get(camera)
        if found is None:
            raise KeyError(camera)
        return found


class WindowHandler:
    """What happens to a window, from its source to MQTT."""

    def __init__(self, config: Config, queue: WorkQueue, ledger: WindowLedger, history: History, metrics: Metrics,
                 stop: threading.Event, *, publisher: Publishing | None, rules: RuleRunner | None,
                 events: EventService | None = None, clock: Callable[[], float]) -> None:
        self.config, self.queue, self.ledger, self.history, self.metrics = config, queue, ledger, history, metrics
        self.stop, self.publisher, self.rules, self.events, self.clock = stop, publisher, rules, events, clock
        self.latest = LatestWindows(all_pictures=config.http.enabled)  # the page (served over HTTP) shows them
        self._skipping: dict[str, int] = {}  # camera -> windows skipped in a row (said once at INFO)

    # -- the capture thread -------------------------------------------------------------------

    def capture(self, cam: Camera, halt: threading.Event, saw_window: Callable[[], None]) -> None:
        """Read the camera's windows until its source ends or `halt`, gate each and queue what passes."""
        windows = cam.source.windows(halt)
        try:
            while True:
                if cam.source.paced:  # a recording decodes its next window once the NPU can queue it
                    self.queue.wait_slot(cam.settings.name, halt)
                window = next(windows, None)
                if window is None:
                    if self.events is not None:
                        self.events.source_ended(cam.settings.name)  # its open event ends now
                    break
                saw_window()
                self.gate(cam, window)
                del window  # the queue holds it now (or nobody): do not keep its frames while the source reads on
        finally:
            windows.close()

    def gate(self, cam: Camera, window: Window) -> None:
        """Skip a window without change, or queue it for the NPU (the stale window it replaces is dropped)."""
        window, decision = cam.gate.check(window, now=window.end)
        if self.events is not None:
            self.events.seen(window, decision.analyse, decision.reason)  # opens, holds or closes an event
        if not decision.analyse:
            self.ledger.settle(window, Outcome.SKIPPED, decision.reason)
            self._log_skip(window.camera, decision.reason)
            return
        skipped = self._skipping.pop(window.camera, 0)
        if skipped:
            log.info("camera %s: analysing a window again after %d skipped: %s", window.camera, skipped,
                     decision.reason)
        if cam.main is not None:  # the gate read the substream; the model sees the main stream
            window = cam.main.take(window) or window
        replaced = self.queue.put_window(WindowJob(window, decision.reason))
        if replaced is not None:
            self.ledger.settle(replaced.window, Outcome.DROPPED, "a newer window replaced it")

    def _log_skip(self, camera: str, reason: str) -> None:
        """The first skip of a run at INFO (the gate at work, without a line every few seconds), the rest at DEBUG."""
        count = self._skipping[camera] = self._skipping.get(camera, 0) + 1
        log.log(logging.INFO if count == 1 else logging.DEBUG, "camera %s: window skipped, %s%s", camera, reason,
                "; further skips are logged at debug level until a window is analysed" if count == 1 else "")

    # -- the NPU worker ------------------------------------------------------------------------

    def analyse(self, job: WindowJob, npu: Npu, settings: CameraSettings) -> None:
        """Prefill the window once, then the rule questions and the description on that prefix: alerts
        from rule answers go out before the description is generated."""
        window, engine = job.window, npu.engine
        prompts = self.prompts_for(settings)
        try:
            prefix = engine.prefill(window.frames, prompts, stop=self.stop)
        except Cancelled:
            self.ledger.settle(window, Outcome.CANCELLED, "shutting down")
            raise
        window_id = self.ledger.settle(window, Outcome.ANALYSED, job.reason)
        previous = self.latest.put(Analysed(window, prefix, npu.index))
        self.metrics.observe_timings(prefix.timings)
        results: list[Result] = []
        alerts: list[Alert] = []
        rule_questions = [p for p in prompts if p.choices or p.schema]  # rule answers first: alerts go out sooner
        try:
            for batch in (rule_questions, [p for p in prompts if p not in rule_questions]):
                answers = [self._publish(window, window_id, p, self._answer(engine, prefix, p), engine)
                           for p in batch]
                results += answers
                alerts += self._apply_rules(window, answers, previous)
        except Cancelled:  # its source resumes before it: the next start analyses it again
            self.ledger.cut_short(window, window_id)
            raise
        self.ledger.answered(window, window_id, results, alerts)

    def _answer(self, engine: Engine, prefix: Prefix, prompt: Prompt) -> Answer:
        """One prompt on the window's prefix; a JSON prompt's tokens are constrained to its schema."""
        return engine.answer(prefix, prompt, stop=self.stop, constrain=json_constraint(engine, prompt))

    def prompts_for(self, camera: CameraSettings) -> list[Prompt]:
        """The camera's rule questions (choice prompts), then its description prompt."""
        p = self.config.prompts
        rule_prompts = self.rules.prompts(camera.name) if self.rules is not None else []
        return rule_prompts + [Prompt("description", camera.prompts.description or p.description,
                                      max_new_tokens=camera.prompts.max_new_tokens or p.max_new_tokens)]

    def _publish(self, window: Window, window_id: int, prompt: Prompt, answer: Answer, engine: Engine) -> Result:
        """Store one answer, then queue it for MQTT (stored first: a crash in between is queued at restart)."""
        result = make_result(window, prompt.question, answer, engine, self.clock())
        publish = self.publisher is not None and (self.events is None or self.events.publishes_description(result))
        message_id = new_message_id() if publish else None
        row_id = self.history.record_result(window_id, result, message_id)
        self.metrics.observe_timings(answer.timings)
        if publish:
            self.publisher.publish_result(result, message_id=message_id)
            self.history.mark_queued("results", row_id)
        log.info("camera %s: %s: %s", window.camera, answer.prompt_id, answer.text[:200])
        return result

    def _apply_rules(self, window: Window, results: list[Result], previous: Window | None) -> list[Alert]:
        """The rules' alerts for one batch of answers (recorded and published by the rule runner)."""
        if self.rules is None or not results:
            return []
        return self.rules.on_results(window, results, previous)


def make_result(window: Window, question: str, answer: Answer, engine: Engine, now: float) -> Result:
    return Result(window.camera, answer.prompt_id, question, window.start, window.end, now,
                  answer.text, answer.tokens, answer.stop_reason, answer.choice, answer.probabilities,
                  answer.timings, engine.name, zones=window.zones, trigger=window.trigger)
