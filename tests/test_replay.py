"""`vlmwatch replay`: stored results through rules, without a model."""

import json
import time
from datetime import datetime, timezone

import pytest

from daemon.cli import main
from daemon.state.history import History
from daemon.types import Result, Window

QUESTION = "Is a person at the door?"
NOW = time.time()
T0 = float(int(NOW) - 3600)  # an hour ago, whole seconds


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@pytest.fixture
def setup(tmp_path):
    """A config (UTC), a history of four analysed door windows and one old one, and a rule folder."""
    state = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  dir: {tmp_path / 'model'}\ncameras:\n  - name: door\n    source: {tmp_path / 'x.mp4'}\n"
                      f"  - name: yard\n    source: {tmp_path / 'y.mp4'}\n"
                      f"state_dir: {state}\ntimezone: UTC\n")
    with History(state / "history.sqlite") as history:
        old = history.record_window(Window("door", T0 - 86400, T0 - 86392, ()), True, "first window", T0 - 86400)
        history.record_result(old, Result("door", "description", "Describe.", T0 - 86400, T0 - 86392, T0 - 86390,
                                          "A car in the driveway."))
        windows = [  # (text, p(yes) or None when the question was not asked)
            ("A car drives into the driveway.", 0.9), ("The car is parked.", None), ("An empty porch.", 0.2),
            ("A car leaves.", 0.95)]
        for i, (text, p) in enumerate(windows):
            start = T0 + 8 * i
            window_id = history.record_window(Window("door", start, start + 8, ()), True, "change", start + 9)
            if p is not None:
                history.record_result(window_id, Result("door", "person", QUESTION, start, start + 8, start + 9, "yes",
                                                        choice="yes", probabilities={"yes": p, "no": 1 - p}))
            history.record_result(window_id, Result("door", "description", "Describe.", start, start + 8,
                                                    start + 10, text))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "home.yaml").write_text(
        "- id: car\n  match: {any: [car]}\n  cooldown: 0s\n  severity: info\n"
        f"- id: person\n  cameras: [door]\n  ask: {QUESTION}\n  cooldown: 1h\n")
    return config, rules


def test_replay_prints_the_alerts_that_would_fire_and_where_questions_were_never_asked(setup, capsys):
    config, rules = setup
    assert main(["replay", "-c", str(config), "--rules", str(rules), "--since", "2h"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:4] == [
        f"{iso(T0 + 9)}  door  person  warning  door: person (90%)",
        f"{iso(T0 + 10)}  door  car  info  door: car: A car drives into the driveway.",
        f"{iso(T0 + 18)}  door  car  info  door: car: The car is parked.",
        f"{iso(T0 + 34)}  door  car  info  door: car: A car leaves.",  # person at +33: still in its 1 h cooldown
    ]
    assert lines[4].startswith("4 alert(s) from 4 analysed window(s) between ")
    assert lines[5] == ("person: no stored answer to its question in 1 of 4 window(s); the daemon stores answers"
                        " only to the questions its rules asked at the time")


def test_replay_json_and_the_period(setup, capsys):
    config, rules = setup
    assert main(["replay", "-c", str(config), "--rules", str(rules), "--since", "2d", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["windows"] == 5
    assert [(a["rule"], a["ts"]) for a in report["alerts"]][:2] == [("car", iso(T0 - 86390)), ("person", iso(T0 + 9))]
    assert report["alerts"][1] == {"ts": iso(T0 + 9), "camera": "door", "rule": "person", "severity": "warning",
                                   "text": "door: person (90%)", "window": {"start": iso(T0), "end": iso(T0 + 8)},
                                   "probability": 0.9}
    assert report["never_asked"] == {"person": 2}


@pytest.mark.parametrize("since, seconds, windows", [("1w", 604800, 5), ("1h30m", 5400, 4), ("1.5h", 5400, 4),
                                                    ("90m", 5400, 4), ("1d2h", 93600, 5)])
def test_since_takes_a_duration_as_rule_files_and_the_config_do(setup, capsys, since, seconds, windows):
    """One grammar (daemon.times.parse_duration): what --since takes, a rule's cooldown and a job's period take."""
    from daemon.config.summaries import parse_period
    from daemon.rules.files import load_rules

    config, rules = setup
    assert main(["replay", "-c", str(config), "--rules", str(rules), "--since", since, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    start, end = (datetime.fromisoformat(report[k]).timestamp() for k in ("since", "until"))
    assert report["windows"] == windows and abs(end - start - seconds) <= 1  # printed to the second
    (rules / "home.yaml").write_text(f"- id: car\n  match: {{any: [car]}}\n  cooldown: {since}\n")
    assert load_rules(rules).rules[0].cooldown == parse_period(since) == seconds


def test_replay_with_the_question_changed_reports_every_window_unasked(setup, capsys):
    config, rules = setup
    (rules / "home.yaml").write_text("- id: person\n  ask: Is someone at the door?\n")
    assert main(["replay", "-c", str(config), "--rules", str(rules), "--since", "2h"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "person: no stored answer to its question in 4 of 4 window(s)")


def test_replay_refuses_bad_rules_a_bad_since_and_a_missing_history(setup, tmp_path, capsys):
    config, rules = setup
    assert main(["replay", "-c", str(config), "--rules", str(rules), "--since", "yesterday"]) == 2
    assert capsys.readouterr().err.strip() == ("vlmwatch: error: --since 'yesterday': write a duration ago"
                                               " (30m, 24h, 7d) or an ISO date/time (2026-11-26 or 2026-11-26T08:00)")
    (rules / "bad.yaml").write_text("- id: x\n  match: {any: [x]}\n  cameras: [garage]\n  cooldown: soon\n")
    assert main(["replay", "-c", str(config), "--rules", str(rules)]) == 2  # the rule itself is still checked
    assert capsys.readouterr().err.strip().startswith(f"vlmwatch: error: {rules / 'bad.yaml'}:4: x: cooldown:")
    # Rules tried with --rules may name a camera the config lacks (issue 22: the shipped examples name
    # driveway): replayed, and said to have nothing to replay.
    (rules / "bad.yaml").write_text("- id: x\n  match: {any: [x]}\n  cameras: [garage]\n")
    assert main(["replay", "-c", str(config), "--rules", str(rules)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "x: watches garage, which this config does not have; nothing to replay for it")
    (rules / "bad.yaml").unlink()
    empty = tmp_path / "other.yaml"
    empty.write_text(config.read_text().replace(str(tmp_path / "state"), str(tmp_path / "nothing")))
    assert main(["replay", "-c", str(empty), "--rules", str(rules)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"vlmwatch: error: no history at {tmp_path / 'nothing' / 'history.sqlite'}: the daemon has not run with"
        f" this state_dir yet (vlmwatch run -c {empty})")
