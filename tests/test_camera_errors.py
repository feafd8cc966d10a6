"""Camera errors that tell apart what went wrong (issue 22, item 2), against the real GStreamer
RTSP server with a login, and a closed port: as `vlmwatch windows` and `vlmwatch check-cameras`
print them, with the password nowhere in the output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from clips import Scene, scene_frames, write_jpeg_frames
from mosquitto import free_port
from rtsp_camera import SECRET, RtspServer, gstreamer_rtsp_missing

from daemon.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(gstreamer_rtsp_missing() is not None, reason=str(gstreamer_rtsp_missing()))


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return write_jpeg_frames(tmp_path_factory.mktemp("rtsp") / "frames", scene_frames(Scene(duration=2.0, fps=10.0)))


@pytest.fixture(scope="module")
def camera(frames):
    """A camera that requires the login viewer / SECRET."""
    server = RtspServer(frames, fps=10, auth=f"viewer:{SECRET}").start()
    yield server
    server.stop()


def windows(*argv: str, env: dict | None = None) -> tuple[int, str]:
    """`vlmwatch windows ... --limit 1 --timeout 3` as a user runs it: exit code and the last stderr line."""
    proc = subprocess.run([sys.executable, "-m", "daemon", "windows", *argv, "--limit", "1", "--timeout", "3"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=90)
    assert SECRET not in proc.stdout + proc.stderr
    return proc.returncode, proc.stderr.strip().splitlines()[-1]


def gave_up(url: str, why: str) -> str:
    return (re.escape(f"vlmwatch: error: 127.0.0.1: no window in 3 s, gave up (--timeout 0 keeps retrying, as the"
                      f" daemon does); the last attempt: cannot open {url} after ") + r"\d+\.\d" + re.escape(f" s: {why}"))


def test_a_wrong_password_reads_unauthorized(camera):
    code, last = windows(camera.url("viewer:wrong@"))
    assert code == 1
    assert re.fullmatch(gave_up(camera.url("***@"), "unauthorized: the camera refused the login of user"
                                " 'viewer' (RTSP 401 Unauthorized); check the username and the password"), last), last


def test_missing_credentials_read_a_login_is_required(camera):
    code, last = windows(camera.url(""))
    assert code == 1
    assert re.fullmatch(gave_up(camera.url(""), "unauthorized: the camera requires a login (RTSP 401 Unauthorized);"
                                " set the camera's username and password_env, password_file or password_credential"),
                        last), last


def test_a_closed_port_reads_unreachable():
    port = free_port()
    code, last = windows(f"rtsp://127.0.0.1:{port}/cam")
    assert code == 1
    assert re.fullmatch(gave_up(f"rtsp://127.0.0.1:{port}/cam", f"unreachable: connection refused by 127.0.0.1:{port}:"
                                " nothing listens on that port; check the address and port, and that the camera is"
                                " on"), last), last


def test_windows_takes_the_password_from_the_environment(camera, capsys):
    proc = subprocess.run([sys.executable, "-m", "daemon", "windows", camera.url(""), "--username", "viewer",
                           "--password-env", "CAM_PASSWORD", "--limit", "1", "--timeout", "20"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "CAM_PASSWORD": SECRET},
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"127\.0\.0\.1 +\+0\.0s\.\.\+8\.0s +change +- +ANALYSE +first window\n", proc.stdout)
    assert SECRET not in proc.stdout + proc.stderr


def test_windows_says_when_the_password_variable_is_not_set(camera, capsys):
    assert main(["windows", camera.url(""), "--username", "viewer", "--password-env", "NOT_SET_ANYWHERE"]) == 2
    assert capsys.readouterr().err == ("vlmwatch: error: --password-env NOT_SET_ANYWHERE: that environment variable"
                                       " is not set; set it first, e.g. read -rs NOT_SET_ANYWHERE && export"
                                       " NOT_SET_ANYWHERE\n")


def test_check_cameras_says_per_camera_what_is_wrong(camera, frames, tmp_path, monkeypatch, capsys):
    plain = RtspServer(frames, fps=10).start()  # no login: a wrong path is 404
    closed = free_port()
    monkeypatch.setenv("CAM_PASSWORD", SECRET)
    monkeypatch.setenv("WRONG_PASSWORD", "wrong")
    config = tmp_path / "config.yaml"
    config.write_text(f"""\
model:
  dir: {tmp_path}
cameras:
  - name: porch
    source: {camera.url("")}
    username: viewer
    password_env: CAM_PASSWORD
  - name: garage
    source: {camera.url("")}
    username: viewer
    password_env: WRONG_PASSWORD
  - name: shed
    source: {camera.url("")}
  - name: gate
    source: rtsp://127.0.0.1:{closed}/cam
  - name: yard
    source: {plain.url("", "/nope")}
state_dir: {tmp_path / "state"}
""")
    try:
        code = main(["check-cameras", "-c", str(config), "--timeout", "5"])
    finally:
        plain.stop()
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"porch: OK: 320x240, 10 fps ({camera.url('')})",
        f"garage: unauthorized: the camera refused the login of user 'viewer' (RTSP 401 Unauthorized); check the"
        f" username and the password ({camera.url('')})",
        f"shed: unauthorized: the camera requires a login (RTSP 401 Unauthorized); set the camera's username and"
        f" password_env, password_file or password_credential ({camera.url('')})",
        f"gate: unreachable: connection refused by 127.0.0.1:{closed}: nothing listens on that port; check the address"
        f" and port, and that the camera is on (rtsp://127.0.0.1:{closed}/cam)",
        f"yard: not a video stream: no stream at /nope (RTSP 404 Not Found); check the path (the camera's manual or"
        f" web page lists it) ({plain.url('', '/nope')})",
    ]
    assert code == 2


def test_a_camera_returns_within_seconds_of_an_outage_however_long_its_backoff_grew(frames):
    """The stream stops (the RTSP server is killed: its port closes), the backoff grows to at least
    10 s, the server comes back on the same port: the camera reconnects when the port accepts
    again (checked every second), long before the backoff would have ended."""
    import threading
    import time

    from daemon.config.cameras import SourceSettings
    from daemon.video.stream import StreamSource

    server = RtspServer(frames, fps=10).start()
    settings = SourceSettings.model_validate({"span": 1.0, "frames": 2, "stream": {
        "open_timeout": 2.0, "read_timeout": 1.0, "retry_min": 20.0, "retry_max": 60.0}})
    events, changed, stop = [], threading.Condition(), threading.Event()

    def on_event(event) -> None:
        with changed:
            events.append((time.monotonic(), event))
            changed.notify_all()

    def wait_for(predicate, timeout: float):
        with changed:
            found = changed.wait_for(lambda: next((e for e in events if predicate(e[1])), None), timeout)
        assert found, [(e.kind, e.message) for _, e in events]
        return found

    source = StreamSource("yard", server.url(""), settings, on_event=on_event)
    consumer = threading.Thread(target=lambda: [None for _ in source.windows(stop)], name="test-consumer")
    consumer.start()
    try:
        wait_for(lambda e: e.kind == "connected", 30)
        server.kill()
        retry = wait_for(lambda e: e.kind == "retrying" and "retrying in" in e.message, 30)[1]
        backoff = float(re.search(r"retrying in (\d+\.\d) s", retry.message).group(1))
        assert backoff >= 10.0  # 20 s with jitter: what a 30 s outage grows the default backoff to
        server.start()  # the same port
        back = time.monotonic()
        with changed:
            again = changed.wait_for(lambda: sum(e.kind == "connected" for _, e in events) == 2, backoff)
        assert again, [(e.kind, e.message) for _, e in events]
        reconnected = [t for t, e in events if e.kind == "connected"][-1]
        assert reconnected - back < backoff / 2, (reconnected - back, backoff)
        assert any(e.message.endswith("accepts connections again; reconnecting now") for _, e in events)
    finally:
        stop.set()
        consumer.join(30)
        server.stop()


def test_a_substream_takes_the_cameras_login_and_check_config_probe_tries_both(frames, tmp_path, tiny_model,
                                                                              monkeypatch, capsys):
    """The login lives in username/password_env once, for the main stream and the substream (it used
    to apply to the main stream only, so the README's substream example put user:pw@ in the config)."""
    server = RtspServer(frames, fps=10, auth=f"viewer:{SECRET}", mounts={"/sub": frames}).start()
    monkeypatch.setenv("CAM_PASSWORD", SECRET)
    config = tmp_path / "config.yaml"
    config.write_text(f"""\
model:
  dir: {tiny_model}
  system: You watch a camera.
cameras:
  - name: porch
    frames: 2
    source: {server.url("")}
    detect_source: {server.url("", "/sub")}
    username: viewer
    password_env: CAM_PASSWORD
state_dir: {tmp_path / "state"}
metrics:
  enabled: false
""")
    try:
        code = main(["check-config", "-c", str(config), "--probe"])
    finally:
        server.stop()
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{config}: OK (1 camera(s), model {tiny_model})",
        f"porch: OK: 320x240, 10 fps ({server.url('')})",
        f"porch (detect_source): OK: 320x240, 10 fps ({server.url('', '/sub')})",
    ], err
    assert code == 0


def test_detect_source_gets_the_login_and_refuses_a_second_password():
    from pydantic import ValidationError

    from daemon.config.cameras import CameraSettings

    cam = CameraSettings(name="porch", source="rtsp://cam/main", detect_source="rtsp://cam/sub", username="viewer",
                         password_file=None)
    assert cam.detect_url("cameras[0]") == "rtsp://viewer@cam/sub"
    with pytest.raises(ValidationError, match="detect_source holds a password too"):
        CameraSettings(name="porch", source="rtsp://cam/main", detect_source="rtsp://u:pw@cam/sub", username="viewer",
                       password_env="CAM_PASSWORD")
