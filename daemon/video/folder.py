"""A folder of clips (an NVR's exports): each clip that appears is processed once.

A clip is taken when its size and modification time have stayed the same for
`folder.settle` seconds (the NVR has finished writing it); it is marked done
only after its last window was taken, so a clip cut short by a restart is
processed again, from its start or, with a `FileProgress`, from its last
finished window. The done-set lives in SQLite, keyed by source,
path relative to the folder, and size: a clip that is later rewritten with a
different size counts as new.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Generator, Iterator

from daemon.config.cameras import SourceSettings
from daemon.state.store import MEMORY, Store
from daemon.types import Window
from daemon.video.events import VIDEO_EXTENSIONS, EventSink, SourceBase, SourceEvent, emit
from daemon.video.file import FileProgress, FileSource
from daemon.video.frames import FrameMaker

# Appended to, never edited (see daemon.state.store.migrate). IF NOT EXISTS: files written before
# schema versions already hold the table.
PROCESSED_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS processed_files (
            source TEXT NOT NULL,
            path   TEXT NOT NULL,               -- relative to the watched folder
            size   INTEGER NOT NULL,
            status TEXT NOT NULL,               -- done | error
            at     REAL NOT NULL,               -- POSIX seconds
            PRIMARY KEY (source, path, size))""",
    ],
]


class ProcessedFiles(Store):
    """The clips already processed, keyed (source, path, size), in SQLite (`path` None: in memory only).

    Opened on first use, so that building a source does no I/O. Thread-safe.
    """

    component, migrations, what = "processed_files", PROCESSED_MIGRATIONS, "the record of processed clips"

    def __init__(self, path: str | os.PathLike | None) -> None:
        super().__init__(MEMORY if path is None else path)
        self._opening = threading.Lock()

    def _configure(self, db: sqlite3.Connection) -> None:
        super()._configure(db)
        db.execute("PRAGMA journal_mode=WAL")  # readers (sqlite3 in a shell) never block the writer

    def __contains__(self, key: tuple[str, str, int]) -> bool:
        row = self._use(lambda db: db.execute(
            "SELECT 1 FROM processed_files WHERE source = ? AND path = ? AND size = ?", key).fetchone(), "read")
        return row is not None

    def add(self, key: tuple[str, str, int], status: str = "done") -> None:
        """Record a clip as processed: status "done", or "error" (it is not tried again either)."""
        self._use(lambda db: db.execute(
            "INSERT OR REPLACE INTO processed_files (source, path, size, status, at) VALUES (?, ?, ?, ?, ?)",
            (*key, status, time.time())), "write")

    def _use(self, action, verb: str):
        with self._opening:
            if self._db is None:
                self.open()
        return self._run(action, verb)


class FolderSource(SourceBase):
    """Every clip that appears in `folder` (recursively), oldest first, once each."""

    live = False  # waits for clips: hours without a window are normal

    @property
    def paced(self) -> bool:
        """Read as fast as the NPU takes windows, unless replayed in real time (then stale ones drop)."""
        return not self.settings.realtime

    def __init__(
        self,
        name: str,
        folder: Path,
        settings: SourceSettings,
        *,
        processed: ProcessedFiles | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        once: bool = False,
        progress: FileProgress | None = None,
        make_frame: FrameMaker | None = None,
    ) -> None:
        self.name, self.folder, self.settings, self.once = name, Path(folder), settings, once
        self.make_frame = make_frame
        self.processed = processed if processed is not None else ProcessedFiles(None)
        self.on_event, self._clock, self.progress = on_event, clock, progress
        self._current: FileSource | None = None  # the clip being read
        self._seen: dict[str, tuple[int, int, float]] = {}  # path -> size, mtime_ns, unchanged since
        self._done: set[tuple[str, int]] = set()  # (path, size) known to be processed
        self._missing_reported = False

    def windows(self, stop: threading.Event) -> Iterator[Window]:
        """Clips as they appear; with `once`, end when every clip present has been processed."""
        while True:
            ready = self._ready()
            for rel, size in ready:
                status = yield from self._clip(rel, stop)
                if status is not None:  # None: cut short, so it is processed again after a restart
                    self.processed.add((self.name, rel, size), status)
                if stop.is_set():
                    return
            if self.once and not ready and not self._pending():
                emit(self.name, "finished", f"folder {self.folder}: every clip processed", self.on_event)
                return
            if stop.wait(self.settings.folder.poll):
                return

    def _pending(self) -> bool:
        """Clips seen but not yet processed (still being written, or waiting to settle)."""
        return any((rel, size) not in self._done for rel, (size, _, _) in self._seen.items())

    def _clip(self, rel: str, stop: threading.Event) -> Generator[Window, None, str | None]:
        """Windows of one clip; returns "done", "error", or None when `stop` cut it short."""
        ends: list[str] = []

        def listen(event: SourceEvent) -> None:
            if event.kind in ("finished", "error"):
                ends.append("done" if event.kind == "finished" else "error")
            if self.on_event is not None:
                self.on_event(event)

        self._current = FileSource(self.name, self.folder / rel, self.settings, on_event=listen,
                                   progress=self.progress, make_frame=self.make_frame)
        yield from self._current.windows(stop)
        return ends[0] if ends else None

    def close(self) -> None:
        """Close the records of processed clips and progress (they reopen on next use)."""
        self.processed.close()
        if self.progress is not None:
            self.progress.close()

    def recorded(self, window: Window) -> None:
        """The daemon has recorded `window` (see `FileSource.recorded`)."""
        current = self._current
        if current is not None:
            current.recorded(window)

    def _ready(self) -> list[tuple[str, int]]:
        """Clips not yet done whose size has been stable for `settle` seconds."""
        listing = self._scan()
        now, ready = self._clock(), []
        for rel, (size, mtime_ns) in sorted(listing.items(), key=lambda item: (item[1][1], item[0])):
            if (rel, size) in self._done or (self.name, rel, size) in self.processed:
                self._done.add((rel, size))  # remembered: no database query per clip and poll
                continue
            seen = self._seen.get(rel)
            if seen is None or seen[:2] != (size, mtime_ns):
                self._seen[rel] = (size, mtime_ns, now)  # new or still growing
            elif now - seen[2] >= self.settings.folder.settle:
                ready.append((rel, size))
        self._seen = {rel: v for rel, v in self._seen.items() if rel in listing}
        self._done = {(rel, size) for rel, size in self._done if rel in listing}
        return ready

    def _scan(self) -> dict[str, tuple[int, int]]:
        """Video files under the folder: relative path -> (size, mtime_ns). Hidden ones are skipped."""
        if not self.folder.is_dir():
            if not self._missing_reported:
                message = f"folder {self.folder} does not exist (yet); watching for it"
                emit(self.name, "error", message, self.on_event, logging.WARNING)
                self._missing_reported = True
            return {}
        self._missing_reported = False
        found = {}
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if file.startswith(".") or not file.lower().endswith(VIDEO_EXTENSIONS):
                    continue
                path = Path(root, file)
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # removed between listing and stat
                if st.st_size > 0:
                    found[str(path.relative_to(self.folder))] = (st.st_size, st.st_mtime_ns)
        return found
