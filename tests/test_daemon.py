"""The daemon end to end: real sources, the tiny exported model, SQLite history, systemd notify."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daemon.cli import main
from daemon.state.history import History

ROOT = Path(__file__).parent.parent


def test_run_once_records_every_window_and_every_result(tmp_path, daemon_config, yard_clip):
    assert main(["run", "-c", str(daemon_config(yard_clip)), "--once"]) == 0

    with History(tmp_path / "state" / "history.sqlite").open() as history:
        windows = history.windows(0, time.time() + 1)
        results = history.results(0, time.time() + 1)
    assert len(windows) == 5  # 40 s in 8 s windows
    assert all(w.reason for w in windows)
    analysed = [w for w in windows if w.analysed]
    assert analysed[0].start == min(w.start for w in windows)  # the first window always goes through
    by_window = {r.window_id: r for r in results}
    assert set(by_window) == {w.id for w in analysed}
    assert all(r.result.prompt_id == "description" and r.token_count > 0 for r in by_window.values())
    assert all(r.result.timings.modelled_npu_ms > 0 for r in by_window.values())
    skipped = [w for w in windows if not w.analysed]
    assert skipped and all(w.reason.startswith("static") for w in skipped)  # 0-8 s vs 32-40 s: both empty


def test_run_refuses_a_bad_config_with_exit_2(daemon_config, capsys):
    path = daemon_config("ftp://cam/x")
    assert main(["run", "-c", str(path), "--once"]) == 2
    assert "cameras[0].source: unsupported URL scheme 'ftp'" in capsys.readouterr().err


def test_sigterm_on_a_live_source_exits_cleanly_with_systemd_notifications(tmp_path, daemon_config, yard_clip):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    cfg = daemon_config(yard_clip, realtime="true")  # paced like a live camera: 40 s
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        while "WATCHDOG=1" not in seen:
            seen += sock.recv(4096).decode().split("\n")
        assert "READY=1" in seen
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
        out, err = proc.communicate()
    sock.settimeout(1)
    while "STOPPING=1" not in seen:
        seen += sock.recv(4096).decode().split("\n")
    assert code == 0, err
    assert elapsed < 10
    assert "Traceback" not in err


def test_run_once_on_a_folder_processes_each_clip_once_across_restarts(tmp_path, daemon_config, yard_clip):
    import shutil

    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(yard_clip, folder / "a.mp4")
    shutil.copy(yard_clip, folder / "b.mp4")
    cfg = daemon_config(folder, folder="{poll: 0.1, settle: 0.3}")
    assert main(["run", "-c", str(cfg), "--once"]) == 0
    assert main(["run", "-c", str(cfg), "--once"]) == 0  # restart: nothing new to do

    with History(tmp_path / "state" / "history.sqlite").open() as history:
        windows = history.windows(0, time.time() + 1)
    assert len(windows) == 10  # two 40 s clips, 8 s windows, each clip once


def test_run_once_twice_on_a_file_records_each_window_once_and_a_changed_file_again(tmp_path, daemon_config,
                                                                                    yard_clip):
    import shutil

    clip = shutil.copy(yard_clip, tmp_path / "yard.mp4")
    cfg = daemon_config(clip)
    assert main(["run", "-c", str(cfg), "--once"]) == 0
    assert main(["run", "-c", str(cfg), "--once"]) == 0  # a restart: the file was done
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        first = history.windows(0, time.time() + 1)
    assert len(first) == 5 and len({(w.start, w.end) for w in first}) == 5

    os.utime(clip, (time.time(), time.time() + 60))  # rewritten since: another file, analysed afresh
    assert main(["run", "-c", str(cfg), "--once"]) == 0
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        assert len(history.windows(0, time.time() + 1)) == 10


def test_a_file_cut_short_by_a_restart_resumes_without_recording_a_window_twice(tmp_path, daemon_config,
                                                                                yard_clip):
    from daemon.service.build import build_app
    from daemon.service.preflight import check_all

    path = daemon_config(yard_clip, span=4)  # ten 4 s windows
    cfg, problems = check_all(path)
    assert problems == []
    app, closers = build_app(cfg, once=True)
    record, recorded = app.history.record_window, []

    def stop_after_three(window, analysed, reason, now):  # as a SIGTERM would, in the middle of the file
        recorded.append(window)
        if len(recorded) == 3:
            app.stop.set()
        return record(window, analysed, reason, now)

    app.history.record_window = stop_after_three
    try:
        assert app.run(once=True) == 0
    finally:
        for close in reversed(closers):
            close()
    assert 3 <= len(recorded) < 10

    assert main(["run", "-c", str(path), "--once"]) == 0
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        windows = history.windows(0, time.time() + 1)
    done = [(w.start, w.end) for w in windows if not w.reason.startswith("cancelled")]  # cancelled: redone
    assert len(done) == len(set(done)) == 10


def test_run_with_the_http_port_taken_exits_2_before_mqtt_or_any_camera_starts(tmp_path, daemon_config, yard_clip,
                                                                              mosquitto, capsys):
    path = daemon_config(yard_clip)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path.write_text(path.read_text() + f"http:\n  enabled: true\n  port: {port}\n"
                        f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n")
        assert main(["run", "-c", str(path), "--once"]) == 2
    assert f"cannot serve the HTTP API on 127.0.0.1:{port}: " in capsys.readouterr().err
    assert not (tmp_path / "state" / "outbox.sqlite").exists()  # the publisher never started
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        assert history.windows(0, time.time() + 1) == []  # nor did any camera


def test_a_publisher_that_cannot_start_stops_the_http_server_started_before_it(tmp_path, daemon_config, yard_clip,
                                                                              mosquitto):
    import pytest
    from mosquitto import free_port

    from daemon.config import load_config
    from daemon.errors import ConfigError
    from daemon.service.build import build_app

    port = free_port()
    path = daemon_config(yard_clip)
    path.write_text(path.read_text() + f"http:\n  enabled: true\n  port: {port}\n"
                    f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n  username: watcher\n"
                    f"  password_file: {tmp_path / 'missing'}\n")
    app, closers = build_app(load_config(path))
    try:
        with pytest.raises(ConfigError, match="missing"):
            app.start()
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # the server that had started let its port go
    finally:
        for close in reversed(closers):
            close()
