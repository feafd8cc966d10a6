"""The frames an open event keeps for its story: a uniform sample (algorithm R) of at most
`capacity` frames however long the event; `spread` picks frames evenly spaced in time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from daemon.types import Frame


class FrameReservoir:
    def __init__(self, capacity: int, rng: random.Random) -> None:
        if capacity < 1:
            raise ValueError(f"a frame reservoir needs room for at least 1 frame, not {capacity}")
        self.capacity, self.rng = capacity, rng
        self.frames: list[Frame] = []
        self.seen = 0  # frames offered (after de-duplication)
        self._last_ts: float | None = None

    def offer(self, frames: Iterable[Frame]) -> None:
        """Windows overlap and share frames: only frames later than the last one offered count."""
        for frame in frames:
            if self._last_ts is not None and frame.ts <= self._last_ts:
                continue
            self._last_ts = frame.ts
            self.seen += 1
            kept = _model_input_only(frame)
            if len(self.frames) < self.capacity:
                self.frames.append(kept)
                continue
            slot = self.rng.randrange(self.seen)
            if slot < self.capacity:
                self.frames[slot] = kept

    def spread(self, count: int, start: float, end: float) -> tuple[Frame, ...]:
        """Up to `count` kept frames nearest to the mid-points of `count` equal segments of [start, end],
        in time order, each used once (fewer when fewer were kept)."""
        pool = sorted(self.frames, key=lambda f: f.ts)
        if len(pool) <= count:
            return tuple(pool)
        span = max(end - start, 0.0)
        chosen: list[Frame] = []
        for i in range(count):
            target = start + span * (i + 0.5) / count
            best = min(pool, key=lambda f: abs(f.ts - target))
            pool.remove(best)
            chosen.append(best)
        return tuple(sorted(chosen, key=lambda f: f.ts))

    def clear(self) -> None:
        self.frames.clear()

    @property
    def nbytes(self) -> int:
        return sum(f.image.nbytes + (0 if f.model_input is None or f.model_input is f.image else
                                     f.model_input.nbytes) for f in self.frames)


def _model_input_only(frame: Frame) -> Frame:
    """The frame without its picture when it carries the model's input: that is all a story needs."""
    if frame.model_input is None:
        return frame
    return Frame(frame.camera, frame.ts, frame.index, frame.model_input, frame.model_input)
