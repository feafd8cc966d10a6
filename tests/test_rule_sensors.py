"""Home Assistant's rule binary sensors tell the truth, on a real mosquitto: OFF (not `unknown`) as
soon as the daemon connects, OFF by the daemon itself once a rule stops holding (through windows the
gate skips), and never ON again after a restart without a new trigger."""

import json
import threading
import time

import numpy as np
import pytest

from daemon.config import load_config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.service.build import assemble, make_publisher, open_rules
from daemon.state.history import History
from daemon.types import Frame, Window
from daemon.video import SourceBase

RULES = """\
- id: always
  ask: Is anything there?
  threshold: 0
  cooldown: 0s
  off_delay: {off_delay}
- id: never
  ask: Is anything there?
  threshold: 1
"""
ALWAYS, NEVER, STATUS = "vlmwatch/yard/rule/always", "vlmwatch/yard/rule/never", "vlmwatch/status"


@pytest.fixture(scope="module")
def model(tiny_model):
    return open_model(locate(tiny_model), "onnxruntime")


class StaticCamera(SourceBase):
    """A camera looking at a still scene: once `release` is set, the same picture every 0.1 s, so the
    gate analyses the first window and skips the rest as static."""

    def __init__(self):
        self.release = threading.Event()
        self.yielded = 0
        image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
        self.images = [image.copy() for _ in range(8)]

    def windows(self, stop):
        while not stop.is_set() and not self.release.wait(0.05):
            pass
        while not stop.wait(0.1):
            now = time.time()
            frames = tuple(Frame("yard", now - 8 + i, i, image) for i, image in enumerate(self.images))
            self.yielded += 1
            yield Window("yard", now - 8, now, frames)


class Daemon:
    """The App with the real publisher, running in a thread (what `vlmwatch run` does, minus loading)."""

    def __init__(self, tmp_path, model, mosquitto, off_delay: str, clock=time.time):
        folder = tmp_path / "daemon"
        (folder / "rules").mkdir(parents=True, exist_ok=True)
        (folder / "rules" / "rules.yaml").write_text(RULES.format(off_delay=off_delay))
        (folder / "config.yaml").write_text(
            f"model:\n  dir: {folder}\ncameras:\n  - name: yard\n    source: unused.mp4\n"
            f"prompts:\n  max_new_tokens: 2\nrules: rules\nstate_dir: state\nmetrics:\n  enabled: false\n"
            f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n  client_id: sensors\n")
        cfg = load_config(folder / "config.yaml")
        self.camera = StaticCamera()
        history = History(cfg.state_dir / "history.sqlite").open()
        self.closers = [history.close]
        ruleset = open_rules(cfg)
        publisher = make_publisher(cfg, ruleset, on_ask=None, rule_states=lambda: self.app.rule_states())
        self.app = assemble(cfg, Engine(model, system="You watch a camera.", max_new_tokens=2), {"yard": self.camera},
                            history, publisher=publisher, ruleset=ruleset, closers=self.closers, clock=clock)
        self.thread = threading.Thread(target=self.app.run, name="test-daemon", daemon=True)
        self.thread.start()

    def stop(self):
        self.app.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        for close in reversed(self.closers):
            close()


def since(listener, start: int, topic: str) -> list[bytes]:
    return [m.payload for m in listener.messages[start:] if m.topic == topic]


def stopped(listener) -> int:
    """Where the next run's messages start: after the stopped daemon's `offline` reached the listener."""
    listener.wait_for(lambda ms: [m.payload for m in ms if m.topic == STATUS][-1:] == [b"offline"], what="offline")
    return len(listener.messages)


def test_sensors_are_off_on_connect_and_turn_off_through_gated_windows(tmp_path, model, mosquitto, listen):
    heard = listen(mosquitto, "vlmwatch/#")
    daemon = Daemon(tmp_path, model, mosquitto, off_delay="1s")
    try:
        # Connected, no window analysed yet: both sensors are OFF, retained, and sent before `online`.
        heard.wait_for(lambda ms: [m.payload for m in ms if m.topic == STATUS] == [b"online"], what="online")
        first = {m.topic: (i, m) for i, m in reversed(list(enumerate(heard.messages)))}
        assert first[ALWAYS][1].payload == first[NEVER][1].payload == b"OFF"
        assert first[ALWAYS][1].retain and first[NEVER][1].retain
        assert first[ALWAYS][0] < first[STATUS][0] and first[NEVER][0] < first[STATUS][0]

        daemon.camera.release.set()  # one analysed window (it triggers), then static windows the gate skips
        heard.wait_topic(ALWAYS, b"ON", timeout=30)
        heard.wait_for(lambda ms: [m.payload for m in ms if m.topic == ALWAYS][-1] == b"OFF", timeout=30,
                       what="the daemon's own OFF after off_delay")
        windows = daemon.app.history.windows(0, time.time() + 1)
        assert sum(w.analysed for w in windows) == 1
        assert any(not w.analysed and w.reason.startswith("static") for w in windows)
        assert [m.payload for m in heard.on(ALWAYS)] == [b"OFF", b"ON", b"OFF"]
        assert [m.payload for m in heard.on(NEVER)] == [b"OFF"]
    finally:
        daemon.stop()

    # A restart with nothing new to see: OFF again on connect, and never ON.
    restart = stopped(heard)
    daemon = Daemon(tmp_path, model, mosquitto, off_delay="1s")
    try:
        heard.wait_for(lambda ms: b"online" in since(heard, restart, STATUS), what="online after the restart")
        report = heard.wait_for(lambda ms: since(heard, restart, "vlmwatch/npu"), what="the main loop's first NPU report")
        assert since(heard, restart, ALWAYS) == [b"OFF"] and since(heard, restart, NEVER) == [b"OFF"]
        npu = json.loads(report[0])
        assert set(npu) == {"load", "queue", "ts"} and 0.0 <= npu["load"] <= 1.0 and npu["queue"] == 0
        assert heard.last("vlmwatch/npu").retain
    finally:
        daemon.stop()


def test_a_retained_on_is_replaced_by_off_when_the_daemon_comes_back_after_the_hold(tmp_path, model, mosquitto,
                                                                                   listen):
    heard = listen(mosquitto, "vlmwatch/#")
    daemon = Daemon(tmp_path, model, mosquitto, off_delay="1h")
    try:
        daemon.camera.release.set()
        heard.wait_topic(ALWAYS, b"ON", timeout=30)
    finally:
        daemon.stop()  # stopped while ON: the broker keeps the retained ON
    assert heard.last(ALWAYS).payload == b"ON"

    # Back within the hold: the rule still holds, so ON is the truth.
    restart = stopped(heard)
    daemon = Daemon(tmp_path, model, mosquitto, off_delay="1h", clock=lambda: time.time() + 60)
    try:
        heard.wait_for(lambda ms: since(heard, restart, "vlmwatch/npu"), what="the first NPU report")
        assert since(heard, restart, ALWAYS) == [b"ON"]
    finally:
        daemon.stop()

    # Back two hours later, nothing new seen: OFF replaces the retained ON before `online`, and no ON follows.
    restart = stopped(heard)
    daemon = Daemon(tmp_path, model, mosquitto, off_delay="1h", clock=lambda: time.time() + 7200)
    try:
        heard.wait_for(lambda ms: since(heard, restart, "vlmwatch/npu"), what="the first NPU report")
        after = heard.messages[restart:]
        assert set(since(heard, restart, ALWAYS)) == {b"OFF"}  # on connect, and again as the main loop expires it
        assert [m.topic for m in after].index(ALWAYS) < [(m.topic, m.payload) for m in after].index((STATUS, b"online"))
    finally:
        daemon.stop()
    fresh = listen(mosquitto, ALWAYS)  # Home Assistant restarting now gets the retained OFF
    assert fresh.wait_topic(ALWAYS).payload == b"OFF"
