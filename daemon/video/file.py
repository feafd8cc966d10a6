"""One video file through OpenCV's FFmpeg backend, as a stream of windows along its own timeline,
resumed after a restart from the last window the daemon finished with.

Read forward, frame by frame (`VideoFile`): grab (demux and decode) every
frame up to the next one a window takes, convert only that one to a picture,
seek only across long gaps. Nothing is decoded ahead and nothing is cached
by the reader, so its memory stays the decoder's own (about 30 MB for 1080p
H.264 with one thread) however long the consumer makes it wait. decord,
used before, decodes ahead while its caller waits: a 1080p file paced by the
NPU grew to over 2 GB.

Progress (`FileProgress`, in SQLite under the state directory) is keyed by source
and path and remembers the file's size and modification time: a file rewritten
since (other size or mtime) starts over. A window counts as finished once the
daemon has recorded it (analysed, skipped, dropped or refused: `processed`);
windows still waiting for the NPU at a restart are taken again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from daemon.config.cameras import SourceSettings
from daemon.errors import SourceError
from daemon.state.store import MEMORY, Store
from daemon.types import Frame, Window
from daemon.video.decoders import CameraDecoder
from daemon.video.events import EventSink, SourceBase, emit
from daemon.video.frames import FrameMaker
from daemon.video.windows import FileWindow, file_layout

# Appended to, never edited (see daemon.state.store.migrate).
PROGRESS_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS file_progress (
            source     TEXT NOT NULL,
            path       TEXT NOT NULL,           -- absolute
            size       INTEGER NOT NULL,        -- the file's identity: another size or mtime starts over
            mtime_ns   INTEGER NOT NULL,
            done_until REAL NOT NULL,           -- media seconds: every window ending by then is finished
            beyond     TEXT NOT NULL,           -- JSON list: media ends of finished windows after done_until
            at         REAL NOT NULL,           -- POSIX seconds
            PRIMARY KEY (source, path))""",
    ],
]


@dataclass(frozen=True)
class Progress:
    """How far the daemon got in one file: windows ending at or before `done_until` (media seconds),
    and those ending at `beyond`, recorded while an earlier one still waited for the NPU."""

    size: int
    mtime_ns: int
    done_until: float
    beyond: tuple[float, ...] = ()

    def done(self, end: float) -> bool:
        return end <= self.done_until + 1e-6 or any(abs(end - b) < 1e-6 for b in self.beyond)


class FileProgress(Store):
    """Per (source, path), the last finished window of a file (`path` None: in memory only).

    Opened on first use, so that building a source does no I/O. Thread-safe.
    """

    component, migrations, what = "file_progress", PROGRESS_MIGRATIONS, "the record of file progress"

    def __init__(self, path: str | os.PathLike | None) -> None:
        super().__init__(MEMORY if path is None else path)
        self._opening = threading.Lock()

    def _configure(self, db: sqlite3.Connection) -> None:
        super()._configure(db)
        db.execute("PRAGMA journal_mode=WAL")

    def get(self, source: str, path: str) -> Progress | None:
        row = self._use(lambda db: db.execute(
            "SELECT size, mtime_ns, done_until, beyond FROM file_progress WHERE source = ? AND path = ?",
            (source, path)).fetchone(), "read")
        return None if row is None else Progress(*row[:3], tuple(json.loads(row[3])))

    def put(self, source: str, path: str, progress: Progress) -> None:
        self._use(lambda db: db.execute(
            "INSERT OR REPLACE INTO file_progress (source, path, size, mtime_ns, done_until, beyond, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (source, path, progress.size, progress.mtime_ns, progress.done_until, json.dumps(progress.beyond),
             time.time())), "write")

    def _use(self, action, verb: str):
        with self._opening:
            if self._db is None:
                self.open()
        return self._run(action, verb)


SEEK_AFTER = 5.0  # seconds: a longer gap to the next wanted frame is crossed by seeking, not decoding


class VideoFile:
    """A video file's frames by index, read forward with bounded memory. Not thread-safe."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"cannot read {self.path}: no such file; check the path")
        params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
        self.decoder = CameraDecoder(self.path.name)  # the board's hardware decoder when it has one for the codec
        self._capture = self.decoder.open(str(self.path), params)
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


class FileSource(SourceBase):
    """One video file. Windows follow the file's timeline; only the frames that windows take are
    converted to pictures, and overlapping windows share them.

    Frame times are the file's media time plus an origin: the file's modification
    time minus its duration (when it was recorded, for an NVR export), or the wall
    clock at the start of the replay with `realtime`, so that it behaves as if live.

    With `progress`, a file read before starts after its last finished window
    (the daemon calls `recorded(window)` for each window it has recorded).
    """

    live = False  # ends with the file; the camera watchdog does not expect windows all the time

    @property
    def paced(self) -> bool:
        """Read as fast as the NPU takes windows, unless replayed in real time (then stale ones drop)."""
        return not self.settings.realtime

    def __init__(
        self,
        name: str,
        path: Path,
        settings: SourceSettings,
        *,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        progress: FileProgress | None = None,
        make_frame: FrameMaker | None = None,
    ) -> None:
        self.name, self.path, self.settings = name, Path(path), settings
        self.on_event, self._clock, self._wall = on_event, clock, wall
        self.make_frame = make_frame or FrameMaker(settings.picture_width)
        self.progress = progress
        self.origin: float | None = None  # POSIX time of media time 0, once windows() has opened the file
        self._lock = threading.Lock()
        self._identity: tuple[int, int] | None = None  # size, mtime_ns of the file being read
        self._yielded: OrderedDict[float, float] = OrderedDict()  # window end -> its media end, not yet finished
        self._finished: set[float] = set()  # ends of finished windows behind an unfinished one
        self._done = Progress(0, 0, float("-inf"))  # as stored: what an earlier run finished

    def close(self) -> None:
        """Close the progress record (it reopens on next use)."""
        if self.progress is not None:
            self.progress.close()

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
        stat = self.path.stat()
        origin = self._wall() if s.realtime else stat.st_mtime - frame_count / fps
        self.origin = origin
        paced_from = self._clock()
        total, plans = len(plans), self._resume(plans, (stat.st_size, stat.st_mtime_ns))
        if not plans:
            emit(self.name, "finished", f"finished {self.path.name}: its {total} windows were done before",
                 self.on_event)
            return
        after = f", resuming at {plans[0].start:.1f} s ({total - len(plans)} windows done before)" \
            if len(plans) < total else ""
        emit(self.name, "connected", f"reading {self.path.name} ({frame_count} frames, {fps:.1f} fps){after}",
             self.on_event)
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
            with self._lock:
                self._yielded[origin + plan.end] = plan.end
            yield Window(self.name, origin + plan.start, origin + plan.end, frames)
        emit(self.name, "finished", f"finished {self.path.name}: {total} windows", self.on_event)

    def _resume(self, plans: list[FileWindow], identity: tuple[int, int]) -> list[FileWindow]:
        """The plans not finished in an earlier run of this file (all of them for a new or changed file)."""
        done = self.progress.get(self.name, str(self.path.resolve())) if self.progress is not None else None
        if done is None or (done.size, done.mtime_ns) != identity:
            done = Progress(*identity, float("-inf"))
        with self._lock:
            self._identity, self._yielded, self._finished, self._done = identity, OrderedDict(), set(), done
        return [p for p in plans if not done.done(p.end)]

    def recorded(self, window: Window) -> None:
        """The daemon has recorded `window`: remember it, so that a restart does not take it again."""
        with self._lock:
            if window.end not in self._yielded or self.progress is None:
                return  # not from the current run of this file
            self._finished.add(window.end)
            done = self._done
            while self._yielded and next(iter(self._yielded)) in self._finished:
                end, media_end = self._yielded.popitem(last=False)
                self._finished.discard(end)
                done = Progress(done.size, done.mtime_ns, media_end, tuple(b for b in done.beyond if b > media_end))
            beyond = tuple(sorted(set(done.beyond) | {self._yielded[end] for end in self._finished}))
            self._done = Progress(done.size, done.mtime_ns, done.done_until, beyond)
            # under the lock: the capture and NPU threads never store their marks out of order
            self.progress.put(self.name, str(self.path.resolve()), self._done)

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
