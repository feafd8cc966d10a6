"""The running daemon's events (`daemon.events`): sightings told to the event book, transitions stored,
published, and each ended event's story queued as a job at a window's priority.

Threads: capture threads call `seen` and `source_ended`, NPU workers the rest; the book has its own
lock, the store and the publisher are thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from daemon.errors import QuestionError
from daemon.events.book import EventBook
from daemon.events.tracker import Transition
from daemon.rules.model import STORY
from daemon.rules.runner import RuleRunner
from daemon.service.cameras import Camera
from daemon.service.ledger import Answered
from daemon.service.metrics import Metrics
from daemon.service.publishing import Publishing
from daemon.service.workqueue import StoryJob, WorkQueue
from daemon.state.events import EventStore
from daemon.types import Alert, Event, Result, Window, new_message_id

if TYPE_CHECKING:
    from daemon.events.book import Story
    from daemon.service.workers import Npu

log = logging.getLogger(__name__)
MAX_PENDING_STORIES = 16  # beyond: an ended event's story is its descriptions, not another model pass


class EventService:
    """Events of every camera: opened, updated and ended from windows, answers and alerts."""

    def __init__(self, book: EventBook, store: EventStore, queue: WorkQueue, cameras: Mapping[str, Camera],
                 metrics: Metrics, stop: threading.Event, *, publisher: Publishing | None, rules: RuleRunner | None,
                 clock: Callable[[], float]) -> None:
        self.book, self.store, self.queue, self.cameras = book, store, queue, cameras
        self.metrics, self.stop, self.publisher, self.rules, self.clock = metrics, stop, publisher, rules, clock

    # -- what the window handler and the ledger tell ----------------------------------------

    def seen(self, window: Window, analysed: bool, reason: str) -> None:
        """The gate decided on `window` (capture thread)."""
        self._apply(self.book.window(window, analysed, reason))

    def source_ended(self, camera: str) -> None:
        """A file or folder source has no more windows: its open event ends now, not after end_after."""
        self._apply(self.book.source_ended(camera))

    def on_answered(self, answered: Answered) -> None:
        """An analysed window's description joins its event; the alerts its rules raised too (ledger listener)."""
        window = answered.window
        for result in answered.results:
            if result.choice is None and result.prompt_id == "description":
                self._apply(self.book.described(window.camera, window.start, window.end, result.text, self.clock()))
        self._fired(answered.alerts)

    def publishes_description(self, result: Result) -> bool:
        """Whether this window's description goes to `<camera>/description` (events.description_every,
        description_changed_only); answers to rule questions always do."""
        if result.choice is not None or result.prompt_id != "description":
            return True
        return self.book.publish_description(result.camera, result.text, self.clock())

    def recover(self) -> None:
        """At start: events a crash left open are closed as interrupted, and their `end` published."""
        for event in self.store.interrupt_open(self.clock()):
            self._publish_event("end", event)

    def shutdown(self) -> None:
        """Stopping (the NPU workers are done): every open or closing event ends as `shutdown`, its story
        its descriptions (no model pass), so Home Assistant's activity turns OFF. A failure here is
        logged: the next start closes what is left as interrupted."""
        try:
            for event in self.book.open_events():
                self._apply([t for t in self.book.source_ended(event.camera, "shutdown") if t.kind != "closing"])
            for event in self.book.tracker.closing():
                self._apply(self.book.told(event.id, _from_descriptions(event), "descriptions"))
        except Exception as exc:  # noqa: BLE001 - shutting down: record what we can, never hang or crash here
            log.warning("events: could not end the open events at shutdown (%s); the next start closes them", exc)

    def prune(self, now: float, keep_seconds: float) -> None:
        self.store.prune(now, keep_seconds)

    def _fired(self, alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            self._apply(self.book.fired(alert.camera, alert.rule, alert.window_start, self.clock()))

    # -- transitions ----------------------------------------------------------

    def _apply(self, transitions: list[Transition]) -> None:
        for t in transitions:
            event = t.event
            self.store.save(event, self.clock())
            if t.kind == "new":
                self._save_snapshot(event, self.book.peek_snapshot(event.id))
            if t.kind == "closing":
                self._queue_story(event)
            elif t.kind == "end":
                snapshot = self.book.take_snapshot(event.id)
                self._save_snapshot(event, snapshot)
                self.store.link(event)
                log.info("camera %s: event %s ended (%s, %.0f s, %d changed window(s)): %s", event.camera, event.id,
                         event.ended_by, event.duration, event.windows, (event.story or "(no story)")[:200])
                self._publish_event("end", event, snapshot)
            elif t.kind in ("new", "update"):
                self._publish_event(t.kind, event)

    def _publish_event(self, kind: str, event: Event, snapshot: bytes | None = None) -> None:
        if self.publisher is not None:
            self.publisher.publish_event(kind, event, new_message_id(), snapshot=snapshot)

    def _save_snapshot(self, event: Event, jpeg: bytes | None) -> None:
        if jpeg is not None:
            self.store.save_snapshot(event.id, jpeg)

    def _queue_story(self, event: Event) -> None:
        """The story waits in the NPU queue like a window of the camera (a busy camera cannot starve the
        others); its frames stay in the book until it runs."""
        pending = len(self.book.tracker.closing())
        span = Window(event.camera, event.start, event.end or event.last_change, ())
        if pending > MAX_PENDING_STORIES or self.queue.put_window(StoryJob(span, "story", event.id)) is not None:
            log.warning("camera %s: %d stories wait for the NPU; event %s is told from its descriptions",
                        event.camera, pending, event.id)
            self._apply(self.book.told(event.id, _from_descriptions(event), "descriptions"))

    def tell_story(self, job: StoryJob, npu: Npu) -> None:
        """One model pass over frames spread across the event (or its one window's description); then the
        `on: event` rules read the story, and the event ends."""
        closing = next((e for e in self.book.tracker.closing() if e.id == job.event_id), None)
        if closing is None:
            return
        story = self.book.story(closing, self.cameras[closing.camera].settings.frames)
        text, source = story.text, "description"
        if text is None and story.frames:
            text, source = self._model_story(job, story, npu)
        if text is None:
            text, source = _from_descriptions(story.event), "descriptions"
        self._story_rules(story.event, text, replace(job.window, frames=story.frames), story.prompt.question)
        self._apply(self.book.told(job.event_id, text, source if text is not None else None))

    def _model_story(self, job: StoryJob, story: Story, npu: Npu) -> tuple[str | None, str]:
        engine = npu.engine
        try:
            prefix = engine.prefill(story.frames, [story.prompt], stop=self.stop)
            answer = engine.answer(prefix, story.prompt, stop=self.stop)
        except QuestionError as exc:  # Cancelled goes up: left closing, the next start closes it as interrupted
            log.error("camera %s: the story of event %s cannot be told: %s", job.window.camera, job.event_id, exc)
            return None, "model"
        # Stored with the event (not in `results`, which hold one row per prompt of an analysed window).
        modelled = prefix.timings.modelled_npu_ms + answer.timings.modelled_npu_ms
        log.info("camera %s: story of event %s from %d frames: %d tokens, %.1f s modelled on the AX650N",
                 job.window.camera, job.event_id, len(story.frames), answer.timings.generated, modelled / 1000)
        self.metrics.observe_timings(prefix.timings)
        self.metrics.observe_timings(answer.timings)
        return answer.text, "model"

    def _story_rules(self, event: Event, text: str | None, window: Window, question: str) -> None:
        """`on: event` rules match the story (their alerts join the event's rules before it ends)."""
        if self.rules is None or not text:
            return
        result = Result(event.camera, STORY, question, event.start, event.end or event.last_change, self.clock(),
                        text, stop_reason="stop", zones=event.zones)
        self._fired(self.rules.on_results(window, [result]))


def _from_descriptions(event: Event) -> str | None:
    """A story when the model cannot tell one: the event's distinct descriptions, in order."""
    texts = list(dict.fromkeys(d.text for d in event.descriptions))
    return " ".join(texts) if texts else None
