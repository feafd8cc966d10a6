"""Rules in the running daemon, with the tiny exported model: choice scoring, thresholds,
one shared prefix per window, snapshots, and end to end through mosquitto and replay."""

import json
import time

import numpy as np
import pytest
from clips import Scene, Thing, write_scene

from daemon.cli import main
from daemon.config import load_config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.service.build import assemble, open_rules
from daemon.service.preflight import prompt_problems
from daemon.service.workqueue import WindowJob
from daemon.state.history import History
from daemon.types import Alert, Frame, Window
from daemon.video.snapshot import changed_most, jpeg

SYSTEM = "You watch a camera."


@pytest.fixture(scope="module")
def model(tiny_model):
    return open_model(locate(tiny_model), "onnxruntime")


def window(seed: int, camera="yard") -> Window:
    """8 new noisy frames (new objects: the engine's caches do not know them); a square in frame 5."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (48, 64, 3), np.uint8)
    frames = []
    for i in range(8):
        image = base.copy()
        if i == 5:
            image[10:30, 20:44] = 255
        frames.append(Frame(camera, seed * 8.0 + i, i, image))
    return Window(camera, seed * 8.0, seed * 8.0 + 8, tuple(frames))


class Recorder:
    """A publisher that remembers what it was given."""

    def __init__(self):
        self.results, self.alerts, self.states, self.summaries = [], [], [], []

    def publish_result(self, result, message_id=None):
        self.results.append(result)

    def publish_alert(self, alert: Alert, message_id=None):
        self.alerts.append(alert)

    def publish_rule_state(self, camera, rule, on):
        self.states.append((camera, rule, on))

    def publish_summary(self, summary, message_id=None):
        self.summaries.append(summary)


def make_app(tmp_path, model, rules_yaml: str, name="app"):
    folder = tmp_path / name
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "rules.yaml").write_text(rules_yaml)
    (folder / "config.yaml").write_text(
        f"model:\n  dir: {folder}\ncameras:\n  - name: yard\n    source: {folder / 'clip.mp4'}\n"
        f"prompts:\n  max_new_tokens: 4\nrules: rules\nstate_dir: state\n")
    cfg = load_config(folder / "config.yaml")
    engine = Engine(model, system=SYSTEM, max_new_tokens=4)
    assert prompt_problems(folder / "config.yaml", cfg, engine.fit) == []  # what `run` checks before it starts
    history = History(cfg.state_dir / "history.sqlite").open()
    closers = [history.close]
    publisher = Recorder()
    app = assemble(cfg, engine, {"yard": None}, history, publisher=publisher, ruleset=open_rules(cfg),
                   closers=closers)
    return app, publisher, closers


@pytest.fixture
def apps():
    closers = []

    def make(*args, **kwargs):
        app, publisher, close = make_app(*args, **kwargs)
        closers.extend(reversed(close))
        return app, publisher

    yield make
    for close in closers:
        close()


def test_thresholds_0_and_1_on_real_choice_probabilities(tmp_path, model, apps):
    app, publisher = apps(tmp_path, model, (
        "- id: always\n  ask: Is anything there?\n  threshold: 0\n  cooldown: 0s\n  snapshot: true\n"
        "- id: never\n  ask: Is anything there?\n  threshold: 1\n  cooldown: 0s\n"))
    for seed in range(3):
        app.jobs.handle(WindowJob(window(seed), "test"), app.npus[0])
    answers = [r for r in publisher.results if r.probabilities is not None]
    assert len(answers) == 3  # one shared prompt for the two rules, per window
    for r in answers:
        assert all(0.0 <= p <= 1.0 for p in r.probabilities.values())
        assert sum(r.probabilities.values()) <= 1.0 + 1e-9
    assert [a.rule for a in publisher.alerts] == ["always"] * 3
    assert publisher.alerts[0].probability == answers[0].probabilities["yes"]
    assert publisher.alerts[0].snapshot_jpeg[:2] == b"\xff\xd8"
    assert ("yard", "never", True) not in publisher.states
    stored = app.history.alerts(0, time.time() + 1)
    assert [(a.alert.rule, a.alert.window_start) for a in stored] == [("always", 0.0), ("always", 8.0), ("always", 16.0)]


def test_choice_probabilities_are_deterministic(tmp_path, model, apps):
    rules = "- id: person\n  ask: Is a person there?\n"
    runs = []
    for name in ("a", "b"):
        app, publisher = apps(tmp_path, model, rules, name)
        app.jobs.handle(WindowJob(window(7), "test"), app.npus[0])
        runs.append([r.probabilities for r in publisher.results if r.probabilities is not None])
    assert runs[0] == runs[1] and len(runs[0]) == 1


def test_the_shared_prefix_is_computed_once_per_window_however_many_rules_ask(tmp_path, model, apps):
    questions = ["Is a person there?", "Is a car there?", "Is it night?", "Is there smoke?"]
    calls = {}
    for n in (0, 1, 4):
        rules = "".join(f"- id: q{i}\n  ask: {q}\n" for i, q in enumerate(questions[:n])) or "[]\n"
        app, publisher = apps(tmp_path, model, rules, f"n{n}")
        before = dict(model.meter.calls)
        app.jobs.handle(WindowJob(window(10 + n), "test"), app.npus[0])
        calls[n] = {k: v - before.get(k, 0) for k, v in model.meter.calls.items()}
        assert len(publisher.results) == n + 1
    engine = app.engine
    full = len(engine.prompts.prefix(8)) // engine.llm.geo.prefill_len  # the prefix's whole chunks
    assert full >= 3
    for n in (0, 1, 4):
        assert calls[n][("vit", 0)] == 8
        for group in range(1, full + 1):
            assert calls[n].get(("layer", group), 0) == len(model.layers), (n, group)
    for n in (0, 1, 4):  # the prefix's partial chunk too: once, with the first prompt's suffix
        assert calls[n][("layer", full + 1)] == len(model.layers), n
    assert calls[4][("layer", 0)] > calls[1][("layer", 0)]  # each further question: only its suffix, step by step


def test_a_rule_that_cannot_be_scored_or_does_not_fit_is_refused_at_start(tmp_path, model):
    long_question = "Is there " + "a very long question " * 60 + "?"
    folder = tmp_path / "app"
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "rules.yaml").write_text("- id: same\n  ask: Which?\n  choices: [yes, Yes]\n"
                                                 f"- id: long\n  ask: {long_question}\n")
    (folder / "config.yaml").write_text(f"model:\n  dir: {folder}\ncameras:\n  - name: yard\n    source: x.mp4\n"
                                        "rules: rules\nstate_dir: state\n")
    cfg = load_config(folder / "config.yaml")
    lines = prompt_problems(folder / "config.yaml", cfg, Engine(model, system=SYSTEM).fit)
    path = folder / "rules" / "rules.yaml"
    assert lines[0] == (f"{path}:1: same: choices 'yes' and 'Yes' start with the same token ('Y'), so they cannot"
                        " be told apart from one step; reword one of them")
    assert lines[1].startswith(f"{path}:4: long: the question with the 8-frame prefix of camera yard is ")
    assert len(lines) == 2


def test_snapshot_is_the_frame_that_changed_most():
    w = window(3)
    assert changed_most(w.frames, None) is w.frames[5]
    assert changed_most(w.frames, w.frames[5]) is not w.frames[5]  # against a picture with the square
    still = Window("yard", 0, 8, tuple(Frame("yard", i, i, w.frames[0].image) for i in range(8)))
    assert changed_most(still.frames, None) is still.frames[4]
    assert jpeg(w.frames[0])[:2] == b"\xff\xd8"


# ----------------------------------------------------------------------------- end to end

RULES = """\
- id: described
  match: {regex: '\\w'}
  cooldown: 0s
  severity: critical
  snapshot: true
  message: "{camera}: {text}"
- id: smoke
  match: {any: [smoke, fire]}
- id: anything
  ask: Is anything there?
  threshold: 0
  cooldown: 0s
"""


def test_run_once_publishes_alerts_to_mosquitto_and_replay_reports_the_same(tmp_path, tiny_model, mosquitto, listen,
                                                                              capsys):
    scene = Scene(duration=24.0, things=(Thing(appear=6.0, leave=20.0, start=(20, 100), stop=(200, 100),
                                               move_from=6.0, move_to=20.0),))
    clip = write_scene(tmp_path / "yard.mp4", scene)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "home.yaml").write_text(RULES)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model:\n  dir: {tiny_model}\n  backend: onnxruntime\n  system: {SYSTEM}\n"
        f"cameras:\n  - name: yard\n    source: {clip}\nprompts:\n  max_new_tokens: 8\n"
        f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
        f"rules: {tmp_path / 'rules'}\nstate_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
    listener = listen(mosquitto, "vlmwatch/#", "homeassistant/#")

    assert main(["run", "-c", str(config), "--once"]) == 0

    with History(tmp_path / "state" / "history.sqlite") as history:
        stored = [row.alert for row in history.alerts(0, time.time() + 1)]
        analysed = history.windows(0, time.time() + 1, analysed=True)
    assert {a.rule for a in stored} == {"described", "anything"}
    assert len([a for a in stored if a.rule == "described"]) == len(analysed) >= 2

    alerts = listener.wait_for(lambda ms: [json.loads(m.payload) for m in ms if m.topic == "vlmwatch/yard/alert"]
                               if len([m for m in ms if m.topic == "vlmwatch/yard/alert"]) >= len(stored) else None,
                               what="every alert on vlmwatch/yard/alert")
    assert [(a["rule"], a["severity"], a["text"]) for a in alerts] == [(a.rule, a.severity, a.text) for a in stored]
    assert listener.last("vlmwatch/yard/snapshot").payload[:2] == b"\xff\xd8"
    assert listener.last("vlmwatch/yard/rule/described").payload == b"ON"
    assert listener.last("vlmwatch/yard/answer/anything") is not None  # rule answers are published too
    config_topic = "homeassistant/binary_sensor/vlmwatch/yard_described/config"
    assert json.loads(listener.last(config_topic).payload)["off_delay"] == 300

    capsys.readouterr()
    assert main(["replay", "-c", str(config), "--rules", str(tmp_path / "rules"), "--since", "1h", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    from daemon.rules.replay import alert_dict

    assert replayed["alerts"] == [alert_dict(a, None) for a in stored]
    assert replayed["windows"] == len(analysed) and replayed["never_asked"] == {}

    from dataclasses import replace

    from daemon.rules.files import load_rules
    from daemon.rules.replay import replay

    with History(tmp_path / "state" / "history.sqlite") as history:  # the same alerts to the last bit of ts
        report = replay(history, load_rules(tmp_path / "rules"), 0, time.time() + 1)
    assert list(report.alerts) == [replace(a, snapshot_jpeg=None) for a in stored]
