"""A real RTSP camera (GStreamer's RTSP server, tests/rtsp_server.py) against StreamSource.

The server runs under Debian's /usr/bin/python3, where the GStreamer bindings
live, on a free loopback port, looping a generated clip. Timeouts are short so
that failures are detected in about a second; waits are on conditions.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import psutil
import pytest
from clips import Scene, Thing, scene_frames, write_jpeg_frames
from rtsp_camera import SECRET, RtspServer, gstreamer_rtsp_missing

from daemon import cli
from daemon.config.cameras import SourceSettings
from daemon.video.stream import StreamSource

pytestmark = pytest.mark.skipif(bool(gstreamer_rtsp_missing()), reason=str(gstreamer_rtsp_missing()))

FAST = SourceSettings.model_validate(
    {
        "span": 1.0,
        "stride": 0.5,  # overlapping: shared frames
        "frames": 4,
        "stream": {"open_timeout": 2.0, "read_timeout": 1.0, "retry_min": 0.05, "retry_max": 0.5},
    }
)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    scene = Scene(duration=2.0, fps=25.0, noise=3.0, things=(Thing(0.5, 1.5, (40, 80), (240, 100), 0.5, 1.5),))
    return write_jpeg_frames(tmp_path_factory.mktemp("rtsp") / "frames", scene_frames(scene))


@pytest.fixture
def server(frames):
    srv = RtspServer(frames).start()
    yield srv
    srv.stop()


@pytest.fixture
def fast_probe(monkeypatch):
    # FFmpeg probes ~20 frames to guess the frame rate when it opens a stream; 2 are
    # enough for these tests and make each reconnect ~0.5 s faster.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|fpsprobesize;2")


@pytest.fixture(autouse=True)
def no_secret_anywhere(caplog, capfd):
    """Whatever a test does, the password shows up in no log line, event or stderr output."""
    caplog.set_level("DEBUG")
    yield
    out, err = capfd.readouterr()
    assert SECRET not in caplog.text and SECRET not in out and SECRET not in err


class Camera:
    """StreamSource consumed in a named thread; windows and events collected under one condition."""

    def __init__(self, url: str, settings: SourceSettings = FAST, make_frame=None) -> None:
        self.source = StreamSource("yard", url, settings, on_event=self._event, make_frame=make_frame)
        self.stop, self.windows, self.events = threading.Event(), [], []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._consume, name="test-consumer", daemon=True)

    def _event(self, event) -> None:
        assert SECRET not in event.message
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def _consume(self) -> None:
        for window in self.source.windows(self.stop):
            with self.changed:
                self.windows.append(window)
                self.changed.notify_all()

    def count(self, kind: str) -> int:
        return sum(e.kind == kind for e in self.events)

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        with self.changed:
            ok = self.changed.wait_for(lambda: predicate(self), timeout)
        assert ok, f"timed out; events: {[(e.kind, e.message) for e in self.events]}"

    def windows_after(self, ts: float) -> int:
        return sum(w.start >= ts for w in self.windows)

    def __enter__(self) -> "Camera":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        assert not [t.name for t in threading.enumerate() if t.name.startswith("stream-")]


def test_windows_arrive_with_shared_frames(server, monkeypatch):
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)  # the defaults, once
    with Camera(server.url()) as cam:
        cam.wait_for(lambda c: len(c.windows) >= 3)
    first, second = cam.windows[:2]
    assert first.camera == "yard" and len(first.frames) == 4
    assert first.end - first.start == pytest.approx(1.0) and second.start - first.start == pytest.approx(0.5)
    assert all(f.image.shape == (240, 320, 3) for f in first.frames)
    assert [f.ts for f in first.frames] == sorted(f.ts for f in first.frames)
    assert first.frames[2] is second.frames[0] and first.frames[3] is second.frames[1]
    assert not np.shares_memory(first.frames[0].image, first.frames[1].image)  # each frame owns its picture
    assert abs(time.time() - first.end) < 10  # wall-clock stamps
    connected = [e.message for e in cam.events if e.kind == "connected"]
    assert connected == [f"connected to rtsp://***@127.0.0.1:{server.port}/cam (320x240, 25 fps)"]


def test_frames_keep_a_reduced_picture_and_the_model_input_made_from_the_decoded_one(server, fast_probe):
    import cv2

    from daemon.video.frames import FrameMaker

    decoded = []

    def model_input(bgr):
        decoded.append(bgr.shape)
        return cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_CUBIC)

    with Camera(server.url(), make_frame=FrameMaker(160, model_input)) as cam:
        cam.wait_for(lambda c: len(c.windows) >= 1)
    frame = cam.windows[0].frames[0]
    assert frame.image.shape == (120, 160, 3) and frame.model_input.shape == (64, 64, 3)
    assert set(decoded) == {(240, 320, 3)}


def test_killed_server_then_restarted_reconnects_and_windows_resume(server, fast_probe):
    with Camera(server.url()) as cam:
        cam.wait_for(lambda c: len(c.windows) >= 2)
        server.kill()
        cam.wait_for(lambda c: c.count("lost") == 1 and c.count("error") >= 1)  # then refused while down
        restarted = time.time()
        server.start()  # same port
        cam.wait_for(lambda c: c.count("connected") == 2 and c.windows_after(restarted) >= 2)
    assert any(e.kind == "retrying" for e in cam.events)
    assert cam.events[-1].kind != "lost"


def test_frozen_server_is_detected_by_the_read_timeout(server, fast_probe):
    with Camera(server.url()) as cam:
        cam.wait_for(lambda c: len(c.windows) >= 2)
        frozen = time.monotonic()
        server.signal(signal.SIGSTOP)
        cam.wait_for(lambda c: c.count("lost") == 1)
        detected = time.monotonic() - frozen
        server.signal(signal.SIGCONT)
        thawed = time.time()
        cam.wait_for(lambda c: c.count("connected") >= 2 and c.windows_after(thawed) >= 2, timeout=30)
    lost = next(e.message for e in cam.events if e.kind == "lost")
    assert "(read timeout)" in lost
    assert detected < 10  # about 1-2 read timeouts of 1 s; FFmpeg's own default would be 30 s


def test_twenty_reconnects_leak_no_threads_or_memory(server, fast_probe):
    process = psutil.Process()
    with Camera(server.url()) as cam:
        cam.wait_for(lambda c: len(c.windows) >= 1)
        for n in range(2, 4):  # warm up: first reconnects allocate FFmpeg's lasting state
            server.signal(signal.SIGUSR1)
            cam.wait_for(lambda c, n=n: c.count("connected") == n)
        threads, native, rss = threading.active_count(), process.num_threads(), process.memory_info().rss
        for n in range(4, 24):
            server.signal(signal.SIGUSR1)  # the server drops its clients
            cam.wait_for(lambda c, n=n: c.count("connected") == n)
        last = time.time()
        cam.wait_for(lambda c: c.windows_after(last) >= 1)
        assert cam.source.connects == 23
        assert threading.active_count() == threads
        assert process.num_threads() <= native + 2  # FFmpeg decoder threads come and go with each capture
        grown = (process.memory_info().rss - rss) / 2**20
        assert grown < 10, f"RSS grew {grown:.1f} MiB over 20 reconnects"


def test_cli_prints_windows_from_a_camera(server, fast_probe, monkeypatch, capfd):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["daemon.cli.windows"])
    code = cli.main(["windows", server.url(), "--span", "1", "--frames", "4", "--limit", "2", "--json"])
    out, err = capfd.readouterr()
    assert SECRET not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 2
    assert rows[0]["source"] == "127.0.0.1" and rows[0]["reason"] == "first window"
    assert len(rows[1]["frame_ts"]) == 4 and rows[1]["change"] is not None


def test_a_camera_login_from_a_systemd_credential_opens_the_stream_and_is_never_shown(frames, tmp_path, fast_probe,
                                                                                     monkeypatch):
    from daemon.config.cameras import CameraSettings

    password = f"{SECRET}@:/% x"  # characters that must be percent-encoded in a URL
    server = RtspServer(frames, auth=f"viewer:{password}").start()
    try:
        (tmp_path / "camera_password").write_text(password + "\n")
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        camera = CameraSettings.model_validate({**FAST.model_dump(), "name": "yard", "username": "viewer",
                                                "source": f"rtsp://127.0.0.1:{server.port}/cam",
                                                "password_credential": "camera_password"})
        with Camera(camera.source_url("cameras[0]")) as cam:
            cam.wait_for(lambda c: len(c.windows) >= 1)
        assert [e.message for e in cam.events if e.kind == "connected"][0].startswith(
            f"connected to rtsp://***@127.0.0.1:{server.port}/cam")
        with Camera(camera.model_copy(update={"password_credential": None}).source_url("cameras[0]")) as refused:
            refused.wait_for(lambda c: c.count("error") >= 1)
        assert not refused.windows
    finally:
        server.stop()
