"""Events: one record per activity on a camera, from its first changed window to its end.

Pure: sightings, descriptions, alerts and the story go in with their times; transitions come out
(`new`, `update`, `closing` (tell the story, then `told`), `end`). Times are window times, so a
replayed recording makes the same events as live.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from daemon.config.events import EventSettings
from daemon.types import Description, Event, Region, Window

MAX_REASONS = 8  # distinct kinds of reason kept per event (region, trigger: x, light changed, ...)
MAX_DESCRIPTIONS = 200  # 10 minutes of 8-second windows is 75; a longer max_length keeps the latest


@dataclass(frozen=True)
class Sighting:
    """What the events need of one window: when, and whether something changed in it."""

    camera: str
    start: float
    end: float
    changed: bool  # activity: the gate saw changed regions, or an external trigger forced the window
    reason: str = ""
    zones: frozenset[str] = frozenset()
    trigger: str | None = None
    change: float = 0.0  # the largest changed region's share of the picture
    box: tuple[float, float, float, float] | None = None  # union of changed regions: x0, y0, x1, y1 (0..1)


def sighting(window: Window, analysed: bool, reason: str) -> Sighting:
    """The `Sighting` of a window the gate decided on (`reason`: the gate's words)."""
    quiet = reason.startswith(("first window", "heartbeat", "light changed", "picture size changed", "static"))
    changed = analysed and (window.trigger is not None or (bool(window.regions) and not quiet))
    return Sighting(window.camera, window.start, window.end, changed, reason, window.zones, window.trigger,
                    window.change or 0.0, union_box(window.regions))


def union_box(regions: tuple[Region, ...]) -> tuple[float, float, float, float] | None:
    if not regions:
        return None
    return (min(r.x for r in regions), min(r.y for r in regions),
            max(r.x + r.w for r in regions), max(r.y + r.h for r in regions))


@dataclass(frozen=True)
class Transition:
    kind: str  # new | update | changed (folded into the next update: store only) | closing | end
    event: Event
    best: bool = False  # `new`/sighting: this window is the event's best snapshot so far


@dataclass
class _Timing:
    last_update: float | None = None
    pending: bool = False  # something arrived since the last update


@dataclass
class EventTracker:
    """The events of every camera; `rng` makes ids (tests pass a seeded one)."""

    settings: EventSettings
    rng: random.Random = field(default_factory=random.Random)
    _open: dict[str, Event] = field(default_factory=dict)  # camera -> its open event
    _closing: dict[str, Event] = field(default_factory=dict)  # id -> event waiting for its story
    _timing: dict[str, _Timing] = field(default_factory=dict)

    def open_event(self, camera: str) -> Event | None:
        return self._open.get(camera)

    def open_events(self) -> list[Event]:
        return list(self._open.values())

    def closing(self) -> list[Event]:
        return list(self._closing.values())

    # -- windows -------------------------------------------------------------

    def see(self, s: Sighting) -> list[Transition]:
        """A window of `s.camera` was decided on; its time is the clock here."""
        out: list[Transition] = []
        event = self._open.get(s.camera)
        if event is not None:
            quiet_since = (s.start if s.changed else s.end) - event.last_change
            if quiet_since >= self.settings.end_after:
                out += self.finish(s.camera, "quiet", event.last_change)
                event = None
            elif s.end - event.start > self.settings.max_length:
                out += self.finish(s.camera, "max_length", event.last_change)
                event = None
        if not s.changed:
            return out
        if event is None:
            event = Event(self._new_id(s), s.camera, s.start, s.end)
            self._timing[event.id] = _Timing()
            event, best = _grown(event, s)
            self._open[s.camera] = event
            return out + [Transition("new", event, best)]
        event, best = _grown(event, s)
        self._open[s.camera] = event
        return out + ([Transition("sighting", event, True)] if best else [])

    def finish(self, camera: str, why: str, end: float) -> list[Transition]:
        """Close `camera`'s open event (if any) at `end`: its story is to be told."""
        event = self._open.pop(camera, None)
        if event is None:
            return []
        event = replace(event, state="closing", end=max(end, event.last_change), ended_by=why)
        self._closing[event.id] = event
        return [Transition("closing", event)]

    # -- what the model and the rules said -----------------------------------

    def described(self, camera: str, window_start: float, window_end: float, text: str,
                  now: float) -> list[Transition]:
        """A window's description; `now`: when it arrived (for the update rate)."""
        event = self._containing(camera, window_start)
        if event is None:
            return []
        kept = (event.descriptions + (Description(window_start, window_end, text),))[-MAX_DESCRIPTIONS:]
        return self._changed(replace(event, descriptions=kept), now)

    def fired(self, camera: str, rule: str, window_start: float, now: float) -> list[Transition]:
        event = self._containing(camera, window_start)
        if event is None:
            return []
        rules = event.rules if rule in event.rules else event.rules + (rule,)
        return self._changed(replace(event, rules=rules), now, force=rule not in event.rules)

    def told(self, event_id: str, story: str | None, story_from: str | None) -> list[Transition]:
        """The story of a closing event is in (or None: it could not be told): the event ends."""
        event = self._closing.pop(event_id, None)
        if event is None:
            return []
        self._timing.pop(event_id, None)
        return [Transition("end", replace(event, state="ended", story=story, story_from=story_from))]

    def short_story(self, event: Event) -> str | None:
        """A one-window event's story is its window's description (no second model pass), if it has one."""
        if event.windows <= 1 and len(event.descriptions) == 1:
            return event.descriptions[0].text
        return None

    # -- internals -----------------------------------------------------------

    def _containing(self, camera: str, window_start: float) -> Event | None:
        candidates = [e for e in [self._open.get(camera), *self._closing.values()]
                      if e is not None and e.camera == camera and e.start <= window_start < e.last_change]
        return candidates[-1] if candidates else None

    def _changed(self, event: Event, now: float, force: bool = False) -> list[Transition]:
        if event.state == "open":
            self._open[event.camera] = event
        else:
            self._closing[event.id] = event
        timing = self._timing.setdefault(event.id, _Timing())
        due = timing.last_update is None or now - timing.last_update >= self.settings.update_every
        if event.state != "open" or not (due or force):
            timing.pending = True
            return [Transition("changed", event)]  # to be stored, not published
        timing.last_update, timing.pending = now, False
        return [Transition("update", event)]

    def _new_id(self, s: Sighting) -> str:
        # Frigate's shape: start time and a random suffix; stable for the event's life and in history.
        return f"{s.start:.3f}-{self.rng.getrandbits(24):06x}"


def _grown(event: Event, s: Sighting) -> tuple[Event, bool]:
    """`event` with the changed window `s` in it; True when `s` is its best snapshot so far."""
    kind = s.reason.split(" ", 1)[0].rstrip(":") if not s.trigger else f"trigger: {s.trigger}"
    reasons = event.reasons if kind in event.reasons or len(event.reasons) >= MAX_REASONS else event.reasons + (kind,)
    triggers = event.triggers + ((s.trigger,) if s.trigger and s.trigger not in event.triggers else ())
    box = s.box if event.box is None else event.box if s.box is None else (
        min(event.box[0], s.box[0]), min(event.box[1], s.box[1]), max(event.box[2], s.box[2]),
        max(event.box[3], s.box[3]))
    best = event.snapshot_ts is None or s.change > event.snapshot_change
    grown = replace(event, last_change=max(event.last_change, s.end), reasons=reasons, zones=event.zones | s.zones,
                    triggers=triggers, box=box, windows=event.windows + 1,
                    snapshot_ts=s.end if best else event.snapshot_ts,
                    snapshot_change=s.change if best else event.snapshot_change)
    return grown, best
