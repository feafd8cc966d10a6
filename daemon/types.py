"""Typed seams between modules: small frozen dataclasses, never bare dicts. Timestamps are POSIX
seconds (float, UTC), turned into ISO-8601 only at the edges (MQTT payloads, CLI JSON).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np


def new_message_id() -> str:
    """The id an MQTT payload carries (`id`): made when a result, alert or summary is recorded, stored
    with it in history, and the same on every (re)delivery, so consumers can drop duplicates by it."""
    return uuid.uuid4().hex


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame; identity (`is`) is the frame's identity, so overlapping windows share
    Frame objects and the engine reuses their ViT features.

    `image` is the picture reduced for the gate and snapshots, `model_input` the picture already
    resized to the ViT's input at capture. Why a frame keeps these and not the decoded picture:
    docs/design.md."""

    camera: str
    ts: float  # seconds: POSIX time for live sources, media time + file start for files
    index: int  # frame number within the source (monotonic per source)
    image: np.ndarray = field(repr=False)  # [H, W, 3] uint8 BGR, possibly reduced from the decoded picture
    model_input: np.ndarray | None = field(default=None, repr=False)  # [S, S, 3] uint8 BGR for the ViT, or None


@dataclass(frozen=True)
class Region:
    """A connected changed area the gate found, relative to the picture (0..1)."""

    x: float  # left edge
    y: float  # top edge
    w: float
    h: float
    area: float  # changed share of the picture (0.001 = 0.1 %), not the box's

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The box in pixels of a `width` x `height` frame."""
        return round(self.x * width), round(self.y * height), round(self.w * width), round(self.h * height)


@dataclass(frozen=True, eq=False)
class Window:
    """A span of a source sampled into N frames (segment mid-points)."""

    camera: str
    start: float
    end: float
    frames: tuple[Frame, ...]
    change: float | None = None  # gate: the largest changed region's share of the picture
    regions: tuple[Region, ...] = ()  # gate: where the picture changed (the union over the frames)
    zones: frozenset[str] = frozenset()  # gate: the camera's zones those regions touch
    trigger: str | None = None  # an external trigger (MQTT) that made this window analysed

    @property
    def frame_ts(self) -> list[float]:
        return [f.ts for f in self.frames]


@dataclass(frozen=True)
class Timings:
    """Wall-clock milliseconds spent per stage, plus the modelled AX650N cost."""

    vit_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    generated: int = 0
    modelled_npu_ms: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return 1000.0 * self.generated / self.decode_ms if self.decode_ms > 0 else 0.0


@dataclass(frozen=True)
class Result:
    """The engine's answer to one prompt on one window (or text-only input)."""

    camera: str
    prompt_id: str
    question: str
    window_start: float | None
    window_end: float | None
    ts: float  # when the result was produced
    text: str = ""
    tokens: tuple[int, ...] = ()
    stop_reason: str = ""  # "stop" | "length" | "choice" (cancelled work raises errors.Cancelled)
    choice: str | None = None
    probabilities: dict[str, float] | None = None
    timings: Timings = field(default_factory=Timings)
    model: str = ""
    zones: frozenset[str] = frozenset()  # the window's zones touched by changed regions
    trigger: str | None = None  # the external trigger that made the window analysed


@dataclass(frozen=True)
class Alert:
    """A rule fired on a window."""

    camera: str
    rule: str
    severity: str  # info | warning | critical
    text: str
    ts: float
    window_start: float
    window_end: float
    probability: float | None = None
    snapshot_jpeg: bytes | None = field(default=None, repr=False)
    zones: frozenset[str] = frozenset()  # the window's zones touched by changed regions
    trigger: str | None = None  # the external trigger that made the window analysed


@dataclass(frozen=True)
class Summary:
    """A scheduled or on-demand summary of a period of history."""

    job: str
    period_start: float
    period_end: float
    text: str
    ts: float
    counts: dict[str, int] = field(default_factory=dict)
    cameras: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prompt:
    """One question about a window (or text only): generated, or scored over `choices`."""

    id: str
    question: str
    choices: tuple[str, ...] = ()  # non-empty: score these instead of generating
    max_new_tokens: int | None = None
    schema: str | None = None  # JSON text of a JSON schema: the answer is JSON conforming to it (constrained)


@dataclass(frozen=True)
class CameraStatus:
    """A camera's health as the daemon's camera watchdog sees it (MQTT `<base>/<camera>/status`)."""

    camera: str
    state: str  # starting | up | restarting | down | ended
    ts: float  # when this was taken, POSIX seconds
    last_frame_age: float | None  # seconds since the camera's last frame; None before the first
    restarts: int  # captures restarted since the daemon started
    dropped: int  # windows dropped unanalysed since the daemon started
    error: str | None = None  # why the capture last failed or was restarted


@dataclass(frozen=True)
class Description:
    """One window's description inside an event."""

    window_start: float
    window_end: float
    text: str


@dataclass(frozen=True)
class Event:
    """The record of one activity on a camera (daemon.events); `end` is None while it is open."""

    id: str
    camera: str
    start: float
    last_change: float  # end of the last changed window
    state: str = "open"  # open | closing (story pending) | ended
    end: float | None = None
    ended_by: str | None = None  # quiet | max_length | source ended | shutdown | interrupted
    reasons: tuple[str, ...] = ()  # distinct kinds, first first
    zones: frozenset[str] = frozenset()
    triggers: tuple[str, ...] = ()
    box: tuple[float, float, float, float] | None = None
    rules: tuple[str, ...] = ()  # rules that fired, in order, each once
    descriptions: tuple[Description, ...] = ()
    windows: int = 0  # changed windows
    story: str | None = None
    story_from: str | None = None  # model (8 frames across the event) | description (a one-window event)
    snapshot_ts: float | None = None  # window end of the best snapshot (largest change)
    snapshot_change: float = 0.0

    @property
    def duration(self) -> float:
        return (self.end if self.end is not None else self.last_change) - self.start
