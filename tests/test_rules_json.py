"""Rules that ask for a small JSON answer: parsed from rule files, answered by constrained decoding in
the running daemon (a tiny random model with the 2048 build's limits), evaluated on the answer's fields."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import numpy as np
import pytest

from daemon.config import load_config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.rules.answers import AskJson, Condition, parse_ask_json
from daemon.rules.files import parse_file
from daemon.service.build import assemble, open_rules
from daemon.service.preflight import prompt_problems
from daemon.service.workqueue import WindowJob
from daemon.state.history import History
from daemon.types import Frame, Window

FIELDS = {"people": {"type": "integer", "minimum": 0, "maximum": 20},
          "doing": {"enum": ["walking", "standing", "other"]}}
RULES = """\
- id: crowd
  ask_json: How many people are there, and what do they do?
  fields:
    people: {type: integer, minimum: 0, maximum: 20}
    doing: {enum: [walking, standing, other]}
  when: {people: {min: 0}}
  cooldown: 0s
- id: never
  ask_json: How many people are there, and what do they do?
  fields:
    people: {type: integer, minimum: 0, maximum: 20}
    doing: {enum: [walking, standing, other]}
  when: {people: {min: 21}}
"""


def test_conditions_on_the_answers_fields():
    ask = parse_ask_json("How many?", FIELDS, {"people": {"min": 2, "max": 5}, "doing": ["standing", "other"]})
    assert ask.when == (Condition("people", min=2, max=5), Condition("doing", values=("standing", "other")))
    assert ask.holds('{"people": 3, "doing": "other"}')
    assert not ask.holds('{"people": 1, "doing": "other"}')
    assert not ask.holds('{"people": 3, "doing": "walking"}')
    assert not ask.holds('{"people": 3, "doing"')  # does not parse: no trigger
    assert json.loads(ask.schema)["required"] == ["people", "doing"]


@pytest.mark.parametrize("fields, when, message", [
    ({}, {"people": {"min": 1}}, "fields: give the answer's fields"),
    ({"people": {"type": "float"}}, {"people": 1}, "fields.people: type must be one of string, integer"),
    ({"people": {"type": "integer", "pattern": "x"}}, {"people": 1}, "fields.people: unknown key 'pattern'"),
    (FIELDS, {"cars": 1}, "when: 'cars' is not one of the fields (people, doing)"),
    (FIELDS, {"people": {"least": 1}}, "when.people: give min and/or max numbers"),
])
def test_bad_fields_and_conditions_say_what_is_wrong(fields, when, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_ask_json("How many?", fields, when)


def test_a_rule_file_with_ask_json(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES + textwrap.dedent("""\
        - id: wrong
          ask_json: Who is there?
          choices: [a, b]
          fields: {who: {enum: [yes, no]}}
          when: {who: [yes]}
        - id: typo
          ask_json: Who is there?
          fields: {who: {enum: [yes, no]}}
          when: {whom: [yes]}
        """))
    parsed = parse_file(path)
    crowd = parsed[0].rule.trigger
    assert isinstance(crowd, AskJson) and json.loads(crowd.schema)["properties"] == FIELDS
    assert [p[1] for p in parsed[2].problems] == [f"{path}:16: wrong: choices does not apply to ask_json rules "
                                                   "(fields and when do)"]
    assert [p[1] for p in parsed[3].problems] == [f"{path}:22: typo: when: 'whom' is not one of the fields (who)"]


def window(seed: int) -> Window:
    rng = np.random.default_rng(seed)
    frames = tuple(Frame("yard", seed * 8.0 + i, i, rng.integers(0, 255, (48, 64, 3), np.uint8)) for i in range(8))
    return Window("yard", seed * 8.0, seed * 8.0 + 8, frames)


class Recorder:
    def __init__(self):
        self.results, self.alerts, self.states = [], [], []

    def publish_result(self, result, message_id=None):
        self.results.append(result)

    def publish_alert(self, alert, message_id=None):
        self.alerts.append(alert)

    def publish_rule_state(self, camera, rule, on):
        self.states.append((camera, rule, on))


def test_the_daemon_answers_json_rules_and_evaluates_their_fields(tmp_path, board_model):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(RULES)
    (tmp_path / "config.yaml").write_text(
        f"model:\n  dir: {board_model}\ncameras:\n  - name: yard\n    source: {tmp_path / 'clip.mp4'}\n"
        "prompts:\n  max_new_tokens: 4\nrules: rules\nstate_dir: state\n")
    cfg = load_config(tmp_path / "config.yaml")
    engine = Engine(open_model(locate(board_model)), system="You watch a camera.", max_new_tokens=4)
    assert prompt_problems(tmp_path / "config.yaml", cfg, engine.fit) == []  # check-config: schema enforceable
    history = History(cfg.state_dir / "history.sqlite").open()
    publisher = Recorder()
    app = assemble(cfg, engine, {"yard": None}, history, publisher=publisher, ruleset=open_rules(cfg),
                   closers=[history.close])
    try:
        for seed in range(3):
            app.jobs.handle(WindowJob(window(seed), "test"), app.npus[0])
    finally:
        history.close()
    answers = [r for r in publisher.results if r.prompt_id == "crowd"]
    assert len(answers) == 3  # one prompt for the two rules, per window
    schema = json.loads(parse_ask_json("q", FIELDS, {"people": 1}).schema)
    for r in answers:
        jsonschema.validate(json.loads(r.text), schema)
    assert [a.rule for a in publisher.alerts] == ["crowd"] * 3
    assert ("yard", "never", True) not in publisher.states
