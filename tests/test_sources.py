"""Settings, URL redaction, backoff, file and folder sources (no network; see test_rtsp.py)."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
from clips import Scene, Thing, scene_frames, write_clip, write_scene
from pydantic import BaseModel, ValidationError

from daemon.config.cameras import GateSettings, SourceSettings
from daemon.errors import SourceError
from daemon.redact import redact_url
from daemon.video import open_source
from daemon.video.events import source_name
from daemon.video.file import FileProgress, FileSource
from daemon.video.folder import FolderSource, ProcessedFiles
from daemon.video.stream import StreamSource, backoff_delay

# ---------------------------------------------------------------- redaction and names


@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsps://admin@cam.local/live", "rtsps://***@cam.local/live"),
        ("rtsp://admin:p@ss/w:rd@10.0.0.5/s", "rtsp://***@10.0.0.5/s"),  # unescaped '@' and '/' in the password
        ("http://cam/video.mjpg?user=admin&pwd=hunter2&fps=5", "http://cam/video.mjpg?user=***&pwd=***&fps=5"),
        ("http://cam/cgi?loginuse=a&loginpas=hunter2", "http://cam/cgi?loginuse=***&loginpas=***"),
        ("https://cam/stream?access_token=hunter2#x", "https://cam/stream?access_token=***#x"),
        ("rtsp://10.0.0.5/stream", "rtsp://10.0.0.5/stream"),
        ("/videos/yard.mp4", "/videos/yard.mp4"),
    ],
)
def test_redact_url_hides_credentials(url, shown):
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url) and "w:rd" not in redact_url(url)


def test_source_names():
    assert source_name("rtsp://admin:hunter2@10.0.0.5:554/stream1") == "10.0.0.5"
    assert source_name("/videos/yard.mp4") == "yard"
    assert source_name("/nvr/exports/") == "exports"


def test_open_source_picks_the_kind_and_rejects_unknown_schemes(tmp_path):
    settings = SourceSettings()
    assert isinstance(open_source("a", "rtsp://u:p@cam/s", settings), StreamSource)
    assert isinstance(open_source("b", str(tmp_path), settings), FolderSource)
    assert isinstance(open_source("c", str(tmp_path / "x.mp4"), settings), FileSource)
    assert isinstance(open_source("d", f"file://{tmp_path}/x.mp4", settings), FileSource)
    with pytest.raises(SourceError) as err:
        open_source("e", "ftp://bob:hunter2@nas/x.mp4", settings)
    assert str(err.value) == (
        "camera e: unsupported source 'ftp://***@nas/x.mp4'; "
        "use rtsp://, rtsps://, http(s)://, a video file or a folder"
    )


# ---------------------------------------------------------------- settings


def test_settings_defaults_and_stride_follows_span():
    s = SourceSettings()
    assert (s.span, s.stride, s.frames, s.realtime) == (8.0, 8.0, 8, False)
    assert (s.gate.enabled, s.gate.threshold, s.gate.heartbeat) == (True, 0.0005, 600.0)
    assert SourceSettings(span=4).stride == 4.0
    assert SourceSettings(span=8, stride=2).stride == 2.0
    assert SourceSettings.model_validate({"span": 6, "gate": {"threshold": 0.05}}).gate.threshold == 0.05
    assert s.picture_width == 640
    assert (s.threads(live=True), s.threads(live=False)) == (2, 1)  # cameras keep up with real time
    assert SourceSettings(decode_threads=0).threads(live=False) == 0  # FFmpeg's choice


@pytest.mark.parametrize(
    "values, location",
    [
        ({"spn": 8}, ("spn",)),
        ({"gate": {"treshold": 0.1}}, ("gate", "treshold")),
        ({"span": -1}, ("span",)),
        ({"frames": 0}, ("frames",)),
        ({"stream": {"retry_min": 10, "retry_max": 5}}, ("stream",)),
        ({"picture_width": -1}, ("picture_width",)),
        ({"decode_threads": -1}, ("decode_threads",)),
    ],
)
def test_settings_reject_typos_and_bad_values(values, location):
    with pytest.raises(ValidationError) as err:
        SourceSettings.model_validate(values)
    assert err.value.errors()[0]["loc"] == location


def test_every_setting_is_described():
    def walk(model: type[BaseModel]):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation)

    walk(SourceSettings)
    walk(GateSettings)


def test_backoff_doubles_to_a_cap_with_jitter():
    rng = random.Random(1)
    delays = [backoff_delay(a, 1.0, 60.0, rng) for a in range(10)]
    for attempt, delay in enumerate(delays):
        full = min(60.0, 2.0**attempt)
        assert 0.5 * full <= delay <= full
    assert max(delays) <= 60.0 and delays[-1] >= 30.0
    assert len({round(backoff_delay(3, 1.0, 60.0, rng), 6) for _ in range(20)}) > 1  # jittered
    assert backoff_delay(10_000, 1.0, 60.0, rng) <= 60.0  # no overflow on long outages


# ---------------------------------------------------------------- file source


class Events(list):
    def __call__(self, event):
        self.append(event)

    def kinds(self):
        return [e.kind for e in self]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """10 s at 10 fps; a pure-red square in the top-left corner (to check BGR order)."""
    scene = Scene(duration=10.0, noise=2.0, things=(Thing(appear=0, leave=99, start=(0, 0), colour=(0, 0, 255)),))
    return write_scene(tmp_path_factory.mktemp("file") / "porch.mp4", scene)


def test_file_windows_follow_the_file_timeline(clip):
    events = Events()
    windows = list(FileSource("porch", clip, SourceSettings(span=4), on_event=events).windows(threading.Event()))
    origin = clip.stat().st_mtime - 10.0
    assert [(round(w.start - origin, 3), round(w.end - origin, 3)) for w in windows] == [(0, 4), (4, 8), (6, 10)]
    for w in windows:
        assert w.camera == "porch" and len(w.frames) == 8
        assert all(w.start <= f.ts < w.end for f in w.frames)
        assert [f.ts for f in w.frames] == sorted(f.ts for f in w.frames)
    b, g, r = windows[0].frames[0].image[10, 10]
    assert r > 200 and b < 60 and g < 60  # BGR like every Frame
    assert events.kinds() == ["connected", "finished"]


def every_frame(path):
    """The clip decoded frame by frame from the start: what each index must give."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(bgr)


# back to back; overlapping; a tail window that seeks back; windows far apart (seeks forward)
@pytest.mark.parametrize("span, stride", [(4, 4), (4, 2), (3, 3), (1, 8)])
def test_file_frames_are_the_decoded_frames_at_their_indices(clip, span, stride):
    reference = every_frame(clip)
    settings = SourceSettings(span=span, stride=stride, picture_width=0)
    windows = list(FileSource("porch", clip, settings).windows(threading.Event()))
    assert len(windows) >= 2
    for w in windows:
        for f in w.frames:
            np.testing.assert_array_equal(f.image, reference[f.index])
    if stride < span:  # overlapping windows share Frame objects (the ViT's feature cache)
        shared = {id(f) for f in windows[0].frames} & {id(f) for f in windows[1].frames}
        assert shared


def test_file_frames_keep_a_reduced_picture_and_the_model_input_of_the_full_one(clip):
    from daemon.video.frames import FrameMaker

    reference = every_frame(clip)  # 320x240
    fit = lambda bgr: cv2_resize(bgr, (64, 64))  # noqa: E731
    source = FileSource("porch", clip, SourceSettings(span=4), make_frame=FrameMaker(160, fit))
    first = next(iter(source.windows(threading.Event()))).frames[0]
    assert first.image.shape == (120, 160, 3)
    np.testing.assert_array_equal(first.model_input, cv2_resize(reference[first.index], (64, 64)))


def cv2_resize(bgr, size):
    import cv2

    return cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC)


def test_missing_corrupt_and_truncated_files_are_error_events(tmp_path, clip):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(20_000))
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    for path in (tmp_path / "missing.mp4", junk, truncated):
        events = Events()
        windows = list(FileSource("porch", path, SourceSettings(), on_event=events).windows(threading.Event()))
        assert windows == []
        assert events.kinds() == ["error"]
        assert events[0].message.startswith(f"cannot read {path}: ")


def test_truncated_mjpeg_gives_the_windows_it_has(tmp_path):
    full = write_clip(tmp_path / "full.avi", scene_frames(Scene(duration=10.0)), fps=10)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    events = Events()
    windows = list(FileSource("cam", cut, SourceSettings(span=2), on_event=events).windows(threading.Event()))
    assert 1 <= len(windows) < 5 and events.kinds()[-1] in ("finished", "error")


class FakeTime:
    """A clock and a stop event whose wait() advances the clock instead of sleeping."""

    def __init__(self):
        self.now, self.waits = 100.0, []
        self.stop = threading.Event()
        self.stop.wait = self.wait  # type: ignore[method-assign]

    def clock(self) -> float:
        return self.now

    def wait(self, seconds=None) -> bool:
        self.waits.append(seconds)
        self.now += seconds or 0.0
        return False


def test_realtime_paces_windows_at_wall_clock_speed(clip):
    fake = FakeTime()
    source = FileSource("porch", clip, SourceSettings(span=2, realtime=True), clock=fake.clock, wall=lambda: 5000.0)
    arrivals = []
    for window in source.windows(fake.stop):
        arrivals.append((fake.now - 100.0, window.end - 5000.0))
    assert arrivals == [(pytest.approx(t), pytest.approx(t)) for t in (2, 4, 6, 8, 10)]  # due at each window's end


def test_stop_ends_a_file_early(clip):
    stop = threading.Event()
    windows = FileSource("porch", clip, SourceSettings(span=1)).windows(stop)
    next(windows)
    stop.set()
    assert list(windows) == []


def test_a_file_resumes_after_its_last_recorded_window_and_a_changed_file_starts_over(tmp_path, clip):
    import os
    import shutil

    video = shutil.copy(clip, tmp_path / "porch.mp4")
    progress = FileProgress(tmp_path / "state" / "processed.sqlite")
    settings = SourceSettings(span=2)  # windows end at 2, 4, 6, 8, 10 s
    origin = os.stat(video).st_mtime - 10.0

    def media_ends(windows):
        return [round(w.end - origin, 3) for w in windows]

    first = FileSource("porch", video, settings, progress=progress)
    stop = threading.Event()
    windows = first.windows(stop)
    taken = [next(windows) for _ in range(4)]
    first.recorded(taken[0])
    first.recorded(taken[2])  # recorded out of order: the second is still waiting for the NPU ...
    stop.set()
    assert list(windows) == []  # ... when the daemon stops

    events = Events()
    second = FileSource("porch", video, settings, progress=progress, on_event=events)
    resumed = list(second.windows(threading.Event()))
    assert media_ends(resumed) == [4, 8, 10]  # every window not recorded before, and only those
    assert events[0].message.endswith("resuming at 2.0 s (2 windows done before)")
    for window in resumed:
        second.recorded(window)

    events = Events()
    assert list(FileSource("porch", video, settings, progress=progress, on_event=events).windows(
        threading.Event())) == []
    assert events.kinds() == ["finished"] and events[0].message == "finished porch.mp4: its 5 windows were done before"

    os.utime(video, (origin + 100, origin + 100))  # rewritten: another modification time
    assert len(list(FileSource("porch", video, settings, progress=progress).windows(threading.Event()))) == 5
    progress.close()


def test_file_progress_is_kept_per_camera_and_opens_on_first_use(tmp_path, clip):
    path = tmp_path / "state" / "processed.sqlite"
    progress = FileProgress(path)
    porch = FileSource("porch", clip, SourceSettings(span=5), progress=progress)
    assert not path.exists()  # building a source does no I/O
    for window in porch.windows(threading.Event()):
        porch.recorded(window)
    garden = FileSource("garden", clip, SourceSettings(span=5), progress=progress)
    assert len(list(garden.windows(threading.Event()))) == 2  # the same file, another camera: its own progress
    progress.close()


# ---------------------------------------------------------------- folder source


def short_clip(path, seed):
    return write_scene(path, Scene(duration=2.0, seed=seed))


class FolderRun:
    """Run a folder source in a named thread; collect windows and events; wait on conditions, not sleeps."""

    def __init__(self, make_source):
        self.stop, self.windows, self.events = threading.Event(), [], []
        self.changed = threading.Condition()
        self.source = make_source(self._event)
        self.thread = threading.Thread(target=self._consume, name="test-folder", daemon=True)

    def _event(self, event):
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def _consume(self):
        for window in self.source.windows(self.stop):
            with self.changed:
                self.windows.append(window)
                self.changed.notify_all()

    def wait_for(self, predicate, timeout=30.0):
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self), timeout), f"timed out; events {self.events}"

    def messages(self, kind):
        return [e.message for e in self.events if e.kind == kind]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def write_slowly(data: bytes, dest, chunks: int, pause: float, stop: threading.Event):
    """Like an NVR export: the file grows in chunks, with pauses shorter than the settle time."""
    step = len(data) // chunks + 1
    with open(dest, "wb") as out:
        for i in range(0, len(data), step):
            out.write(data[i : i + step])
            out.flush()
            if stop.wait(pause):
                return


def test_folder_clips_written_slowly_are_processed_once_each_across_a_restart(tmp_path):
    inbox, state = tmp_path / "inbox", tmp_path / "state" / "processed.sqlite"
    inbox.mkdir()
    clips = [short_clip(tmp_path / f"src{i}.mp4", seed=i) for i in range(3)]
    settings = SourceSettings.model_validate({"span": 1, "folder": {"poll": 0.05, "settle": 0.6}})

    def source(on_event):
        return FolderSource("nvr", inbox, settings, processed=ProcessedFiles(state), on_event=on_event)

    with FolderRun(source) as first:
        writers = [
            threading.Thread(target=write_slowly, args=(c.read_bytes(), inbox / f"clip{i}.mp4", 6, 0.1, first.stop),
                             name=f"test-writer-{i}")
            for i, c in enumerate(clips[:2])
        ]  # fmt: skip
        for w in writers:
            w.start()
        first.wait_for(lambda run: len(run.messages("finished")) == 2)
        for w in writers:
            w.join()
    assert first.messages("error") == []  # never read while still growing
    assert sorted(first.messages("connected")) == [
        "reading clip0.mp4 (20 frames, 10.0 fps)",
        "reading clip1.mp4 (20 frames, 10.0 fps)",
    ]
    assert len(first.windows) == 4  # 2 clips x 2 windows

    (inbox / "sub").mkdir()
    (inbox / "sub" / "clip2.mp4").write_bytes(clips[2].read_bytes())
    (inbox / ".hidden.mp4").write_bytes(clips[2].read_bytes())
    (inbox / "notes.txt").write_text("not a clip")
    with FolderRun(source) as second:  # a restart: same state file, the old clips are still there
        second.wait_for(lambda run: len(run.messages("finished")) == 1)
    assert second.messages("connected") == ["reading clip2.mp4 (20 frames, 10.0 fps)"]
    assert len(second.windows) == 2


def test_folder_bad_clip_is_reported_once_and_the_rest_continue(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a_broken.mp4").write_bytes(b"not a video" * 100)
    good = short_clip(inbox / "b_good.mp4", seed=1)
    settings = SourceSettings.model_validate({"span": 1, "folder": {"poll": 0.05, "settle": 0.0}})
    processed = ProcessedFiles(tmp_path / "p.sqlite")

    def source(on_event):
        return FolderSource("nvr", inbox, settings, processed=processed, on_event=on_event)

    with FolderRun(source) as run:
        run.wait_for(lambda run: len(run.messages("finished")) == 1)
    assert len(run.messages("error")) == 1 and len(run.windows) == 2
    assert ("nvr", "a_broken.mp4", 1100) in processed
    assert ("nvr", "b_good.mp4", good.stat().st_size) in processed
    probe = source(None)  # scans twice (settle 0): nothing is left to do, the broken clip included
    assert probe._ready() == [] and probe._ready() == []


def test_processed_files_opens_on_first_use_and_keeps_a_record_from_before_schema_versions(tmp_path):
    import sqlite3

    path = tmp_path / "state" / "processed.sqlite"
    record = ProcessedFiles(path)
    assert not path.exists()  # building a source does no I/O
    assert ("nvr", "a.mp4", 10) not in record
    record.add(("nvr", "a.mp4", 10), "error")
    assert ("nvr", "a.mp4", 10) in record and ("nvr", "a.mp4", 11) not in record
    record.close()

    old = tmp_path / "old.sqlite"  # as the daemon wrote it before it kept schema versions
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE processed_files (source TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,"
                   " status TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (source, path, size))")
        db.execute("INSERT INTO processed_files VALUES ('nvr', 'a.mp4', 10, 'done', 0)")
    db.close()
    record = ProcessedFiles(old)
    assert ("nvr", "a.mp4", 10) in record
    record.close()


def test_folder_that_does_not_exist_yet_is_waited_for(tmp_path):
    inbox = tmp_path / "later"
    settings = SourceSettings.model_validate({"span": 1, "folder": {"poll": 0.05, "settle": 0.0}})
    with FolderRun(lambda on_event: FolderSource("nvr", inbox, settings, on_event=on_event)) as run:
        run.wait_for(lambda run: run.messages("error"))
        inbox.mkdir()
        short_clip(tmp_path / "x.mp4", seed=2).replace(inbox / "x.mp4")  # whole at once: settle is 0
        run.wait_for(lambda run: run.messages("finished"))
    assert run.messages("error") == [f"folder {inbox} does not exist (yet); watching for it"]
