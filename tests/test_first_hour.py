"""What a new user meets in the first hour (issue 22), each run as the user ran it, checking the
exact text they read: a broker the demo cannot reach, a pipe closed by `head`, ..."""

from __future__ import annotations

import os
import re
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


def test_after_a_run_the_log_shows_the_gate_skipping_and_replay_takes_the_shipped_rules(daemon_config, yard_clip,
                                                                                         caplog, capsys):
    """The yard's last window (32-40 s) shows the room as the window before left it: skipped, and
    said once at INFO. The shipped rules name a camera this config lacks (driveway): replay runs
    them and says which saw no window, instead of refusing."""
    import logging

    config = daemon_config(yard_clip)
    with caplog.at_level(logging.INFO):
        assert main(["run", "-c", str(config), "--once"]) == 0
    skips = [r for r in caplog.records if "window skipped" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in skips] == [
        ("INFO", "camera yard: window skipped, static: largest region 0.000 % < 0.05 %; further skips are logged at"
                 " debug level until a window is analysed")]
    capsys.readouterr()
    assert main(["replay", "-c", str(config), "--rules", str(ROOT / "rules")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "car_in_driveway: watches driveway, which this config does not have; nothing to replay for it" in out
    assert out[0].startswith("0 alert(s) from 4 analysed window(s) between ")


def test_summarize_says_what_it_does_before_the_model_runs(daemon_config, yard_clip, capsys):
    config = daemon_config(yard_clip)
    assert main(["run", "-c", str(config), "--once"]) == 0
    capsys.readouterr()
    assert main(["summarize", "-c", str(config), "--since", "1h", "--max-new-tokens", "16"]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert re.fullmatch(r"summarize: \d+ timeline line\(s\) from \d{4}-\d\d-\d\d \d\d:\d\d to \d\d:\d\d \S+;"
                        r" 1 model call\(s\) at most", lines[0]), lines
    assert re.fullmatch(r"summarize: done: 1 model call\(s\) in \d+\.\d s", lines[-1]), lines
    assert out.strip()


def test_log_lines_carry_the_time_except_in_the_journal(tmp_path):
    """Outside journald a log line starts with the time; under systemd (JOURNAL_STREAM names our
    stderr) the journal stamps it, so the line does not."""
    clip = write_scene(tmp_path / "events.mp4", EVENT_SCENE)
    plain = subprocess.run([sys.executable, "-m", "daemon", "windows", "--limit", "1", str(clip)], cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
    lines = plain.stderr.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO daemon\.", line) for line in lines), lines
    with open(tmp_path / "journal", "w") as journal:
        st = os.fstat(journal.fileno())
        subprocess.run([sys.executable, "-m", "daemon", "windows", "--limit", "1", str(clip)], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"},
                       stdout=subprocess.DEVNULL, stderr=journal, timeout=60)
    journal = (tmp_path / "journal").read_text().splitlines()
    assert journal and all(line.startswith("INFO daemon.") for line in journal), journal


def test_check_config_says_did_you_mean_where_a_key_belongs_and_what_a_section_is(tmp_path, capsys):
    clip = tmp_path / "porch.mp4"
    clip.write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text(f"model: /opt/models/internvl\ncameras:\n  - name: porch\n    source: {clip}\n"
                      f"    gate:\n      treshold: 0.01\n    dir: /opt/models\nstate_dir: /proc/nope\n")
    assert main(["check-config", "-c", str(config)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{config}:1: model: must be a section with its keys indented below it, not a single value, e.g. model: then"
        " dir: ... on the next lines (got '/opt/models/internvl')",
        f"{config}:6: cameras[0].gate.treshold: unknown key; did you mean 'threshold'?",
        f"{config}:7: cameras[0].dir: unknown key here; 'dir' belongs elsewhere: model.dir (indent it under that"
        " section)",
    ]


def test_check_config_refuses_a_state_dir_run_could_not_create(tmp_path, daemon_config, yard_clip, capsys):
    """/proc is a folder root may 'write' by os.access, yet nothing can be created in it: check-config
    tries, as run would, instead of passing what run refuses after loading the model."""
    config = daemon_config(yard_clip)
    config.write_text(config.read_text().replace(f"state_dir: {tmp_path / 'state'}", "state_dir: /proc/nope"))
    assert main(["check-config", "-c", str(config)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{config}:10: state_dir: /proc/nope cannot be created: /proc is not writable for this"
                           " user (")
    assert line.endswith("); point state_dir at a writable folder (the service's is /var/lib/vlmwatch, made by"
                         " systemd's StateDirectory=)")


def retained_configs(broker, listen) -> set[str]:
    """Discovery configs the broker retains now: a fresh subscriber gets them before any live message
    published after its subscription (one connection delivers in order)."""
    import paho.mqtt.publish as publish

    fresh = listen(broker, "homeassistant/#")
    publish.single("homeassistant/marker", b"live", hostname=broker.host, port=broker.port)
    fresh.wait_topic("homeassistant/marker")
    return {m.topic for m in fresh.messages if m.retain and m.payload and m.topic.endswith("/config")}


def test_demo_says_how_to_remove_its_device_and_remove_device_clears_it(tmp_path, mosquitto, listen, capsys):
    from daemon.cli.demo_device import demo_config_topics

    where = f"{mosquitto.host}:{mosquitto.port}"
    assert main(["demo", "--home", str(tmp_path), "--once", "--mqtt", where]) == 0
    out = capsys.readouterr().out
    assert (f'demo: the device "Front door" stays in Home Assistant (its discovery configs are retained); remove it'
            f" with: vlmwatch demo --remove-device --mqtt {where}\n") in out
    before = retained_configs(mosquitto, listen)
    assert before == set(demo_config_topics()) and any("/front_door_" in t for t in before), before

    assert main(["demo", "--remove-device", "--mqtt", where]) == 0
    assert capsys.readouterr().out == (
        f"demo: cleared {len(before)} retained discovery configs on {where}; Home Assistant removes the demo's"
        ' entities and the device "Front door" (a vlmwatch daemon on this broker with the default base topic'
        " announces its own again when it reconnects or Home Assistant restarts)\n")
    assert retained_configs(mosquitto, listen) == set()
