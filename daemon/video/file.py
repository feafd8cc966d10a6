"""One video file through decord, as a stream of windows along its own timeline.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from daemon.errors import SourceError
from daemon.types import Frame, Window
from daemon.video.events import EventSink, emit
from daemon.video.settings import SourceSettings
from daemon.video.windows import file_layout

# ---------------------------------------------------------------- files


class FileSource:
    """One video file through decord. Windows follow the file's timeline; only the
    frames that windows take are decoded to pictures, overlapping windows share them.

    Frame times are the file's media time plus an origin: the file's modification
    time minus its duration (when it was recorded, for an NVR export), or the wall
    clock at the start of the replay with `realtime`, so that it behaves as if live.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        settings: SourceSettings,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name, self.path, self.settings = name, Path(path), settings
        self.on_event, self._clock, self._wall = on_event, clock, wall
        self.origin: float | None = None  # POSIX time of media time 0, once windows() has opened the file

    def _open(self):
        import decord

        if not self.path.is_file():
            raise SourceError(f"cannot read {self.path}: no such file; check the path")
        try:
            reader = decord.VideoReader(str(self.path), num_threads=1)
            frame_count, fps = len(reader), float(reader.get_avg_fps())
        except Exception as exc:  # decord raises bare RuntimeErrors (DECORDError) for bad files
            raise SourceError(f"cannot read {self.path}: {_first_line(exc)}; is it a complete video file?") from None
        if frame_count == 0 or not fps > 0:
            raise SourceError(f"cannot read {self.path}: no video frames; is it a complete video file?")
        return reader, frame_count, fps

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        try:
            reader, frame_count, fps = self._open()
        except SourceError as exc:
            emit(self.name, "error", str(exc), self.on_event, logging.ERROR)
            return
        s = self.settings
        plans = file_layout(frame_count, fps, s.span, s.stride, s.frames)
        origin = self._wall() if s.realtime else self.path.stat().st_mtime - frame_count / fps
        self.origin = origin
        paced_from = self._clock()
        emit(self.name, "connected", f"reading {self.path.name} ({frame_count} frames, {fps:.1f} fps)", self.on_event)
        cache: dict[int, Frame] = {}
        for plan in plans:
            if stop.is_set():
                return
            try:
                frames = self._frames(reader, plan.indices, cache, origin)
            except Exception as exc:
                message = f"cannot decode {self.path.name} at {plan.start:.1f} s: {_first_line(exc)}; file truncated?"
                emit(self.name, "error", message, self.on_event, logging.ERROR)
                return
            if s.realtime and stop.wait(max(0.0, paced_from + plan.end - plans[0].start - self._clock())):
                return
            yield Window(self.name, origin + plan.start, origin + plan.end, frames)
        emit(self.name, "finished", f"finished {self.path.name}: {len(plans)} windows", self.on_event)

    def _frames(self, reader, indices: tuple[int, ...], cache: dict[int, Frame], origin: float) -> tuple[Frame, ...]:
        """Frames at `indices`, reusing the objects of the previous window where they coincide."""
        for old in [i for i in cache if i < indices[0]]:
            del cache[old]
        missing = sorted({i for i in indices if i not in cache})
        if missing:
            batch = reader.get_batch(missing).asnumpy()  # [n, H, W, 3] RGB
            for i, rgb in zip(missing, batch):
                ts = origin + float(reader.get_frame_timestamp(i)[0])
                cache[i] = Frame(self.name, ts, i, rgb[:, :, ::-1].copy())  # BGR, contiguous
        return tuple(cache[i] for i in indices)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
