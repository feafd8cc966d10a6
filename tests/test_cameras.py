"""daemon.service.cameras, the camera watchdog, in the running daemon: a capture thread that dies
is restarted with backoff, a real RTSP camera that goes away is restarted and then counted down,
and a down camera makes the daemon unhealthy (no more systemd watchdog pings), visible in the
metrics and in the retained `<base>/<camera>/status` on a real mosquitto.

The watchdog's clock is the real monotonic clock plus a skew the test advances, so minutes of
silence take no time; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from clips import Scene, Thing, scene_frames, write_jpeg_frames
from mosquitto import wait_until
from rtsp_camera import RtspServer, gstreamer_rtsp_missing

from daemon.config import Config
from daemon.engine.engine import open_engine
from daemon.service.build import assemble, make_publisher
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.state.history import History
from daemon.types import Frame, Window
from daemon.video import open_source
from daemon.video import SourceBase

STATUS = "vlmwatch/yard/status"


class SkewedClock:
    """time.monotonic() plus a skew: advance() makes the watchdog see time pass without waiting for it."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skew

    def advance(self, seconds: float) -> None:
        self.skew += seconds


class Systemd:
    """A notify socket, as systemd gives the unit; counts WATCHDOG=1 pings."""

    def __init__(self, path: Path) -> None:
        self.path, self.pings = path, 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="test-systemd", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.pings += self.sock.recv(4096).decode().split("\n").count("WATCHDOG=1")
            except socket.timeout:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def frames_window(camera: str, t: float, seed: int) -> Window:
    rng = np.random.default_rng(seed)
    frames = tuple(Frame(camera, t + i * 0.25, seed * 4 + i, rng.integers(0, 255, (32, 32, 3), np.uint8))
                   for i in range(4))
    return Window(camera, t, t + 1.0, frames)


class DyingSource(SourceBase):
    """A live camera whose capture breaks: each of its first `failures` runs yields `before` windows,
    then raises; later runs yield a window every 0.2 s until halted."""

    live = True

    def __init__(self, name: str, failures: float, before: int = 1) -> None:
        self.name, self.failures, self.before, self.runs = name, failures, before, 0

    def windows(self, stop: threading.Event):
        self.runs += 1
        for k in range(self.before):
            yield frames_window(self.name, time.time(), self.runs * 1000 - k)
        if self.runs <= self.failures:
            raise RuntimeError("decoder crashed")
        n = 0
        while not stop.wait(0.2):
            n += 1
            yield frames_window(self.name, time.time(), self.runs * 1000 + n)


class Daemon:
    """The App as build_app wires it (real engine, history, metrics, MQTT publisher, notify socket),
    around the given source, with the watchdog on a skewed clock."""

    def __init__(self, tmp_path: Path, tiny_model: Path, mosquitto, source_for, **camera) -> None:
        self.cfg = Config.model_validate({
            "model": {"dir": str(tiny_model), "system": "You watch a camera."},
            "cameras": [{"name": "yard", "source": "rtsp://camera.invalid/x", "frames": 4, "span": 1.0,
                         "stride": 0.5, **camera}],
            "prompts": {"max_new_tokens": 2}, "state_dir": str(tmp_path / "state"),
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port}})
        self.clock = SkewedClock()
        self.systemd = Systemd(tmp_path / "notify.sock")
        self.metrics = Metrics()
        self.history = History(tmp_path / "state" / "history.sqlite").open()
        self.publisher = make_publisher(self.cfg, None, on_ask=None)
        notifier = Notifier(str(self.systemd.path), environ={"WATCHDOG_USEC": "200000"})  # a check every 0.1 s
        self.app = assemble(self.cfg, open_engine(self.cfg.model, max_new_tokens=2),
                            {"yard": source_for(self.cfg.cameras[0])}, self.history, metrics=self.metrics,
                            notifier=notifier, publisher=self.publisher, monotonic=self.clock)
        check, self.checks = self.app.watch.check, [0]

        def counted() -> None:
            check()
            self.checks[0] += 1

        self.app.watch.check = counted
        self.codes: list[int] = []
        self.thread = threading.Thread(target=lambda: self.codes.append(self.app.run()), name="daemon-under-test")

    def sample(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"camera": "yard"})  # None until first set

    def wait(self, condition, what: str, timeout: float = 30.0):
        return wait_until(condition, timeout, what)

    def after_checks(self, n: int) -> None:
        """Wait until the main loop has run n more watchdog checks."""
        target = self.checks[0] + n
        self.wait(lambda: self.checks[0] >= target, f"{n} more watchdog checks")

    def __enter__(self) -> Daemon:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.app.stop.set()
        self.thread.join(30)
        self.history.close()
        self.systemd.close()
        assert not self.thread.is_alive()


@pytest.fixture
def daemon(tmp_path, tiny_model, mosquitto):
    made = []

    def make(source_for, **camera) -> Daemon:
        made.append(Daemon(tmp_path, tiny_model, mosquitto, source_for, **camera))
        return made[-1]

    return make


def statuses(heard) -> list[dict]:
    return [json.loads(m.payload) for m in heard.on(STATUS)]


def test_a_capture_thread_that_dies_is_restarted_with_backoff_and_goes_on(daemon, mosquitto, listen, caplog):
    caplog.set_level(logging.INFO)
    heard = listen(mosquitto, STATUS)
    source = DyingSource("yard", failures=2)
    with daemon(lambda _: source, stream={"retry_min": 0.05, "retry_max": 0.2}) as d:
        d.wait(lambda: d.sample("vlmwatch_capture_restarts_total") == 2 and d.sample("vlmwatch_windows_analysed_total")
               and len(d.history.windows(0, time.time() + 1)) >= 4, "two restarts, then windows analysed")
        d.wait(lambda: statuses(heard) and statuses(heard)[-1]["state"] == "up", "status up")
        assert d.app.healthy()
    assert d.codes == [0]
    failures = [r for r in caplog.records if r.getMessage().startswith("camera yard: capture failed")]
    assert [r.getMessage() for r in failures] == ["camera yard: capture failed: RuntimeError: decoder crashed"] * 2
    assert failures[0].exc_info and not failures[1].exc_info  # one traceback, then one line per repeat
    delays = [r.getMessage() for r in caplog.records if "restarting its capture in" in r.getMessage()]
    assert [d.rsplit("(", 1)[1] for d in delays] == ["attempt 1)", "attempt 2)"]  # backing off
    seen = [s["state"] for s in statuses(heard)]
    assert "restarting" in seen and seen[-1] == "up"
    assert statuses(heard)[-1]["restarts"] == 2 and heard.last(STATUS).retain


def test_a_capture_that_keeps_dying_makes_the_daemon_unhealthy_after_down_after(daemon, mosquitto, listen):
    heard = listen(mosquitto, STATUS)
    never = DyingSource("yard", failures=float("inf"), before=0)
    with daemon(lambda _: never, stream={"retry_min": 0.05, "retry_max": 0.2}) as d:
        d.wait(lambda: (d.sample("vlmwatch_capture_restarts_total") or 0) >= 1 and d.systemd.pings > 0,
               "a restart, and pings while not yet down")
        assert d.sample("vlmwatch_camera_down") == 0
        d.clock.advance(d.cfg.health.down_after + 1)  # failing for longer than health.down_after
        d.wait(lambda: d.sample("vlmwatch_camera_down") == 1, "the camera counted down")
        assert not d.app.healthy()
        pings = d.systemd.pings
        d.after_checks(5)
        assert d.systemd.pings == pings  # systemd's watchdog will restart the daemon
        down = heard.wait_topic(STATUS)
        d.wait(lambda: statuses(heard)[-1]["state"] == "down", "status down")
        assert statuses(heard)[-1]["error"].startswith("RuntimeError: decoder crashed")
    assert down.retain


@pytest.fixture
def rtsp_server(tmp_path, monkeypatch):
    missing = gstreamer_rtsp_missing()
    if missing:
        pytest.skip(missing)
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|fpsprobesize;2")  # quicker opens
    scene = Scene(duration=2.0, fps=25.0, noise=3.0, things=(Thing(0.5, 1.5, (40, 80), (240, 100), 0.5, 1.5),))
    server = RtspServer(write_jpeg_frames(tmp_path / "frames", scene_frames(scene))).start()
    yield server
    server.stop()


def rtsp_source(server_url: str):
    def make(camera):
        return open_source(camera.name, server_url, camera)
    return make


def test_a_camera_that_goes_away_is_restarted_then_counted_down_and_comes_back(daemon, mosquitto, listen,
                                                                               rtsp_server):
    heard = listen(mosquitto, STATUS)
    fast = {"stream": {"open_timeout": 2.0, "read_timeout": 1.0, "retry_min": 0.05, "retry_max": 0.5},
            "gate": {"enabled": False}}
    with daemon(rtsp_source(rtsp_server.url()), **fast) as d:
        d.wait(lambda: statuses(heard) and statuses(heard)[-1]["state"] == "up", "the camera up")
        d.wait(lambda: d.sample("vlmwatch_windows_analysed_total"), "a window analysed")
        assert d.sample("vlmwatch_camera_last_frame_age_seconds") < 5

        rtsp_server.kill()
        connected = {"camera": "yard", "vlmwatch_source_state": "connected"}
        d.wait(lambda: d.metrics.registry.get_sample_value("vlmwatch_source_state", connected) == 0, "the stream lost")
        d.clock.advance(d.cfg.health.stall_after + 1)  # a minute without a window
        d.wait(lambda: (d.sample("vlmwatch_capture_restarts_total") or 0) >= 1, "the capture restarted")
        assert d.app.healthy()
        d.clock.advance(d.cfg.health.down_after)  # five minutes without a window
        d.wait(lambda: d.sample("vlmwatch_camera_down") == 1, "the camera counted down")
        d.wait(lambda: statuses(heard)[-1]["state"] == "down", "status down")
        assert not d.app.healthy()
        assert d.sample("vlmwatch_camera_last_frame_age_seconds") > d.cfg.health.down_after
        pings = d.systemd.pings
        d.after_checks(5)
        assert d.systemd.pings == pings

        rtsp_server.start()  # the same port: the camera is back
        d.wait(lambda: statuses(heard)[-1]["state"] == "up" and d.sample("vlmwatch_camera_down") == 0,
               "the camera up again", timeout=60)
        d.wait(lambda: d.systemd.pings > pings, "pings again")
        assert d.app.healthy()
    assert d.codes == [0]
    assert statuses(heard)[-1]["restarts"] >= 1 and statuses(heard)[-1]["last_frame_age"] < 5


def test_stall_after_must_leave_a_camera_time_for_its_first_window(tmp_path, tiny_model, capsys):
    from daemon.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  dir: {tiny_model}\ncameras:\n  - name: yard\n    source: rtsp://cam.local/s\n"
                      f"state_dir: {tmp_path}\nhealth:\n  stall_after: 20\n  down_after: 10\n")
    assert main(["check-config", "-c", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{config}:9: health.down_after: must be 0 or at least health.stall_after (20 s): a stalled camera is "
        "restarted before it counts as down",
        f"{config}:8: health.stall_after: 20 s is too short for camera yard: its first window may take "
        "stream.open_timeout + span + stride = 26 s; raise stall_after above that"]
