"""A real RTSP camera for tests: `RtspServer` runs tests/rtsp_server.py (GStreamer's RTSP server)
under Debian's /usr/bin/python3, where the GStreamer bindings live, on a free loopback port.

    server = RtspServer(frames_dir).start()   # READY: server.url() is rtsp://viewer:...@127.0.0.1:PORT/cam
    server.kill(); server.start()             # the camera goes away and comes back on the same port

A helper module like clips.py; `gstreamer_rtsp_missing()` says why RTSP tests must be skipped.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from pathlib import Path

GST_PYTHON = "/usr/bin/python3"
SERVER = Path(__file__).with_name("rtsp_server.py")
SECRET = "s3cr3t-pw"


def gstreamer_rtsp_missing() -> str | None:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        subprocess.run([GST_PYTHON, "-c", probe], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return (
            "GStreamer RTSP server bindings missing: "
            "apt-get install python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 (tests/run.sh does)"
        )
    return None


class RtspServer:
    def __init__(self, frames: Path, port: int = 0, fps: int = 25, auth: str | None = None) -> None:
        self.frames, self.port, self.fps, self.auth = frames, port, fps, auth  # auth: "user:password" required
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        cmd = [GST_PYTHON, str(SERVER), "--frames", str(self.frames), "--port", str(self.port), "--fps", str(self.fps)]
        cmd += ["--auth", self.auth] if self.auth else []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        assert line.startswith("READY "), f"RTSP server did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def url(self, credentials: str = f"viewer:{SECRET}@") -> str:
        return f"rtsp://{credentials}127.0.0.1:{self.port}/cam"

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGCONT)  # in case a test froze it
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
