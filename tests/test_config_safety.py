"""What a careless or hostile configuration or rule file can do, through the real parsers and
commands (`check-config`, `check-rules`): names with a trailing newline, topic prefixes the broker
drops us for, YAML alias bombs and absurd nesting, and secrets in error messages and logs."""

from __future__ import annotations

import logging
import textwrap
import time
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.config.base import check_name
from daemon.redact import mistyped_url, redact_text, redact_url
from daemon.rules.files import check_rules

SECRET = "S3cret-horse"
PASSWORD = "98765432"


def assert_no_secret(text: str) -> None:
    for secret in (SECRET, PASSWORD):
        assert secret not in text


@pytest.fixture(autouse=True)
def no_secret_anywhere(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]):
    """Whatever a test here does, neither secret shows up in a log line or on stdout/stderr
    (`run` checks what it read of stdout/stderr itself)."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    assert_no_secret(caplog.text + out + err)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run(argv: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    code = main(argv)
    captured = capfd.readouterr()
    assert_no_secret(captured.out + captured.err)
    return code, captured.err.strip().splitlines(), captured.out + captured.err


def config(tmp_path: Path, body: str = "", camera: str = "name: door\n    source: clip.mp4") -> Path:
    return write(tmp_path / "config.yaml", f"model:\n  dir: {tmp_path / 'model'}\ncameras:\n  - {camera}\n"
                                           f"state_dir: {tmp_path / 'state'}\n" + body)


# -- 2. names are matched whole: "door\n" is not "door" ----------------------------------------------

def test_a_rule_id_with_a_trailing_newline_is_refused_by_check_rules_and_check_config(tmp_path, capfd):
    rules = write(tmp_path / "rules" / "door.yaml", '- id: "door\\n"\n  match: {any: [person]}\n')
    code, err, _ = run(["check-rules", str(rules.parent)], capfd)
    assert code == 2
    assert err == [f"{rules}:1: rule 1: id 'door\\n' must be 1-64 lower-case letters, digits, '_' or '-', starting "
                   "with a letter or digit (it becomes an MQTT topic level)"]
    code, err, _ = run(["check-config", "-c", str(config(tmp_path, f"rules: {rules.parent}\n"))], capfd)
    assert code == 2 and f"{rules}:1: rule 1: id 'door\\n' must be 1-64 lower-case letters" in "\n".join(err)


@pytest.mark.parametrize("camera, body, key", [
    ('name: "door\\n"\n    source: clip.mp4', "", "cameras[0].name"),
    ("name: door\n    source: clip.mp4", "summaries:\n  - id: \"daily\\n\"\n    cron: '0 20 * * *'\n",
     "summaries[0].id"),
])
def test_camera_and_job_names_with_a_trailing_newline_are_refused(tmp_path, capfd, camera, body, key):
    path = config(tmp_path, body, camera)
    code, err, _ = run(["check-config", "-c", str(path)], capfd)
    assert code == 2
    [line] = [e for e in err if f": {key}: " in e]
    assert "must be 1-64 lower-case letters, digits, '_' or '-'" in line


def test_names_on_the_wire_are_matched_whole():
    assert check_name("door", kind="rule") == "door"
    for bad in ("door\n", "door\r\n", "do/or", "+", "a" * 65):
        with pytest.raises(ValueError, match="rule .* must be 1-64 lower-case letters"):
            check_name(bad, kind="rule")


@pytest.mark.parametrize("setting, expected", [
    ('base_topic: "vlm\\twatch"', "mqtt.base_topic: base_topic 'vlm\\twatch' cannot start MQTT topics: it contains "
                                  "the character U+0009 at position 3"),
    ("base_topic: home//vlmwatch", "mqtt.base_topic: base_topic 'home//vlmwatch' cannot start MQTT topics: it has an "
                                   "empty level"),
    ("base_topic: vlm+watch", "mqtt.base_topic: base_topic 'vlm+watch' cannot start MQTT topics: it contains a "
                              "wildcard"),
    ('discovery: {prefix: "home\\nassistant"}', "mqtt.discovery.prefix: discovery prefix 'home\\nassistant' cannot "
                                                "start MQTT topics: it contains the character U+000A"),
])
def test_topic_prefixes_the_broker_would_drop_us_for_are_refused(tmp_path, capfd, setting, expected):
    code, err, _ = run(["check-config", "-c", str(config(tmp_path, f"mqtt:\n  {setting}\n"))], capfd)
    assert code == 2
    assert any(line.startswith(f"{tmp_path / 'config.yaml'}:") and expected in line for line in err), err


# -- 5. YAML alias bombs and absurd nesting ------------------------------------------------------------------

LAUGHS = "".join(f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 10))
BOMB = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + LAUGHS  # 10^9 values


def timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def test_a_billion_laughs_config_is_refused_at_once(tmp_path, capfd):
    path = config(tmp_path, BOMB)
    assert len(BOMB) < 800
    (code, err, everything), seconds = timed(lambda: run(["check-config", "-c", str(path)], capfd))
    assert seconds < 2, f"check-config took {seconds:.1f} s"
    assert code == 2
    assert err == [f"{path}:11: the file holds more than 100,000 values once its aliases are expanded (at alias *l3);"
                   " vlmwatch refuses such alias bombs: write the values out, or alias less"]
    assert "lol" not in everything  # nothing expanded is rendered


def test_a_billion_laughs_rule_file_is_refused_at_once(tmp_path, capfd):
    laughs = "".join(f"- id: l{n}\n  match: {{any: [x]}}\n  message: {line.split(': ', 1)[1]}"
                     for n, line in enumerate(BOMB.splitlines(keepends=True)))
    rules = write(tmp_path / "rules" / "bomb.yaml", laughs + "- id: door\n  match: {any: [person]}\n  for: *l9\n")
    (code, err, everything), seconds = timed(lambda: run(["check-rules", str(rules.parent)], capfd))
    assert seconds < 2, f"check-rules took {seconds:.1f} s"
    assert code == 2
    assert err == [f"{rules}:15: the file holds more than 100,000 values once its aliases are expanded (at alias "
                   "*l3); vlmwatch refuses such alias bombs: write the values out, or alias less"]
    assert "lol" not in everything


def test_a_small_alias_still_works_and_a_wrong_one_is_shown_as_its_kind(tmp_path, capfd):
    rules = write(tmp_path / "rules" / "ok.yaml", """\
        - id: smoke
          match: {any: &fire [smoke, fire, flames]}
        - id: fire_in_garage
          match: {any: *fire}
          cameras: [door]
        - id: door
          match: {any: [person]}
          for: *fire
        """)
    found, problems = check_rules(rules.parent, cameras=["door"])
    assert [r.id for r in found.rules] == ["smoke", "fire_in_garage"]
    assert problems == [f"{rules}:8: door: for: give a whole number of consecutive windows, at least 1 (got a list)"]


def test_a_config_sharing_settings_through_an_alias_loads(tmp_path):
    path = config(tmp_path, camera="name: door\n    source: a.mp4\n    gate: &gate {threshold: 0.05}\n"
                                   "  - name: yard\n    source: b.mp4\n    gate: *gate")
    cfg = load_config(path)
    assert [c.gate.threshold for c in cfg.cameras] == [0.05, 0.05]


@pytest.mark.parametrize("body, problem", [
    ("deep: " + "[" * 5000 + "]" * 5000 + "\n", "values nest more than 50 levels deep"),
    ("loop: &a [1, *a]\n", "alias *a refers to the value it is part of"),
], ids=["5000 levels", "self-reference"])
def test_absurd_nesting_and_self_reference_are_one_clear_line(tmp_path, capfd, body, problem):
    path = config(tmp_path, body)
    (code, err, _), seconds = timed(lambda: run(["check-config", "-c", str(path)], capfd))
    assert code == 2 and seconds < 2
    assert err == [f"{path}:7: {problem}"]


# -- 11. secrets in errors and logs ---------------------------------------------------------------------------

def test_a_numeric_password_is_never_echoed(tmp_path, capfd):
    path = config(tmp_path, f"mqtt:\n  username: vlm\n  password: {PASSWORD}\n")
    code, err, everything = run(["check-config", "-c", str(path)], capfd)
    assert code == 2
    assert f"{path}:9: mqtt.password: Input should be a valid string (YAML reads unquoted digits as a number: put " \
           "the value in quotes, or better, in password_file)" in err
    assert PASSWORD not in everything


def test_secret_like_keys_are_never_shown_whatever_their_type(tmp_path):
    path = config(tmp_path, f"mqtt:\n  username: vlm\n  password: [{SECRET}]\n  password_env: {{x: {SECRET}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "mqtt.password:" in str(caught.value) and SECRET not in str(caught.value)


def test_a_url_with_one_slash_is_refused_and_its_password_never_shown(tmp_path, capfd, caplog):
    source = f"rtsp:/admin:{SECRET}@cam.local/stream1"
    path = config(tmp_path, camera=f"name: door\n    source: {source}")
    for command in (["check-config", "-c", str(path)], ["run", "-c", str(path), "--once"]):
        code, err, everything = run(command, capfd)
        assert code == 2
        assert (f"{path}:5: cameras[0].source: this looks like a rtsp:// URL, but '//' does not follow 'rtsp:', so "
                "it would be taken for a file path: write rtsp://HOST/PATH (got 'rtsp:/***@cam.local/stream1')") in err
        assert SECRET not in everything


def test_redaction_covers_mistyped_urls_and_text_quoting_them():
    assert redact_url(f"rtsp:/admin:{SECRET}@cam/s") == "rtsp:/***@cam/s"
    assert redact_url(f"rtsp:admin:{SECRET}@cam/s") == "rtsp:***@cam/s"
    assert redact_url(f"rtsp://admin:{SECRET}@cam/s") == "rtsp://***@cam/s"
    assert redact_url("/videos/yard.mp4") == "/videos/yard.mp4"
    assert redact_text(f"cannot read rtsp:/admin:{SECRET}@cam/s: no such file; 'http://u:{SECRET}@h/x?token=a'") == \
        "cannot read rtsp:/***@cam/s: no such file; 'http://***@h/x?token=***'"
    assert redact_text("camera yard: reading clip@2x.mp4 (90 frames)") == "camera yard: reading clip@2x.mp4 (90 frames)"
    assert [mistyped_url(s) for s in ("rtsp:/cam/s", "RTSP:cam", "rtsp://cam/s", "C:/clips/a.mp4", "clips/a.mp4",
                                      "http:/cam")] == ["rtsp", "RTSP", None, None, None, "http"]


def test_a_source_event_quoting_a_credential_is_logged_redacted(caplog):
    from daemon.video.events import emit

    events = []
    emit("door", "error", f"cannot read rtsp:/admin:{SECRET}@cam/s: no such file", events.append, logging.ERROR)
    assert events[0].message == "cannot read rtsp:/***@cam/s: no such file"
    assert "camera door: cannot read rtsp:/***@cam/s" in caplog.text


def test_open_source_refuses_a_mistyped_url_without_showing_its_password():
    from daemon.config.cameras import SourceSettings
    from daemon.errors import SourceError
    from daemon.video import open_source

    with pytest.raises(SourceError) as caught:
        open_source("door", f"rtsp:/admin:{SECRET}@cam/s", SourceSettings())
    assert str(caught.value) == ("camera door: source 'rtsp:/***@cam/s' looks like a rtsp:// URL, but '//' does not "
                                 "follow 'rtsp:'; write rtsp://HOST/PATH")
