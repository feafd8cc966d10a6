"""daemon.service.jobs: one path for engine errors, and shutdown in the middle of an analysis,
against the tiny model, real SQLite history and a real mosquitto."""

import json
import time

import numpy as np
import pytest

from daemon.config import Config
from daemon.engine.engine import open_engine
from daemon.mqtt.messages import AskRequest
from daemon.service.build import assemble, make_publisher, open_rules
from daemon.service.workqueue import AskJob, WindowJob
from daemon.state.history import History
from daemon.types import Frame, Window

RULE = """\
- id: person
  ask: Is there a person?
  choices: [yes, no]
  when: yes
"""


def window(seed: int = 0) -> Window:
    rng = np.random.default_rng(seed)
    frames = tuple(Frame("yard", 10.0 + i, i, rng.integers(0, 255, (32, 32, 3), np.uint8)) for i in range(2))
    return Window("yard", 10.0, 18.0, frames)


@pytest.fixture
def daemon_parts(tmp_path, tiny_model, mosquitto):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "yard.yaml").write_text(RULE)
    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model), "system": "You watch a camera."},
        "cameras": [{"name": "yard", "source": "unused.mp4", "frames": 2}],
        "prompts": {"max_new_tokens": 4}, "rules": str(rules), "state_dir": str(tmp_path),
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port}})
    engine = open_engine(cfg.model, max_new_tokens=4)
    ruleset = open_rules(cfg)
    publisher = make_publisher(cfg, ruleset, on_ask=None)
    closers = []
    with History(tmp_path / "history.sqlite").open() as history:
        app = assemble(cfg, engine, {"yard": None}, history, publisher=publisher, ruleset=ruleset, closers=closers)
        publisher.start()
        assert publisher.wait_connected(10)
        yield app
        publisher.stop(5)
        for close in closers:
            close()


def stop_at(app, call: str, nth: int) -> None:
    """Set the app's stop event as the engine makes its nth `call` (prefill or decode) of the LLM."""
    llm, calls = app.engine.llm, []
    original = getattr(llm, call)

    def hooked(*args, **kwargs):
        calls.append(call)
        if len(calls) == nth:
            app.stop.set()
        return original(*args, **kwargs)

    setattr(llm, call, hooked)


@pytest.mark.parametrize("call, nth, where", [
    ("prefill", 1, "the window's prefix"),
    ("prefill", 2, "the rule's question"),
    ("decode", 1, "the description"),
])
def test_stopping_during_analysis_publishes_nothing_empty_and_stores_no_cancelled_result(
        daemon_parts, mosquitto, listen, call, nth, where):
    app = daemon_parts
    heard = listen(mosquitto, "vlmwatch/#")
    stop_at(app, call, nth)
    app.jobs.handle(WindowJob(window(), "test"), app.npus[0])  # returns: cancellation is not an error
    app.publisher.stop(5)
    heard.wait_topic("vlmwatch/status", b"offline")

    descriptions = heard.on("vlmwatch/yard/description")
    assert descriptions == []  # the description is never complete when the stop comes
    answers = [json.loads(m.payload) for m in heard.on("vlmwatch/yard/answer/person")]
    assert all(a["choice"] in ("yes", "no") for a in answers)
    assert len(answers) == (1 if where == "the description" else 0)
    results = app.history.results(0, time.time() + 1)
    assert [r.result.prompt_id for r in results] == (["person"] if where == "the description" else [])
    assert all(r.result.stop_reason in ("stop", "length", "choice") for r in results)
    [recorded] = app.history.windows(0, time.time() + 1)
    assert not recorded.analysed  # cut short: a file's next run analyses it again, never twice as analysed
    assert recorded.reason == ("cancelled: shutting down" if where == "the window's prefix"
                               else "cancelled: shutting down during its answers")


def test_a_question_the_model_cannot_take_is_the_askers_error_and_the_daemon_goes_on(daemon_parts, mosquitto,
                                                                                      listen, caplog):
    caplog.set_level("INFO")
    app = daemon_parts
    heard = listen(mosquitto, "vlmwatch/#")
    app.jobs.handle(AskJob("yard", AskRequest("yard", "q0", "Anyone there?")), app.npus[0])  # no analysed window yet
    app.jobs.handle(WindowJob(window(), "test"), app.npus[0])
    app.jobs.handle(AskJob("yard", AskRequest("yard", "q1", " ".join(["why"] * 2000))), app.npus[0])
    app.jobs.handle(AskJob("yard", AskRequest("yard", "q2", "Is it day?")), app.npus[0])

    def replies(messages):
        got = {r["id"]: r for r in (json.loads(m.payload) for m in messages if m.topic == "vlmwatch/yard/reply")}
        return got if len(got) == 3 else None

    got = heard.wait_for(replies, what="three replies")
    assert got["q0"]["ok"] is False and "no analysed window yet" in got["q0"]["error"]
    assert got["q1"]["ok"] is False and "tokens but the model's largest prefill is" in got["q1"]["error"]
    assert got["q2"]["ok"] is True and got["q2"]["text"]
    assert app.npus[0].worker.error is None
    # The asker's refusals are told to the asker; the log keeps them at INFO, not as the daemon's errors.
    refusals = [r for r in caplog.records if r.getMessage().startswith(("camera yard: question 'q0'",
                                                                        "camera yard: question 'q1'"))]
    assert [r.levelname for r in refusals] == ["INFO", "INFO"], [r.getMessage() for r in refusals]


def test_an_unknown_job_is_an_error_not_ignored(daemon_parts):
    with pytest.raises(TypeError, match="unknown job"):
        daemon_parts.jobs.handle(object(), daemon_parts.npus[0])
