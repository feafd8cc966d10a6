"""Configuration: every problem reported as FILE:LINE: key.path: message, exit 2."""

import textwrap

import pytest

from daemon.cli import main
from daemon.config import load_config
from daemon.errors import ConfigError


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """\
model:
  dir: {model}
  system: You watch a camera.
cameras:
  - name: front_door
    source: {clip}
state_dir: {state}
"""


@pytest.fixture
def good(tmp_path, tiny_model):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    return GOOD.format(model=tiny_model, clip=clip, state=tmp_path / "state")


def line_of_text(text: str, start: str) -> int:
    """The line number of the first line of `text` that starts with `start`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(start))


def check(tmp_path, text, capsys):
    path = write(tmp_path, text)
    code = main(["check-config", "-c", str(path)])
    return code, capsys.readouterr().err.strip().splitlines(), path


def test_shipped_config_parses():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "config.yaml")
    assert cfg.cameras[0].name == "front_door" and cfg.mqtt is None
    assert cfg.cameras[0].gate.threshold == 0.0005 and cfg.metrics.host == "127.0.0.1"


def test_good_config_passes(tmp_path, good, capsys):
    code, err, path = check(tmp_path, good, capsys)
    assert code == 0, err


def test_unknown_key(tmp_path, good, capsys):
    code, err, path = check(tmp_path, good + "  cameras_typo: 1\n".replace("  ", "", 1), capsys)
    assert code == 2
    assert err[-1] == f"{path}:8: cameras_typo: unknown key; did you mean 'cameras'?"


def test_wrong_type_names_file_line_key_and_value(tmp_path, good, capsys):
    text = good.replace("    source:", "    span: soon\n    source:")
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert err[-1] == (f"{path}:6: cameras[0].span: Input should be a valid number,"
                       " unable to parse string as a number (got 'soon')")


def test_missing_model_files(tmp_path, good, capsys):
    text = good.replace(str(good.split("dir: ")[1].split("\n")[0]), str(tmp_path / "no-model"))
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert err[-1] == f"{path}:2: model.dir: model directory {tmp_path / 'no-model'} does not exist or is not a directory"


def test_bad_cron(tmp_path, good, capsys):
    code, err, path = check(tmp_path, good + "summaries:\n  - id: daily\n    cron: '61 * * * *'\n", capsys)
    assert code == 2
    assert err[-1].startswith(f"{path}:10: summaries[0].cron: invalid cron '61 * * * *': ")


def test_cron_needs_five_fields(tmp_path, good, capsys):
    code, err, path = check(tmp_path, good + "summaries:\n  - id: daily\n    cron: '0 20 * *'\n", capsys)
    assert err[-1] == (f"{path}:10: summaries[0].cron: cron '0 20 * *' must have five fields"
                       " (minute hour day month weekday) (got '0 20 * *')")


def test_unreadable_rule_file(tmp_path, good, capsys):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "door.yaml").write_text("- id: door\n  ask: [unclosed\n")
    code, err, path = check(tmp_path, good + f"rules: {rules}\n", capsys)
    assert code == 2
    assert err[-1].startswith(f"{rules / 'door.yaml'}:3: not valid YAML: ")


def test_missing_rules_directory(tmp_path, good, capsys):
    code, err, path = check(tmp_path, good + f"rules: {tmp_path / 'nope'}\n", capsys)
    assert err[-1] == f"{path}:8: rules: rule directory {tmp_path / 'nope'} does not exist"


def test_duplicate_camera_names(tmp_path, good, capsys):
    text = good.replace("state_dir", "  - name: front_door\n    source: rtsp://cam/x\nstate_dir")
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert err[-1] == f"{path}:7: cameras[1].name: camera name 'front_door' is used twice: names must be unique"


@pytest.mark.parametrize("url, message", [
    ("ftp://cam/stream", "unsupported URL scheme 'ftp': use one of rtsp, rtsps, http, https, or a file or folder path"),
    ("rtsp:///stream", "the URL has no host (expected e.g. rtsp://camera.local:554/stream)"),
])
def test_bad_source_url(tmp_path, good, capsys, url, message):
    text = good.replace(good.split("source: ")[1].split("\n")[0], url)
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    assert err[-1] == f"{path}:6: cameras[0].source: {message} (got '{url}')"


def test_every_problem_is_listed(tmp_path, good, capsys):
    text = good.replace("    source:", "    frames: 0\n    fps: 3\n    source:")
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2 and len(err) == 2
    assert err[0] == f"{path}:6: cameras[0].frames: Input should be greater than or equal to 1 (got 0)"
    assert err[1] == f"{path}:7: cameras[0].fps: unknown key (check the spelling; see config.yaml for every option)"


def test_env_substitution_and_missing_variable(tmp_path, monkeypatch, good):
    monkeypatch.setenv("CAM_HOST", "10.0.0.9")
    path = write(tmp_path, good.replace(good.split("source: ")[1].split("\n")[0], "rtsp://${CAM_HOST}/live"))
    assert load_config(path).cameras[0].source == "rtsp://10.0.0.9/live"
    monkeypatch.delenv("CAM_HOST")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}:6: cameras[0].source: environment variable CAM_HOST is not set"
                              " (set it, or write ${CAM_HOST:-default})")


def test_invalid_yaml(tmp_path, capsys):
    code, err, path = check(tmp_path, "model: {dir: x\ncameras: []\n", capsys)
    assert code == 2 and err[-1].startswith(f"{path}:2: not valid YAML:")


def test_missing_config_file(tmp_path, capsys):
    assert main(["check-config", "-c", str(tmp_path / "none.yaml")]) == 2
    assert capsys.readouterr().err.strip().startswith(f"{tmp_path / 'none.yaml'}: cannot read the configuration")


def test_summary_jobs_take_the_configs_timezone_unless_they_name_one(tmp_path, good):
    text = good + ("timezone: Europe/Berlin\nsummaries:\n  - id: daily\n    cron: '0 20 * * *'\n"
                   "  - id: tokyo\n    cron: '0 8 * * *'\n    timezone: Asia/Tokyo\n")
    cfg = load_config(write(tmp_path, text))
    assert [j.timezone for j in cfg.summaries] == ["Europe/Berlin", "Asia/Tokyo"]


def test_a_bad_camera_url_is_shown_without_its_password(tmp_path, good, capsys):
    text = good.replace(good.split("source: ")[1].split("\n")[0], "ftp://admin:hunter2@cam/stream")
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2 and "hunter2" not in "\n".join(err)
    assert err[-1].endswith("(got 'ftp://***@cam/stream')")


def test_http_section_is_checked(tmp_path, good, capsys, monkeypatch):
    monkeypatch.delenv("VLMWATCH_API_KEY", raising=False)
    text = good + "http:\n  enabled: true\n  api_key_env: VLMWATCH_API_KEY\n  max_images: 99\n"
    code, err, path = check(tmp_path, text, capsys)
    assert code == 2
    http = good.count("\n") + 1  # the line of `http:`
    assert err == [f"{path}:{http + 3}: http.max_images: Input should be less than or equal to 64 (got 99)"]
    code, err, path = check(tmp_path, text.replace("  max_images: 99\n", ""), capsys)
    assert code == 2
    assert err == [f"{path}:{http + 2}: http.api_key_env: environment variable VLMWATCH_API_KEY is not set. Set it in the "
                   "service environment (EnvironmentFile=) or use api_key_credential."]
    monkeypatch.setenv("VLMWATCH_API_KEY", "sk-1")
    assert check(tmp_path, text.replace("  max_images: 99\n", ""), capsys)[0] == 0


# ---------------------------------------------------------------- masks, zones, substreams, triggers


def test_masks_and_zones_are_checked_with_their_lines(tmp_path, good, capsys):
    text = good.replace("state_dir:", (
        "    gate:\n      masks: ['0,0 1,0']\n"
        "    zones:\n      Porch: [[0, 0], [1, 0], [1, 1]]\n"
        "state_dir:"))
    code, err, path = check(tmp_path, text, capsys)
    at = line_of_text(good, "state_dir:")
    assert code == 2
    assert err == [
        f"{path}:{at + 1}: cameras[0].gate.masks[0]: a polygon needs at least 3 points (got 2) (got '0,0 1,0')",
        f"{path}:{at + 2}: cameras[0].zones: zone name 'Porch' must be 1-64 lower-case letters, digits, '_' or '-', "
        "starting with a letter or digit",
    ]
    text = good.replace("state_dir:", "    zones:\n      drive: [[0, 0], [1.2, 0], [1, 1]]\nstate_dir:")
    code, err, path = check(tmp_path, text, capsys)
    assert (code, err) == (2, [f"{path}:{at + 1}: cameras[0].zones.drive: point [1.2, 0] is outside the picture: "
                               "coordinates are relative, 0..1 (0,0 top left; 1,1 bottom right)"])


def test_a_detect_source_pairs_streams_or_files(tmp_path, good, capsys):
    text = good.replace("    source: ", "    detect_source: rtsp://cam/sub\n    source: ")
    code, err, path = check(tmp_path, text, capsys)
    assert (code, err) == (2, [f"{path}:{line_of_text(good, '  - name:')}: cameras[0]: source and detect_source must both be camera URLs or both "
                               "be video files"])


def test_triggers_need_an_mqtt_section(tmp_path, good, capsys):
    text = good.replace("state_dir:", "    triggers:\n      - {topic: hall/motion, payload: 'ON'}\nstate_dir:")
    code, err, path = check(tmp_path, text, capsys)
    assert (code, err) == (2, [f"{path}:{line_of_text(good, 'state_dir:')}: cameras[0].triggers: triggers arrive over MQTT: add an mqtt section "
                               "(the broker they are published to)"])


def test_rule_zones_must_be_configured_on_the_rules_cameras(tmp_path, good, capsys):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("- id: parcel\n  ask: Is there a parcel?\n  zones: [porch, steps]\n")
    text = good.replace("state_dir:", "    zones:\n      porch: '0,0.5 0.5,0.5 0.5,1 0,1'\nrules: rules\n"
                                      "state_dir:")
    code, err, _ = check(tmp_path, text, capsys)
    assert (code, err) == (2, [f"{tmp_path / 'rules' / 'r.yaml'}:3: parcel: zones: zone 'steps' is not configured on "
                               "the rule's cameras (front_door; their zones: porch); add it under cameras[].zones"])
    cfg = load_config(tmp_path / "config.yaml")
    assert cfg.cameras[0].zones == {"porch": ((0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (0.0, 1.0))}
