"""The events of a running daemon: the tracker, each open event's frame reservoir, the best snapshot,
and the per-window description rate, behind one lock (capture threads and NPU workers both call in).

No I/O: the service stores and publishes what the transitions say.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from daemon.config.events import EventSettings
from daemon.events.reservoir import FrameReservoir
from daemon.events.tracker import Event, EventTracker, Transition, sighting
from daemon.types import Frame, Prompt, Window

STORY_PROMPT_ID = "story"


@dataclass(frozen=True)
class Story:
    """What a closing event needs told: its frames spread across it (freed from the book) and the prompt;
    or, for a one-window event, its window's description (`text`) and no frames."""

    event: Event
    frames: tuple[Frame, ...]
    prompt: Prompt
    text: str | None = None


class EventBook:
    def __init__(self, settings: EventSettings, rng: random.Random | None = None, frames_per_story: int = 8,
                 snapshot: Callable[[Window], bytes] | None = None) -> None:
        self.settings, self.frames_per_story = settings, frames_per_story
        self.rng = rng or random.Random()
        self.tracker = EventTracker(settings, self.rng)
        self.snapshot = snapshot  # window -> JPEG of its most changed frame
        self._reservoirs: dict[str, FrameReservoir] = {}  # event id -> frames for its story
        self._snapshots: dict[str, bytes] = {}  # event id -> best snapshot so far
        self._last_description: dict[str, tuple[float, str]] = {}  # camera -> (when, text) last published
        self._lock = threading.Lock()

    def window(self, window: Window, analysed: bool, reason: str) -> list[Transition]:
        """A window the gate decided on: transitions, and its frames kept for the open event's story."""
        with self._lock:
            out = self.tracker.see(sighting(window, analysed, reason))
            for t in out:
                if t.kind == "new":
                    self._reservoirs[t.event.id] = FrameReservoir(self.settings.keep_frames, self.rng)
                if t.kind in ("new", "sighting") and t.best and self.snapshot is not None:
                    self._snapshots[t.event.id] = self.snapshot(window)
            event = self.tracker.open_event(window.camera)
            if event is not None and window.start < event.last_change + self.settings.end_after:
                self._reservoirs[event.id].offer(window.frames)
            return [t for t in out if t.kind != "sighting"]

    def source_ended(self, camera: str, why: str = "source ended") -> list[Transition]:
        with self._lock:
            event = self.tracker.open_event(camera)
            return self.tracker.finish(camera, why, event.last_change) if event is not None else []

    def described(self, camera: str, start: float, end: float, text: str, now: float) -> list[Transition]:
        with self._lock:
            return self.tracker.described(camera, start, end, text, now)

    def fired(self, camera: str, rule: str, window_start: float, now: float) -> list[Transition]:
        with self._lock:
            return self.tracker.fired(camera, rule, window_start, now)

    def story(self, event: Event, frames: int | None = None) -> Story:
        """Take a closing event's story frames out of the book (they are freed with the Story): `frames`
        (default `frames_per_story`: the camera's window size) spread across the event."""
        with self._lock:
            reservoir = self._reservoirs.pop(event.id, None)
            current = next((e for e in self.tracker.closing() if e.id == event.id), event)
        prompt = Prompt(STORY_PROMPT_ID, self.settings.prompt, max_new_tokens=self.settings.max_new_tokens)
        short = self.tracker.short_story(current)
        if short is not None or reservoir is None:
            return Story(current, (), prompt, short)
        spread = reservoir.spread(frames or self.frames_per_story, current.start, current.end or current.last_change)
        reservoir.clear()
        return Story(current, spread, prompt)

    def told(self, event_id: str, story: str | None, story_from: str | None) -> list[Transition]:
        with self._lock:
            self._reservoirs.pop(event_id, None)
            return self.tracker.told(event_id, story, story_from)

    def take_snapshot(self, event_id: str) -> bytes | None:
        with self._lock:
            return self._snapshots.pop(event_id, None)

    def peek_snapshot(self, event_id: str) -> bytes | None:
        with self._lock:
            return self._snapshots.get(event_id)

    def open_events(self) -> list[Event]:
        with self._lock:
            return self.tracker.open_events()

    def kept_bytes(self) -> int:
        """Bytes of frames held for stories (the benchmark's figure)."""
        with self._lock:
            return sum(r.nbytes for r in self._reservoirs.values())

    def publish_description(self, camera: str, text: str, now: float) -> bool:
        """Whether the per-window description sensor gets this one (`description_every`,
        `description_changed_only`); True records it as the last one published."""
        with self._lock:
            last = self._last_description.get(camera)
            if last is not None:
                when, previous = last
                if self.settings.description_changed_only and text == previous:
                    return False
                if now - when < self.settings.description_every:
                    return False
            self._last_description[camera] = (now, text)
            return True
