"""Rules: pure evaluation (debounce, cooldown, active hours, thresholds, cameras, restarts),
message templates, regex safety, and every check-rules message."""

import textwrap
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.cli import main
from daemon.config import load_config
from daemon.rules.files import check_rules, load_rules
from daemon.rules.hours import TimeRange, parse_days
from daemon.rules.match import Match
from daemon.rules.model import Ask, Rule, RuleSet, RuleStatus, StateChange, evaluate, expire, phases, sensor_states
from daemon.rules.template import parse_template
from daemon.rules.state import RuleStateStore
from daemon.state.history import History
from daemon.types import Result

TZ = ZoneInfo("Europe/Berlin")
QUESTION = "Is a person at the door?"


def at(text: str) -> float:
    """'2026-11-27 23:00' (a Friday) in Berlin -> POSIX seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def answer(p_yes: float, camera="door", ts=0.0, question=QUESTION) -> Result:
    return Result(camera, "person", question, ts - 8, ts, ts, "yes" if p_yes >= 0.5 else "no",
                  choice="yes" if p_yes >= 0.5 else "no", probabilities={"yes": p_yes, "no": 1 - p_yes})


def description(text: str, camera="door", ts=0.0) -> Result:
    return Result(camera, "description", "Describe.", ts - 8, ts, ts, text)


def ask_rule(**options) -> Rule:
    trigger = Ask(QUESTION, threshold=options.pop("threshold", 0.5))
    return Rule("person", trigger, **{"cooldown": 0.0, **options})


def run(rules, windows, camera="door", state=None):
    """Evaluate a sequence of (now, results); return [(now, Evaluation)] and the last state."""
    state = dict(state or {})
    out = []
    for now, results in windows:
        ev = evaluate(rules, camera, results, state, now)
        state = ev.state
        out.append((now, ev))
    return out, state


def fired(evaluations) -> list[float]:
    return [now for now, ev in evaluations for _ in ev.alerts]


# ----------------------------------------------------------------------------- evaluation


def test_debounce_needs_consecutive_windows_and_a_miss_resets_the_count():
    rules = RuleSet((ask_rule(for_windows=3),), TZ)
    ps = [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.9]
    evs, state = run(rules, [(t * 8.0, [answer(p, ts=t * 8.0)]) for t, p in enumerate(ps)])
    assert fired(evs) == [40.0, 48.0]  # third consecutive hit (cooldown 0: every holding window fires)
    assert [c for _, ev in evs for c in ev.changes] == [StateChange("door", "person", True)]
    assert state[("person", "door")] == RuleStatus(count=4, last_fired=48.0, on=True, last_hit=48.0)


def test_cooldown_suppresses_repeats_but_the_sensor_stays_on():
    rules = RuleSet((ask_rule(cooldown=300.0),), TZ)
    times = [0.0, 60.0, 299.0, 300.0, 308.0]
    evs, _ = run(rules, [(t, [answer(0.9, ts=t)]) for t in times])
    assert fired(evs) == [0.0, 300.0]  # exactly `cooldown` later fires again
    assert all(ev.state[("person", "door")].on for _, ev in evs)


def test_sensor_turns_off_after_a_window_without_the_trigger_and_on_again_without_an_alert_in_cooldown():
    rules = RuleSet((ask_rule(cooldown=600.0),), TZ)
    evs, _ = run(rules, [(0.0, [answer(0.9)]), (8.0, [answer(0.2)]), (16.0, [answer(0.3)]), (24.0, [answer(0.9)])])
    assert [list(ev.changes) for _, ev in evs] == [
        [StateChange("door", "person", True)], [StateChange("door", "person", False)], [],
        [StateChange("door", "person", True)]]
    assert fired(evs) == [0.0]


def test_a_window_without_the_rules_result_leaves_its_state_alone():
    rules = RuleSet((ask_rule(for_windows=2),), TZ)
    evs, _ = run(rules, [(0.0, [answer(0.9)]), (8.0, [description("a cat")]), (16.0, [answer(0.9)])])
    assert fired(evs) == [16.0]
    assert evs[1][1].changed == {} and evs[1][1].changes == ()


@pytest.mark.parametrize("p, threshold, fires", [
    (0.5, 0.5, True), (0.4999999, 0.5, False), (0.0, 0.0, True), (0.9999999, 1.0, False), (1.0, 1.0, True)])
def test_threshold_edges(p, threshold, fires):
    ev = evaluate(RuleSet((ask_rule(threshold=threshold),)), "door", [answer(p)], {}, 0.0)
    assert bool(ev.alerts) is fires


def test_active_hours_across_midnight_belong_to_the_day_they_start():
    night = TimeRange(22 * 60, 6 * 60, parse_days(["fri"]))
    rules = RuleSet((ask_rule(active=(night,)),), TZ)
    cases = {"2026-11-27 21:59": False, "2026-11-27 22:00": True, "2026-11-27 23:30": True,  # Friday
             "2026-11-28 05:59": True, "2026-11-28 06:00": False,  # Saturday morning: Friday's night
             "2026-11-28 23:00": False, "2026-11-27 03:00": False}  # Saturday night; Friday morning is Thursday's
    for when, active in cases.items():
        ev = evaluate(rules, "door", [answer(0.9, ts=at(when))], {}, at(when))
        assert bool(ev.alerts) is active, when


def test_active_weekdays_and_several_ranges():
    rules = load_rules_from("""\
        - id: person
          ask: Is a person at the door?
          cooldown: 0s
          active: [{time: "08:00-17:00", days: [mon-fri]}, {days: sun}]
        """)
    cases = {"2026-11-30 12:00": True, "2026-11-30 17:00": False, "2026-11-28 12:00": False,  # Mon, Mon, Sat
             "2026-11-29 03:00": True}  # Sunday, all day
    for when, active in cases.items():
        assert bool(evaluate(rules, "door", [answer(0.9)], {}, at(when)).alerts) is active, when


def test_outside_active_hours_the_sensor_turns_off():
    day = TimeRange(8 * 60, 17 * 60)
    rules = RuleSet((ask_rule(active=(day,)),), TZ)
    evs, _ = run(rules, [(at("2026-11-30 16:59"), [answer(0.9)]), (at("2026-11-30 17:00"), [answer(0.9)])])
    assert [list(ev.changes) for _, ev in evs] == [[StateChange("door", "person", True)],
                                                   [StateChange("door", "person", False)]]


def test_each_camera_has_its_own_state_and_cameras_outside_the_rule_are_ignored():
    rules = RuleSet((ask_rule(cameras=("door", "yard"), cooldown=300.0, for_windows=2),), TZ)
    state: dict = {}
    alerts = []
    for now, camera in [(0, "door"), (1, "yard"), (8, "door"), (9, "garage"), (10, "garage"), (17, "yard")]:
        ev = evaluate(rules, camera, [answer(0.9, camera=camera, ts=now)], state, float(now))
        state = ev.state
        alerts += [(a.camera, a.ts) for a in ev.alerts]
    assert alerts == [("door", 8.0), ("yard", 17.0)]
    assert ("person", "garage") not in state


def test_a_sensor_holds_off_delay_after_the_last_trigger_then_turns_off_without_losing_its_count():
    rules = RuleSet((ask_rule(for_windows=2, cooldown=600.0, off_delay=60.0),), TZ)
    evs, state = run(rules, [(0.0, [answer(0.9)]), (8.0, [answer(0.9)])])
    assert state[("person", "door")].on and fired(evs) == [8.0]
    assert expire(rules, state, 67.9).changes == ()  # 59.9 s after the last trigger: still holds
    gone = expire(rules, state, 68.0)  # windows skipped by the gate in between change nothing
    assert gone.changes == (StateChange("door", "person", False),) and gone.alerts == ()
    assert gone.changed == {("person", "door"): RuleStatus(2, 8.0, False, 8.0)}
    assert expire(rules, gone.state, 500.0).changed == {}  # already off
    back = evaluate(rules, "door", [answer(0.9)], gone.state, 100.0)  # a new trigger: holds at once, in cooldown
    assert back.changes == (StateChange("door", "person", True),) and back.alerts == ()


def test_sensor_states_cover_every_rule_on_every_camera_it_watches():
    rules = RuleSet((ask_rule(off_delay=60.0), Rule("car", Match.build(any=["car"]), cameras=("drive",))), TZ)
    _, state = run(rules, [(0.0, [answer(0.9)])])
    assert sensor_states(rules, state, ["door", "drive"], 10.0) == {
        ("person", "door"): True, ("person", "drive"): False, ("car", "drive"): False}
    assert sensor_states(rules, state, ["door"], 60.0) == {("person", "door"): False}  # its hold ran out


def test_rule_state_from_before_last_hit_takes_its_update_time(tmp_path):
    import sqlite3

    path = tmp_path / "history.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);"
                     "INSERT INTO schema_version VALUES ('rules', 1);"
                     "CREATE TABLE rule_state (rule TEXT NOT NULL, camera TEXT NOT NULL, count INTEGER NOT NULL,"
                     " last_fired REAL, is_on INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (rule, camera));"
                     "INSERT INTO rule_state VALUES ('person', 'door', 3, 5.0, 1, 40.0);"
                     "INSERT INTO rule_state VALUES ('car', 'door', 0, NULL, 0, 50.0);")
    db.commit()
    db.close()
    with RuleStateStore(path) as store:
        assert store.load() == {("person", "door"): RuleStatus(3, 5.0, True, 40.0),
                                ("car", "door"): RuleStatus(0, None, False, None)}


def test_state_survives_a_restart(tmp_path):
    path = tmp_path / "history.sqlite"
    rules = RuleSet((ask_rule(for_windows=2, cooldown=600.0),), TZ)
    with History(path), RuleStateStore(path) as store:  # the same file as the history
        ev = evaluate(rules, "door", [answer(0.9)], store.load(), 0.0)
        store.save(ev.changed, 0.0)
    with RuleStateStore(path) as store:
        ev = evaluate(rules, "door", [answer(0.9)], store.load(), 8.0)  # second consecutive window
        assert [a.ts for a in ev.alerts] == [8.0]
        store.save(ev.changed, 8.0)
    with RuleStateStore(path) as store:
        state = store.load()
        assert state == {("person", "door"): RuleStatus(2, 8.0, True, 8.0)}
        assert evaluate(rules, "door", [answer(0.9)], state, 16.0).alerts == ()  # still in cooldown


def test_alert_fields_and_default_messages():
    ask = evaluate(RuleSet((ask_rule(severity="critical"),)), "door", [answer(0.875, ts=100.0)], {}, 101.0).alerts[0]
    assert (ask.camera, ask.rule, ask.severity, ask.ts, ask.window_start, ask.window_end, ask.probability) == \
        ("door", "person", "critical", 101.0, 92.0, 100.0, 0.875)
    assert ask.text == "door: person (88%)"
    match = Rule("smoke", Match.build(any=["smoke"]), cooldown=0)
    alert = evaluate(RuleSet((match,)), "door", [description("Smoke rises.")], {}, 0.0).alerts[0]
    assert alert.text == "door: smoke: Smoke rises." and alert.probability is None


def test_message_template_fills_exactly_the_four_fields():
    template = parse_template("{camera}/{rule}: {text} at {probability} {{literal}}")
    rule = Rule("person", Ask(QUESTION), message=template)
    alert = evaluate(RuleSet((rule,)), "door", [answer(0.5)], {}, 0.0).alerts[0]
    assert alert.text == "door/person: Is a person at the door? at 50% {literal}"


@pytest.mark.parametrize("template, shown", [
    ("{camera.__class__}", "{camera.__class__}"), ("{text[0]}", "{text[0]}"), ("{rule!r}", "{rule!r}"),
    ("{probability:.2f}", "{probability:.2f}"), ("{secret}", "{secret}"), ("{}", "{}")])
def test_message_template_rejects_anything_but_the_fields(template, shown):
    with pytest.raises(ValueError) as exc:
        parse_template(template)
    assert str(exc.value) == (f"{shown} is not allowed; use only {{camera}}, {{rule}}, {{text}}, {{probability}}"
                              " (no attributes, indexes, conversions or formats)")


def test_keywords_are_whole_words_case_insensitive_and_all_must_hold():
    m = Match.build(any=["car", "truck"], all=["driveway"])
    assert m.matches("A CAR stops in the driveway.")
    assert not m.matches("A carpet lies in the driveway.")  # not the word car
    assert not m.matches("A car drives past.")  # no driveway
    assert Match.build(any=["delivery box"]).matches("a Delivery\nbox is left")


def test_regex_is_case_insensitive_and_a_runaway_search_ends_as_no_match():
    assert Match.build(pattern=r"\b(smoke|fire)\b").matches("FIRE in the kitchen")
    slow = Match.build(pattern="(a|aa)+b")  # overlapping alternatives: exponential in `re`
    t0 = time.monotonic()
    assert not slow.matches("a" * 60)
    assert time.monotonic() - t0 < 1.0


def test_phases_put_rule_answers_before_the_description():
    d, a = description("x"), answer(0.9)
    assert phases([d, a]) == [[a], [d]]


def test_shared_questions_become_one_prompt():
    rules = load_rules_from("""\
        - id: person
          ask: Is a person at the door?
        - id: person_night
          ask: Is a person at the door?
          threshold: 0.8
        - id: parcel
          cameras: [door]
          ask: Is a parcel on the ground?
        - id: smoke
          match: {any: [smoke]}
        """)
    assert rules.questions("door") == [("person", QUESTION, ("yes", "no")),
                                       ("parcel", "Is a parcel on the ground?", ("yes", "no"))]
    assert rules.questions("yard") == [("person", QUESTION, ("yes", "no"))]


# ----------------------------------------------------------------------------- rule files


def load_rules_from(text, tmp=None):
    import tempfile
    from pathlib import Path

    directory = Path(tmp or tempfile.mkdtemp())
    (directory / "rules.yaml").write_text(textwrap.dedent(text))
    return load_rules(directory, timezone=TZ)


def test_yaml_words_stay_words_and_defaults_apply(tmp_path):
    rules = load_rules_from("""\
        - id: gate
          ask: Is the gate open?
          choices: [no, yes]
          when: yes
          active: 22:00-06:00
        """, tmp_path)
    rule = rules.rules[0]
    assert rule.trigger == Ask("Is the gate open?", ("no", "yes"), "yes", 0.5)  # not YAML 1.1 booleans
    assert rule.active == (TimeRange(1320, 360),)  # not the sexagesimal number 79200
    assert (rule.for_windows, rule.cooldown, rule.severity, rule.snapshot, rule.off_delay, rule.cameras) == \
        (1, 300.0, "warning", False, 300.0, None)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d2h", 93600),
                                           ("1.5h", 5400), ("1w", 604800), ("0s", 0)])
def test_durations_are_written_as_everywhere_else(tmp_path, text, seconds):
    """Rule files read durations with daemon.times.parse_duration, as the commands and the config do."""
    rules = load_rules_from(f"- id: door\n  ask: Is the door open?\n  cooldown: {text}\n  off_delay: {text}\n",
                            tmp_path)
    assert (rules.rules[0].cooldown, rules.rules[0].off_delay) == (seconds, seconds)


def check(tmp_path, text, capsys, name="door.yaml"):
    directory = tmp_path / "rules"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text))
    code = main(["check-rules", str(directory)])
    return code, capsys.readouterr().err.strip().splitlines(), directory / name


def test_check_rules_passes_the_shipped_examples(capsys):
    from pathlib import Path

    shipped = Path(__file__).parent.parent / "rules"
    assert main(["check-rules", str(shipped)]) == 0
    cameras = [c.name for c in load_config(shipped.parent / "config.yaml").cameras]  # the shipped config's cameras
    assert cameras == ["front_door", "driveway"]
    rules, problems = check_rules(shipped, cameras=cameras)
    assert problems == []
    assert {"person_at_door_night", "package_left", "car_in_driveway", "smoke_or_fire"} <= {r.id for r in rules.rules}
    watched = {r.id: [c for c in cameras if r.applies_to(c)] for r in rules.rules}
    assert watched["car_in_driveway"] == ["driveway"] and watched["person_at_door_night"] == ["front_door"]
    assert watched["smoke_or_fire"] == cameras  # no cameras: every camera
    assert capsys.readouterr().out.startswith(f"{shipped}: OK (")


def test_duplicate_id_across_files(tmp_path, capsys):
    check(tmp_path, "- id: door\n  ask: Is the door open?\n", capsys, "a.yaml")
    code, err, path = check(tmp_path, "- id: smoke\n  match: {any: [smoke]}\n- id: door\n  match: {any: [door]}\n",
                            capsys, "b.yaml")
    assert code == 2
    assert err == [f"{path}:3: door: duplicate id: also defined at {tmp_path / 'rules' / 'a.yaml'}:1"]


def test_unknown_option_suggests_the_nearest(tmp_path, capsys):
    code, err, path = check(tmp_path, """\
        - id: door
          ask: Is the door open?
          cooldwn: 5m
          colour: red
        """, capsys)
    assert code == 2
    assert err == [f"{path}:3: door: unknown option 'cooldwn'; did you mean 'cooldown'?",
                   f"{path}:4: door: unknown option 'colour'; rule options are: id, cameras, ask, choices, when,"
                   " threshold, match, ask_json, fields, for, cooldown, active, severity, snapshot, message, off_delay,"
                   " zones, on"]


def test_bad_duration(tmp_path, capsys):
    code, err, path = check(tmp_path, "- id: door\n  ask: Is the door open?\n  cooldown: 5 min\n", capsys)
    assert code == 2
    assert err == [f"{path}:3: door: cooldown: '5 min' is not a duration: write a number and a unit (s, m, h, d, w),"
                   " e.g. 2h, 24h, 7d or 1h30m"]


@pytest.mark.parametrize("value, message", [
    ("25:00-06:00", "bad time range '25:00-06:00': write HH:MM-HH:MM in 24-hour time, e.g. 22:00-06:00"
                    " (ranges may run past midnight)"),
    ("22:00", "bad time range '22:00': write HH:MM-HH:MM in 24-hour time, e.g. 22:00-06:00"
              " (ranges may run past midnight)"),
    ("08:00-08:00", "bad time range '08:00-08:00': it starts where it ends; for the whole day leave out time"),
])
def test_bad_time_range(tmp_path, capsys, value, message):
    code, err, path = check(tmp_path, f"- id: door\n  ask: Is the door open?\n  active: \"{value}\"\n", capsys)
    assert code == 2
    assert err == [f"{path}:3: door: active: {message}"]


def test_bad_day(tmp_path, capsys):
    code, err, path = check(tmp_path, "- id: door\n  ask: Is the door open?\n  active: {days: [mon-fry]}\n", capsys)
    assert code == 2
    assert err == [f"{path}:3: door: active: unknown day 'mon-fry': use mon, tue, wed, thu, fri, sat, sun"
                   " or a range such as mon-fri"]


def test_bad_regex(tmp_path, capsys):
    code, err, path = check(tmp_path, """\
        - id: smoke
          match:
            regex: "(smoke|fire"
        - id: slow
          match: {regex: "(a+)+b"}
        """, capsys)
    assert code == 2
    assert err == [f"{path}:3: smoke: match.regex: bad regex '(smoke|fire': missing ), unterminated subpattern"
                   " at position 0",
                   f"{path}:5: slow: match.regex: bad regex '(a+)+b': a quantifier inside a group that is itself"
                   " repeated by + or * can take exponential time; rewrite it without the nesting"]


def test_when_not_among_choices(tmp_path, capsys):
    code, err, path = check(tmp_path, """\
        - id: door
          ask: Is the door open, closed or ajar?
          choices: [open, closed, ajar]
          when: Open
        """, capsys)
    assert code == 2
    assert err == [f"{path}:4: door: when 'Open' is not among choices (open, closed, ajar)"]


def test_other_problems_are_reported_together_with_their_lines(tmp_path, capsys):
    code, err, path = check(tmp_path, """\
        - ask: Is the door open?
        - id: Door
          match: {any: [door]}
        - id: both
          ask: Is it?
          match: {any: [it]}
        - id: neither
          severity: high
        - id: smoke
          match: {any: [smoke]}
          threshold: 0.5
          for: 0
          snapshot: maybe
          message: "{camera}: {probability}"
        - id: description
          ask: Anything?
        """, capsys)
    assert code == 2
    assert err == [
        f"{path}:1: rule 1: id is missing: give every rule a unique id, e.g. id: person_at_door",
        f"{path}:2: rule 2: id 'Door' must be 1-64 lower-case letters, digits, '_' or '-', starting with a letter"
        " or digit (it becomes an MQTT topic level)",
        f"{path}:6: both: give ask (a question) or match (words or a regex in the description), not both",
        f"{path}:7: neither: a rule needs a trigger: ask (a question) or match (words or a regex in the description)",
        f"{path}:8: neither: severity: 'high' is not one of info, warning, critical",
        f"{path}:11: smoke: threshold only applies to ask rules; this one has match",
        f"{path}:12: smoke: for: give a whole number of consecutive windows, at least 1 (got 0)",
        f"{path}:13: smoke: snapshot: write true or false (got 'maybe')",
        f"{path}:14: smoke: message: {{probability}} is only known for ask rules",
        f"{path}:15: description: id 'description' is reserved for the description prompt; choose another",
    ]


def test_not_a_list_and_not_yaml(tmp_path, capsys):
    code, err, path = check(tmp_path, "id: door\nask: Is it?\n", capsys)
    assert err == [f"{path}:1: the file must hold a list of rules, each starting with '- id:'"]
    code, err, path = check(tmp_path, "- id: door\n  ask: [unclosed\n", capsys)
    assert code == 2 and err[0].startswith(f"{path}:3: not valid YAML: ")


def test_check_config_reports_rules_naming_unknown_cameras(tmp_path, tiny_model, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "yard.yaml").write_text("- id: car\n  cameras: [front_door, yard]\n  match: {any: [car]}\n")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  dir: {tiny_model}\ncameras:\n  - name: front_door\n    source: {clip}\n"
                      f"rules: {rules}\nstate_dir: {tmp_path / 'state'}\n")
    assert main(["check-config", "-c", str(config)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{rules / 'yard.yaml'}:2: car: cameras: camera 'yard' is not configured (cameras: front_door);"
        " name a configured camera, or leave cameras out to watch every camera"]


def test_missing_rule_directory(tmp_path, capsys):
    assert main(["check-rules", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == (f"vlmwatch: error: rule directory {tmp_path / 'nope'} does not exist;"
                                               " create it or point rules: at your rule files")


@pytest.mark.parametrize("options, line, message", [
    ("ask: Is it?\n  choices: [yes]", 3, "choices: give at least two different choices, e.g. [yes, no]"),
    ("ask: Is it?\n  choices: [yes, yes]", 3, "choices: give at least two different choices, e.g. [yes, no]"),
    ("ask: Is it?\n  threshold: 1.5", 3, "threshold must be a probability from 0 to 1 (got 1.5)"),
    ("ask: ''", 2, "ask is empty"),
    ("match: smoke", 2, "match takes any, all or regex, e.g. match: {any: [smoke, fire]}"),
    ("match: {any: [smoke], words: [fire]}", 2, "unknown option 'match.words'; match takes: any, all, regex"),
    ("match: {}", 2, "match needs any, all or regex"),
    ("match: {any: [smoke]}\n  cooldown: 1m\n  cooldown: 2m", 4, "option 'cooldown' is given twice"),
    ("match: {regex: '" + "a" * 501 + "'}", 2, "match.regex: regex is 501 characters long; at most 500 are allowed"),
    ("ask: Is it?\n  off_delay: soon", 3, "off_delay: 'soon' is not a duration: write a number and a unit"
                                          " (s, m, h, d, w), e.g. 2h, 24h, 7d or 1h30m"),
    ("ask: Is it?\n  cooldown: 30", 3, "cooldown: '30' is not a duration: write a number and a unit"
                                        " (s, m, h, d, w), e.g. 2h, 24h, 7d or 1h30m"),  # seconds or minutes?
    ("ask: Is it?\n  active: {time: '08:00-09:00', weekdays: [mon]}", 3,
     "unknown option 'active.weekdays'; did you mean 'active.days'?"),
    ("ask: Is it?\n  message: '{camera'", 3, "message: expected '}' before end of string in '{camera'"
                                             " (write {{ and }} for literal braces)"),
])
def test_more_option_problems(tmp_path, capsys, options, line, message):
    code, err, path = check(tmp_path, f"- id: door\n  {options}\n", capsys)
    assert code == 2
    assert err == [f"{path}:{line}: door: {message}"]


def test_config_timezone_must_be_a_zone(tmp_path):
    from daemon.config import load_config
    from daemon.errors import ConfigError

    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  dir: {tmp_path}\ncameras:\n  - name: door\n    source: x.mp4\ntimezone: Mars/Olympus\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    assert str(exc.value) == (f"{config}:6: timezone: unknown time zone 'Mars/Olympus': use an IANA name such as"
                              " Europe/Berlin or UTC (got 'Mars/Olympus')")
    config.write_text(config.read_text().replace("Mars/Olympus", "Europe/Berlin"))
    assert load_config(config).tzinfo == TZ


# ----------------------------------------------------------------------------- zones


def in_zones(result: Result, *zones: str, trigger: str | None = None) -> Result:
    from dataclasses import replace

    return replace(result, zones=frozenset(zones), trigger=trigger)


def test_a_zone_rule_fires_only_when_the_change_touched_its_zone_and_the_model_agrees():
    rules = RuleSet((ask_rule(zones=("porch", "steps")),))
    out, _ = run(rules, [(10.0, [in_zones(answer(0.9), "drive")]),  # the model says yes, elsewhere
                         (20.0, [in_zones(answer(0.2), "porch")]),  # on the porch, the model says no
                         (30.0, [in_zones(answer(0.9), "steps", "drive", trigger="frigate person")])])
    assert [len(ev.alerts) for _, ev in out] == [0, 0, 1]
    alert = out[2][1].alerts[0]
    assert (alert.zones, alert.trigger) == (frozenset({"steps", "drive"}), "frigate person")


def test_a_rule_without_zones_ignores_them():
    out, _ = run(RuleSet((ask_rule(),)), [(10.0, [answer(0.9)])])
    assert len(out[0][1].alerts) == 1 and out[0][1].alerts[0].zones == frozenset()


def test_rule_zones_are_read_and_checked_against_the_cameras_zones(tmp_path):
    (tmp_path / "r.yaml").write_text("- id: parcel\n  cameras: [door]\n  ask: Is there a parcel?\n"
                                     "  zones: [porch, garden]\n- id: any\n  ask: Anyone?\n  zones: porch\n")
    rules, problems = check_rules(tmp_path, cameras=["door", "yard"], zones={"door": ["porch"], "yard": ["garden"]})
    assert problems == [f"{tmp_path / 'r.yaml'}:4: parcel: zones: zone 'garden' is not configured on the rule's "
                        "cameras (door; their zones: porch); add it under cameras[].zones"]
    assert [r.zones for r in rules.rules] == [("porch",)]  # `any` watches both cameras: porch is on one
    _, problems = check_rules(tmp_path)  # check-rules alone knows no config: names are taken as written
    assert problems == []
