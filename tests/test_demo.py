"""The README's first command: the demo daemon on its embedded defaults, without torch."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from daemon.cli import main
from daemon.cli.demo import ClipFeeder
from daemon.state.history import History

ROOT = Path(__file__).resolve().parent.parent
# The demo's installation (pip install -e '.[onnx,demo]') has neither: the demo must not import them.
BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"{name} is blocked: the demo must not need it", name=name)
sys.meta_path.insert(0, Block())
from daemon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_demo_once_runs_the_daemon_and_prints_what_it_publishes(tmp_path, capsys):
    assert main(["demo", "--home", str(tmp_path), "--once"]) == 0
    out = capsys.readouterr().out
    assert "MQTT broker (amqtt, in-process)" in out
    assert "mqtt  vlmwatch/status: b'online'" in out
    assert "mosquitto_sub -h 127.0.0.1" in out and "sensor.front_door_description" in out
    published = [line for line in out.splitlines() if line.startswith("mqtt  vlmwatch/front_door/description")]
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        analysed = [w for w in history.windows(0, time.time() + 1) if w.analysed]
    assert len(published) == len(analysed) >= 2  # the box entering and leaving are analysed
    assert "meaningless" in out

    assert main(["demo", "--home", str(tmp_path), "--once"]) == 0  # again: the clip is replayed, not resumed at its end
    again = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("mqtt  vlmwatch/front_door/description")]
    assert len(again) == len(published)

def test_demo_plays_until_ctrl_c_without_torch(tmp_path):
    """Real time: the first window ends 8 s into the clip; Ctrl-C then ends the demo cleanly."""
    proc = subprocess.Popen([sys.executable, "-c", BLOCK_TORCH, "demo", "--home", str(tmp_path)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("mqtt  vlmwatch/front_door/description") for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        assert proc.poll() is None  # still playing: it does not stop at the first clip's end
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert "Ctrl-C stops" in out and "blocked" not in out
    assert "mqtt  vlmwatch/status (retained): b'offline'" in out or "mqtt  vlmwatch/status: b'offline'" in out
    assert [p.name for p in (tmp_path / "front_door").glob("loop-*.mp4")]


def test_clip_feeder_adds_a_copy_per_period_and_keeps_the_last_three(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not really a video")
    folder = tmp_path / "cam"
    folder.mkdir()
    (folder / "loop-1.mp4").write_bytes(b"from an earlier run")
    feeder = ClipFeeder(clip, folder, period=0.05)
    feeder.start()
    try:
        deadline = time.monotonic() + 10
        while len(list(folder.glob("loop-*.mp4"))) < 3 or (folder / "loop-1.mp4").exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first = sorted(folder.glob("loop-*.mp4"))[0]
        while first.exists():  # older copies go
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        feeder.stop()
    copies = list(folder.glob("loop-*.mp4"))
    assert len(copies) == 3 and all(p.read_bytes() == clip.read_bytes() for p in copies)
    assert not list(folder.glob(".loop-*"))
