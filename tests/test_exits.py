"""Exit codes, one rule (daemon/errors.py): 2 when a person must fix something (systemd does not
restart: RestartPreventExitStatus=2), 1 when it may pass. The real daemon (`vlmwatch run`, the
tiny model, a generated clip, real SQLite state files and a real mosquitto) in each case.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from histories import damage
from mosquitto import Mosquitto

from daemon.cli import main
from daemon.engine.engine import Engine
from daemon.errors import StorageError
from daemon.state.history import History


def with_mqtt(path: Path, broker) -> Path:
    path.write_text(path.read_text() + f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n")
    return path


def command_in(message: str) -> str:
    return message.split("new, empty one: ", 1)[1].split(" (then", 1)[0]


def test_a_damaged_history_is_named_with_the_fix_by_check_config_and_run_and_exits_2(tmp_path, daemon_config,
                                                                                      yard_clip, capsys):
    cfg = daemon_config(yard_clip)
    assert main(["run", "-c", str(cfg), "--once"]) == 0
    history = tmp_path / "state" / "history.sqlite"
    damage(history)
    damaged = history.read_bytes()
    capsys.readouterr()

    for command in (["check-config", "-c", str(cfg)], ["run", "-c", str(cfg), "--once"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{cfg}:" in err and f": state_dir: the state file {history}: " in err
        assert "The file is damaged (or not a vlmwatch database)" in err
        assert f"mv {history} {history}.damaged" in err
        assert "fatal engine error" not in err and "Traceback" not in err
    assert history.read_bytes() == damaged  # neither command wrote to it

    subprocess.run(command_in(err), shell=True, check=True)  # the fix the message gives
    assert main(["run", "-c", str(cfg), "--once"]) == 0


def test_a_damaged_outbox_exits_2_like_a_damaged_history(tmp_path, daemon_config, yard_clip, mosquitto, capsys):
    cfg = with_mqtt(daemon_config(yard_clip), mosquitto)
    assert main(["run", "-c", str(cfg), "--once"]) == 0
    outbox = tmp_path / "state" / "outbox.sqlite"
    damage(outbox)
    capsys.readouterr()
    assert main(["run", "-c", str(cfg), "--once"]) == 2
    err = capsys.readouterr().err
    assert f"state_dir: the state file {outbox}: " in err and f"mv {outbox} {outbox}.damaged" in err


def test_a_damaged_record_of_processed_clips_exits_2(tmp_path, daemon_config, yard_clip, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copy(yard_clip, folder / "a.mp4")
    cfg = daemon_config(folder, folder="{poll: 0.1, settle: 0.2}")
    assert main(["run", "-c", str(cfg), "--once"]) == 0
    processed = tmp_path / "state" / "processed.sqlite"
    damage(processed)
    capsys.readouterr()
    assert main(["check-config", "-c", str(cfg)]) == 2
    assert f"mv {processed} {processed}.damaged" in capsys.readouterr().err


class FullDisk(History):
    """The history on a disk that is full as the daemon starts: SQLite's page limit on the daemon's own
    connection, reached with small filler windows, so the daemon's first window fails with SQLITE_FULL."""

    def open(self):
        super().open()
        with self._lock:
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            self._db.execute(f"PRAGMA max_page_count = {pages + 4}")
        try:
            while True:
                self._insert("windows", {"camera": "filler", "start": 0, "end": 0, "change": None, "analysed": 0,
                                         "reason": "", "frame_ts": "[]", "recorded": time.time()})
        except StorageError:
            return self


def test_a_full_disk_while_running_is_a_storage_failure_exit_1_not_an_engine_error(tmp_path, daemon_config,
                                                                                    yard_clip, monkeypatch,
                                                                                    caplog, capsys):
    monkeypatch.setattr("daemon.service.build.History", FullDisk)
    caplog.set_level(logging.INFO)
    assert main(["run", "-c", str(daemon_config(yard_clip)), "--once"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    history = tmp_path / "state" / "history.sqlite"
    assert errors[0].startswith("stopping: cannot record a row in windows in the history database "
                                f"{history}: database or disk is full. The disk holding {history.parent} is full")
    assert errors[-1].startswith("stopped: cannot record a row in windows")
    assert not any("engine" in e for e in errors)
    assert "Traceback" not in capsys.readouterr().err


def test_a_broken_engine_is_a_fatal_engine_error_exit_1(daemon_config, yard_clip, monkeypatch, caplog):
    def npu_gone(self, *args, **kwargs):
        raise RuntimeError("NPU device lost")

    monkeypatch.setattr(Engine, "prefill", npu_gone)
    caplog.set_level(logging.INFO)
    assert main(["run", "-c", str(daemon_config(yard_clip)), "--once"]) == 1
    assert "stopping after a fatal engine error: NPU device lost" in caplog.text


def test_a_broker_that_refuses_our_credentials_exits_2(tmp_path, daemon_config, yard_clip, monkeypatch, capsys):
    broker = Mosquitto(tmp_path / "broker", users={"vlmwatch": "the-right-one"})
    broker.start()
    try:
        cfg = daemon_config(yard_clip, realtime="true")  # runs until something stops it
        cfg.write_text(cfg.read_text() + f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
                       "  username: vlmwatch\n  password_env: WRONG_PASSWORD\n  refused_attempts: 1\n")
        monkeypatch.setenv("WRONG_PASSWORD", "a-wrong-one")
        assert main(["run", "-c", str(cfg)]) == 2
    finally:
        broker.kill()
    assert "a-wrong-one" not in capsys.readouterr().err
