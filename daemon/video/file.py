"""One video file through OpenCV's FFmpeg backend, as a stream of windows along its own timeline.

Read forward, frame by frame (`VideoFile`): grab (demux and decode) every
frame up to the next one a window takes, convert only that one to a picture,
seek only across long gaps. Nothing is decoded ahead and nothing is cached
by the reader, so its memory stays the decoder's own (about 30 MB for 1080p
H.264 with one thread) however long the consumer makes it wait. decord,
used before, decodes ahead while its caller waits: a 1080p file paced by the
NPU grew to over 2 GB.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from daemon.errors import SourceError
from daemon.types import Frame, Window
from daemon.video.events import EventSink, emit
from daemon.video.frames import FrameMaker
from daemon.video.settings import SourceSettings
from daemon.video.windows import file_layout

SEEK_AFTER = 5.0  # seconds: a longer gap to the next wanted frame is crossed by seeking, not decoding


class VideoFile:
    """A video file's frames by index, read forward with bounded memory. Not thread-safe."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"cannot read {self.path}: no such file; check the path")
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
        self._capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, params)
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceError(f"cannot read {self.path}: not a video FFmpeg can open; is it a complete video file?")
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        if self.frame_count <= 0 or not self.fps > 0:
            self.close()
            raise SourceError(f"cannot read {self.path}: no video frames; is it a complete video file?")
        self._next = 0  # the index the next grab() returns

    def read(self, indices: Iterable[int]) -> Iterator[tuple[int, float, np.ndarray]]:
        """(index, media seconds, BGR picture) for each of `indices` (ascending). SourceError when the
        file ends or breaks before one of them."""
        import cv2

        for index in indices:
            if index < self._next or index - self._next > SEEK_AFTER * self.fps:
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                self._next = index
            while self._next <= index:
                if not self._capture.grab():
                    raise SourceError(f"no frame {self._next} of {self.frame_count}")
                self._next += 1
            ok, bgr = self._capture.retrieve()
            if not ok:
                raise SourceError(f"frame {index} cannot be decoded")
            ms = self._capture.get(cv2.CAP_PROP_POS_MSEC)
            yield index, (ms / 1000.0 if ms >= 0 else index / self.fps), bgr

    def close(self) -> None:
        self._capture.release()


class FileSource:
    """One video file. Windows follow the file's timeline; only the frames that windows take are
    converted to pictures, and overlapping windows share them.

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
        make_frame: FrameMaker | None = None,
    ) -> None:
        self.name, self.path, self.settings = name, Path(path), settings
        self.on_event, self._clock, self._wall = on_event, clock, wall
        self.make_frame = make_frame or FrameMaker(settings.picture_width)

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        try:
            video = VideoFile(self.path, self.settings.threads(live=False))
        except SourceError as exc:
            emit(self.name, "error", str(exc), self.on_event, logging.ERROR)
            return
        try:
            yield from self._windows(video, stop)
        finally:
            video.close()

    def _windows(self, video: VideoFile, stop: threading.Event) -> Iterator[Window]:
        s, frame_count, fps = self.settings, video.frame_count, video.fps
        plans = file_layout(frame_count, fps, s.span, s.stride, s.frames)
        origin = self._wall() if s.realtime else self.path.stat().st_mtime - frame_count / fps
        paced_from = self._clock()
        emit(self.name, "connected", f"reading {self.path.name} ({frame_count} frames, {fps:.1f} fps)", self.on_event)
        cache: dict[int, Frame] = {}
        for plan in plans:
            if stop.is_set():
                return
            try:
                frames = self._frames(video, plan.indices, cache, origin)
            except Exception as exc:  # noqa: BLE001 - FFmpeg fails in many ways on damaged files
                message = f"cannot decode {self.path.name} at {plan.start:.1f} s: {_first_line(exc)}; file truncated?"
                emit(self.name, "error", message, self.on_event, logging.ERROR)
                return
            if s.realtime and stop.wait(max(0.0, paced_from + plan.end - plans[0].start - self._clock())):
                return
            yield Window(self.name, origin + plan.start, origin + plan.end, frames)
        emit(self.name, "finished", f"finished {self.path.name}: {len(plans)} windows", self.on_event)

    def _frames(self, video: VideoFile, indices: tuple[int, ...], cache: dict[int, Frame],
                origin: float) -> tuple[Frame, ...]:
        """Frames at `indices`, reusing the objects of the previous window where they coincide."""
        for old in [i for i in cache if i < indices[0]]:
            del cache[old]
        missing = sorted({i for i in indices if i not in cache})
        for i, seconds, bgr in video.read(missing):
            cache[i] = self.make_frame(self.name, origin + seconds, i, bgr)
        return tuple(cache[i] for i in indices)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
