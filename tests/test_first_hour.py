"""What a new user meets in the first hour (issue 22), each run as the user ran it, checking the
exact text they read: a broker the demo cannot reach, a pipe closed by `head`, ..."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clips import EVENT_SCENE, write_scene

from daemon.cli import main

ROOT = Path(__file__).resolve().parent.parent


def vlmwatch(*argv: str, **kwargs) -> subprocess.Popen:
    """`python -m daemon ARGV` as a user's shell starts it."""
    return subprocess.Popen([sys.executable, "-m", "daemon", *argv], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def free_closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def test_demo_with_an_unreachable_broker_says_so_in_one_line_and_exits_2(tmp_path, capsys):
    port = free_closed_port()
    assert main(["demo", "--home", str(tmp_path), "--once", "--mqtt", f"127.0.0.1:{port}"]) == 2
    out, err = capsys.readouterr()
    assert err == (f"vlmwatch: error: --mqtt 127.0.0.1:{port}: cannot reach an MQTT broker there (Connection refused)."
                   " Check the host and port (Home Assistant's Mosquitto add-on listens on 1883) and that the broker"
                   " runs, or leave out --mqtt: the demo then starts its own.\n")
    assert "Traceback" not in out + err


def test_windows_json_into_head_stops_quietly(tmp_path):
    clip = write_scene(tmp_path / "events.mp4", EVENT_SCENE)
    proc = vlmwatch("windows", "--json", "--span", "1", str(clip))
    first = proc.stdout.readline()  # what `| head -1` reads, then it exits
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141, err  # 128 + SIGPIPE, as cat or grep
    assert first.startswith('{"source": "events"')
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
