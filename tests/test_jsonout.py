"""`--json` keeps stdout clean when native code (the vendor runtime) writes to file descriptor 1."""

import ctypes
import json
import os

from daemon.cli import main
from daemon.cli.jsonout import json_stdout


def native_noise(text: str) -> None:
    """What pyaxengine's C library does: write to fd 1 directly, and through C's buffered stdout."""
    os.write(1, f"[INFO] {text} (write)\n".encode())
    ctypes.CDLL(None).printf(f"[INFO] {text} (printf)\n".encode())


def test_native_writes_go_to_stderr_and_only_the_json_to_stdout(capfd):
    with json_stdout() as out:
        native_noise("loading")
        print(json.dumps({"ok": True}), file=out)
    native_noise("after")  # fd 1 is stdout again
    ctypes.CDLL(None).fflush(None)
    captured = capfd.readouterr()
    lines = captured.out.splitlines()
    assert json.loads(lines[0]) == {"ok": True}
    assert lines[1:] == ["[INFO] after (write)", "[INFO] after (printf)"]
    assert "[INFO] loading (write)" in captured.err and "[INFO] loading (printf)" in captured.err


def test_describe_json_parses_although_the_runtime_prints_on_stdout(tiny_model, capfd, monkeypatch):
    from daemon.engine import sessions

    original = sessions.OnnxSession.run

    def noisy_run(self, feeds, group=0):
        native_noise(f"run group {group}")
        return original(self, feeds, group)

    monkeypatch.setattr(sessions.OnnxSession, "run", noisy_run)
    assert main(["describe", "--model", str(tiny_model), "-q", "Hello?", "--max-new-tokens", "3", "--json"]) == 0
    captured = capfd.readouterr()
    answer = json.loads(captured.out)  # the whole of stdout is one JSON object
    assert answer["text"] is not None and "[INFO] run group" in captured.err
