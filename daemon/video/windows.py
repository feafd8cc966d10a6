"""Where windows lie and which frames they take; no I/O (the sources feed it frames or frame counts).

A window covers `span` seconds; windows start every `stride` seconds (less
than `span` overlaps them); each takes `frames` frames at the mid-points of
equal segments, as InternVL's `get_index(num_segments=frames)` does for video.

Files are laid out by frame index along their own timeline (`file_layout`);
live streams by wall-clock time as frames arrive (`LiveWindows`). Either way a
frame that two overlapping windows both want is one `Frame` object, so the
engine's ViT feature cache (keyed by frame identity) computes it once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from daemon.types import Frame, Window

log = logging.getLogger(__name__)


def segment_indices(start_idx: int, end_idx: int, num_segments: int) -> list[int]:
    """InternVL's `get_index` for one bound: the middle frame of each of `num_segments`
    equal segments of [start_idx, end_idx]."""
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg_size / 2 + np.round(seg_size * i)) for i in range(num_segments)]


def segment_times(start: float, end: float, num_segments: int) -> list[float]:
    """The same mid-points in seconds, for live streams."""
    seg = (end - start) / num_segments
    return [start + seg * (i + 0.5) for i in range(num_segments)]


@dataclass(frozen=True)
class FileWindow:
    """One planned window of a file: media seconds and the frame indices it takes."""

    start: float
    end: float
    indices: tuple[int, ...]


def file_layout(frame_count: int, fps: float, span: float, stride: float, frames: int) -> list[FileWindow]:
    """Windows every `stride` s along a file. A window that would start inside the
    file but run past its end is pulled back to end with the file, so the tail of
    a clip (where an NVR export often ends on the event) is never dropped."""
    if frame_count <= 0 or fps <= 0:
        return []
    duration = frame_count / fps
    starts: list[float] = []
    k = 0
    while k * stride + span <= duration + 1e-6:
        starts.append(k * stride)
        k += 1
    if k * stride < duration - 1e-6:  # the next window would start inside the file
        tail = max(0.0, duration - span)
        if not starts or tail > starts[-1] + 1e-6:
            starts.append(tail)
    plans = []
    for start in starts:
        end = min(start + span, duration)
        indices = segment_indices(round(start * fps), min(round(end * fps), frame_count - 1), frames)
        plans.append(FileWindow(start, end, tuple(indices)))
    return plans


@dataclass(eq=False)
class _OpenWindow:
    start: float
    end: float
    targets: list[float]
    frames: list[Frame | None] = field(default_factory=list)


class LiveWindows:
    """Assembles windows from a live stream of frame timestamps.

    The capture thread asks `wants(ts)` for every frame it grabs and converts
    only the frames that fill a segment mid-point (the first frame at or after
    it), so frames no window needs are never converted or kept. Memory is
    bounded: at most ceil(span / stride) + 1 windows are open at a time.
    """

    def __init__(self, camera: str, span: float, stride: float, frames: int) -> None:
        self.camera, self.span, self.stride, self.frames = camera, span, stride, frames
        self.max_lag = span / frames  # a frame later than this after its mid-point belongs elsewhere
        self.incomplete = 0  # windows dropped because the stream paused inside them
        self._open: list[_OpenWindow] = []
        self._next_start: float | None = None

    def _open_until(self, ts: float) -> None:
        if self._next_start is None:
            self._next_start = ts  # windows are anchored at the first frame
        while self._next_start <= ts:
            start = self._next_start
            targets = segment_times(start, start + self.span, self.frames)
            self._open.append(_OpenWindow(start, start + self.span, targets, [None] * self.frames))
            self._next_start = start + self.stride

    def wants(self, ts: float) -> bool:
        """Does a frame grabbed at `ts` fill any window's segment mid-point?"""
        self._open_until(ts)
        return any(f is None and t <= ts for w in self._open for t, f in zip(w.targets, w.frames))

    def add(self, frame: Frame) -> list[Window]:
        """Place a frame in every open window that wants it; return the windows now complete."""
        self._open_until(frame.ts)
        done: list[Window] = []
        still_open: list[_OpenWindow] = []
        for w in self._open:
            for i, target in enumerate(w.targets):
                if w.frames[i] is None and target <= frame.ts:
                    w.frames[i] = frame
            if any(f is not None and f.ts - t > self.max_lag for f, t in zip(w.frames, w.targets)):
                self.incomplete += 1
                log.debug("camera %s: window at %.1f dropped: stream paused inside it", self.camera, w.start)
            elif all(f is not None for f in w.frames):
                done.append(Window(self.camera, w.start, w.end, tuple(w.frames)))  # type: ignore[arg-type]
            else:
                still_open.append(w)
        self._open = still_open
        return done


class KeyframeWindows:
    """Assembles gate windows from a stream of keyframes only (a camera sends one every 1-4 s).

    A window takes the keyframes inside [start, end) and the first one at or after its end (so it
    always has at least one: with a GOP longer than the span, that is all it gets); it completes when
    that one arrives. A keyframe less than 3/4 of `span / frames` after the last one taken is not
    taken (an MJPEG stream is all keyframes; 3/4: camera clocks jitter), so the gate sees at most 4/3
    of the frames it would with every frame decoded. A frame more than `max_gap` seconds after a
    window's end (the stream paused) is not taken: the window completes without it, or, without any
    frame, is dropped and counted in `incomplete`. The model's frames of a window that passes are
    decoded elsewhere, exactly at its segment mid-points (`segment_times`).
    """

    def __init__(self, camera: str, span: float, stride: float, frames: int, max_gap: float) -> None:
        self.camera, self.span, self.stride, self.max_gap = camera, span, stride, max_gap
        self.min_gap = span / frames
        self.incomplete = 0
        self._open: list[_OpenWindow] = []
        self._next_start: float | None = None
        self._last: float | None = None  # ts of the last frame taken

    def wants(self, ts: float) -> bool:
        return self._last is None or ts - self._last >= 0.75 * self.min_gap

    def add(self, frame: Frame) -> list[Window]:
        self._last = frame.ts
        if self._next_start is None:
            self._next_start = frame.ts
        while self._next_start <= frame.ts:
            self._open.append(_OpenWindow(self._next_start, self._next_start + self.span, []))
            self._next_start += self.stride
        done: list[Window] = []
        still_open: list[_OpenWindow] = []
        for w in self._open:
            if frame.ts < w.end:
                w.frames.append(frame)
                still_open.append(w)
            elif frame.ts - w.end > self.max_gap:  # the stream paused: this frame shows a later time
                if w.frames:
                    done.append(Window(self.camera, w.start, w.end, tuple(w.frames)))
                else:
                    self.incomplete += 1
                    log.debug("camera %s: window at %.1f dropped: no keyframe until %.1f s after it", self.camera,
                              w.start, frame.ts - w.end)
            else:
                done.append(Window(self.camera, w.start, w.end, (*w.frames, frame)))  # type: ignore[arg-type]
        self._open = still_open
        return done
