"""The daemon publishing to a real mosquitto: descriptions, status, Home Assistant discovery, ask/reply."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from daemon.cli import main

ROOT = Path(__file__).parent.parent


def with_mqtt(path: Path, broker) -> Path:
    path.write_text(path.read_text() + f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n")
    return path


def test_run_once_publishes_descriptions_discovery_and_status(daemon_config, yard_clip, mosquitto, listen):
    heard = listen(mosquitto, "vlmwatch/#", "homeassistant/#")
    cfg = with_mqtt(daemon_config(yard_clip), mosquitto)
    assert main(["run", "-c", str(cfg), "--once"]) == 0

    description = heard.wait_topic("vlmwatch/yard/description")
    body = json.loads(description.payload)
    assert description.retain and body["camera"] == "yard" and body["text"]
    assert set(body["window"]) == {"start", "end"} and body["id"]
    assert [m.payload for m in heard.on("vlmwatch/status")][-2:] == [b"online", b"offline"]
    configs = [m for m in heard.messages if m.topic.startswith("homeassistant/") and m.topic.endswith("/config")]
    assert any(json.loads(m.payload).get("state_topic") == "vlmwatch/yard/description" for m in configs if m.payload)


def test_live_daemon_answers_ask_on_the_latest_window(daemon_config, yard_clip, mosquitto, listen):
    heard = listen(mosquitto, "vlmwatch/#")
    cfg = with_mqtt(daemon_config(yard_clip, realtime="true"), mosquitto)
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(cfg)], cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        heard.wait_topic("vlmwatch/yard/description", timeout=60)
        asker = heard.client
        asker.publish("vlmwatch/yard/ask", json.dumps({"question": "Is it raining?", "choices": ["yes", "no"],
                                                      "id": "q1"}), qos=1)
        asker.publish("vlmwatch/yard/ask", b"\xff\xfe not utf-8", qos=1)
        asker.publish("vlmwatch/nowhere/ask", b"Anyone?", qos=1)

        def replies(messages):
            got = [json.loads(m.payload) for m in messages if m.topic.endswith("/reply")]
            return got if len(got) >= 3 else None

        got = heard.wait_for(replies, timeout=60, what="three replies")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        err = proc.stderr.read()
    answer = next(r for r in got if r.get("id") == "q1")
    assert answer["ok"] is True and set(answer["probabilities"]) == {"yes", "no"}
    errors = [r for r in got if r.get("id") != "q1"]
    assert len(errors) == 2 and all(r["ok"] is False and r["error"] for r in errors)
    assert code == 0, err
