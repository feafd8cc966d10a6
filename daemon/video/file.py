"""One video file through decord, as a stream of windows along its own timeline,
resumed after a restart from the last window the daemon finished with.

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
from typing import Callable, Iterator

from daemon.errors import SourceError
from daemon.store import MEMORY, Store
from daemon.types import Frame, Window
from daemon.video.events import EventSink, emit
from daemon.video.settings import SourceSettings
from daemon.video.windows import FileWindow, file_layout

# Appended to, never edited (see daemon.store.migrate).
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


# ---------------------------------------------------------------- files


class FileSource:
    """One video file through decord. Windows follow the file's timeline; only the
    frames that windows take are decoded to pictures, overlapping windows share them.

    Frame times are the file's media time plus an origin: the file's modification
    time minus its duration (when it was recorded, for an NVR export), or the wall
    clock at the start of the replay with `realtime`, so that it behaves as if live.

    With `progress`, a file read before starts after its last finished window
    (the daemon calls `recorded(window)` for each window it has recorded).
    """

    live = False  # ends with the file; the camera watchdog does not expect windows all the time

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
    ) -> None:
        self.name, self.path, self.settings = name, Path(path), settings
        self.on_event, self._clock, self._wall = on_event, clock, wall
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
                frames = self._frames(reader, plan.indices, cache, origin)
            except Exception as exc:
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
