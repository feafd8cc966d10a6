"""check-config refuses exactly what `run` refuses before READY, with the same lines and exit code,
and a config it calls OK starts (daemon/service/preflight.py)."""

import json
import shutil

import pytest

from daemon.cli import main

ASK = "  ask: Is anyone there?\n"
LONG = "Is there " + "a very long question " * 40 + "?"


def config_text(model, clip, state, *, model_extra="", camera_extra="", top_extra="", cameras="", system=True,
                prompts_extra=""):
    system_line = "  system: You watch a camera.\n" if system else ""
    return (f"model:\n  dir: {model}\n{system_line}{model_extra}"
            f"cameras:\n  - name: yard\n    source: {clip}\n{camera_extra}{cameras}"
            f"prompts:\n  max_new_tokens: 4\n{prompts_extra}"
            f"state_dir: {state}\nmetrics:\n  enabled: false\n{top_extra}")


MQTT = "mqtt:\n  host: 127.0.0.1\n  port: 1\n"

# id -> (config changes, rules file or None, environment, the key and words the problem line must name)
CASES = {
    "unknown key": (dict(top_extra="colour: red\n"), None, {}, "colour: unknown key"),
    "missing model": (dict(model="MISSING"), None, {}, "model.dir: model directory"),
    "backend does not run the bundle": (
        dict(model_extra="  backend: axengine\n"), None, {},
        "model.backend: the axengine backend runs .axmodel files but"),
    "model without a ViT": (dict(model="NO_VIT"), None, {}, "model.vit: this model has no ViT graph"),
    "frames do not fit": (dict(camera_extra="    frames: 40\n"), None, {},
                          "cameras[0].frames: the 40-frame prefix (system text and frames) of camera yard is"),
    "default system text does not fit": (dict(system=False), None, {}, "cameras[0].frames: the 8-frame prefix"),
    "description does not fit": (dict(prompts_extra=f"  description: {LONG}\n"), None, {},
                                 "prompts.description: the description prompt with the 8-frame prefix of camera yard"),
    "camera description does not fit": (
        dict(camera_extra=f"    prompts:\n      description: {LONG}\n"), None, {},
        "cameras[0].prompts.description: the description prompt with the 8-frame prefix of camera yard is"),
    "event max_length shorter than end_after": (dict(top_extra="events:\n  end_after: 60\n  max_length: 30\n"), None,
                                                {}, "events: max_length (30 s) must be longer than end_after (60 s)"),
    "event story prompt does not fit": (dict(top_extra=f"events:\n  prompt: {LONG}\n"), None, {},
                                        "events.prompt: the event story prompt with the 8-frame prefix of camera"),
    "event entity collides with a rule's": (dict(top_extra=MQTT), "- id: event\n" + ASK, {},
                                           "mqtt: two entities map to the same Home Assistant object id 'yard_event'"),
    "rule question does not fit": (dict(), f"- id: long\n  ask: {LONG}\n", {},
                                   "long: the question with the 8-frame prefix of camera yard is"),
    "rule choices share a token": (dict(), "- id: same\n  ask: Which?\n  choices: [yes, Yes]\n", {},
                                   "same: choices 'yes' and 'Yes' start with the same token"),
    "rule names an unknown camera": (dict(), "- id: door\n  cameras: [front_door]\n" + ASK, {}, "door: "),
    "mqtt password_env unset": (
        dict(top_extra=MQTT + "  username: vlm\n  password_env: PREFLIGHT_NO_SUCH_VAR\n"), None, {},
        "mqtt.password_env: environment variable PREFLIGHT_NO_SUCH_VAR is not set"),
    "mqtt password_credential outside systemd": (
        dict(top_extra=MQTT + "  username: vlm\n  password_credential: mqtt_password\n"), None, {},
        "mqtt.password_credential is 'mqtt_password' but $CREDENTIALS_DIRECTORY is not set"),
    "mqtt password_file unreadable": (
        dict(top_extra=MQTT + "  username: vlm\n  password_file: /nonexistent/pw\n"), None, {},
        "mqtt.password_file: cannot read the password from /nonexistent/pw"),
    "mqtt tls ca_file unreadable": (
        dict(top_extra=MQTT + "  tls: {ca_file: /nonexistent/ca.pem}\n"), None, {},
        "mqtt.tls.ca_file /nonexistent/ca.pem: cannot load it"),
    "camera password_env unset": (
        dict(clip="rtsp://cam.local/stream", camera_extra="    username: viewer\n    password_env: PREFLIGHT_NO_CAM\n"),
        None, {}, "cameras[0].password_env: environment variable PREFLIGHT_NO_CAM is not set"),
    "camera credential missing": (
        dict(clip="rtsp://cam.local/stream", camera_extra="    username: viewer\n    password_credential: cam\n"),
        None, {"CREDENTIALS_DIRECTORY": "CREDS"}, "cameras[0].password_credential: cannot read"),
    "state_dir under a file": (dict(state="CLIP/state"), None, {}, "state_dir: "),
    "missing file source": (dict(clip="NOWHERE/clip.mp4"), None, {}, "cameras[0].source: no such file or folder"),
    "reserved camera name": (dict(top_extra=MQTT, cameras="  - name: summary\n    source: CLIP\n"), None, {},
                             "cameras[1].name: camera name 'summary' is reserved"),
    "camera name too long for MQTT": (
        dict(top_extra=MQTT, cameras=f"  - name: {'c' * 65}\n    source: CLIP\n"), None, {},
        "cameras[1].name: name 'ccc"),
    "two entities with one id": (
        dict(top_extra=MQTT, cameras="  - name: yard_front\n    source: CLIP\n"),
        "- id: front_gate\n" + ASK + "- id: gate\n" + ASK, {},
        "mqtt: two entities map to the same Home Assistant object id 'yard_front_gate'"),
}


@pytest.fixture(scope="module")
def no_vit_model(tiny_model, tmp_path_factory):
    """The tiny bundle without its ViT: a text-only model."""
    folder = tmp_path_factory.mktemp("no_vit")
    for item in tiny_model.iterdir():
        if item.name not in ("manifest.json", "vit.onnx"):
            (folder / item.name).symlink_to(item)
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    manifest["files"]["vit"] = None
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("case", CASES)
def test_check_config_refuses_what_run_refuses_with_the_same_lines(case, tmp_path, tiny_model, no_vit_model,
                                                                   monkeypatch, capsys):
    changes, rules, env, expected = CASES[case]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded before READY")
    places = {"MISSING": str(tmp_path / "no-model"), "NO_VIT": str(no_vit_model), "CLIP": str(clip),
              "NOWHERE": str(tmp_path / "nowhere"), "CREDS": str(tmp_path / "creds")}
    values = {"model": tiny_model, "clip": clip, "state": tmp_path / "state", **changes}
    for key, value in values.items():
        for token, place in places.items():
            value = str(value).replace(token, place) if isinstance(value, str) else value
        values[key] = value
    text = config_text(**values)
    if rules is not None:
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "rules.yaml").write_text(rules)
        text += "rules: rules\n"
    (tmp_path / "creds").mkdir()
    for name in ("PREFLIGHT_NO_SUCH_VAR", "PREFLIGHT_NO_CAM", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, places.get(value, value))
    path = tmp_path / "config.yaml"
    path.write_text(text)

    checked = main(["check-config", "-c", str(path)]), capsys.readouterr().err.splitlines()
    ran = main(["run", "-c", str(path), "--once"]), capsys.readouterr().err.splitlines()

    assert checked == ran
    code, lines = checked
    assert code == 2 and len(lines) == 1, lines
    where = tmp_path / "rules" / "rules.yaml" if rules is not None and "mqtt" not in text else path
    assert lines[0].startswith(f"{where}:"), lines[0]
    assert f": {expected}" in lines[0], lines[0]
    assert "--backend" not in lines[0]  # config problems name config keys, not command-line flags


def test_a_config_check_config_calls_ok_runs(tmp_path, tiny_model, yard_clip, capsys):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text("- id: anyone\n" + ASK)
    path = tmp_path / "config.yaml"
    path.write_text(config_text(tiny_model, yard_clip, tmp_path / "state") + "rules: rules\n")
    assert main(["check-config", "-c", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: OK (1 camera(s), model {tiny_model})")
    assert main(["run", "-c", str(path), "--once"]) == 0
    assert capsys.readouterr().err == ""


def test_state_dir_that_exists_is_checked_where_it_is(tmp_path, tiny_model, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder should be")
    path = tmp_path / "config.yaml"
    path.write_text(config_text(tiny_model, clip, blocker))
    assert main(["check-config", "-c", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{path}:9: state_dir: {blocker} is not a folder, so {blocker} cannot be created there;"
        " point state_dir at a folder")


def test_model_backend_defaults_to_what_the_bundle_holds(tmp_path, tiny_model):
    from daemon.config.model import ModelSettings
    from daemon.engine.bundle import choose_backend, locate

    assert ModelSettings(dir=tiny_model).backend == "auto"
    assert ModelSettings(dir=tiny_model, backend=None).backend == "auto"  # `backend:` left empty
    assert choose_backend(locate(tiny_model), "auto") == "onnxruntime"


def test_the_shipped_rules_name_the_shipped_cameras(tmp_path):
    """config.yaml's rules name config.yaml's cameras: renaming nothing, the rule files pass."""
    from pathlib import Path

    from daemon.config import load_config
    from daemon.service.preflight import rule_file_problems

    root = Path(__file__).parent.parent
    shutil.copy(root / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(root / "rules", tmp_path / "rules")
    cfg = load_config(tmp_path / "config.yaml")
    assert rule_file_problems(tmp_path / "config.yaml", cfg) == []


def test_run_reports_a_metrics_port_in_use_before_loading_the_model(tmp_path, tiny_model, capsys, caplog):
    """check-config cannot judge a port (a running daemon holds it); run binds it before the model loads."""
    import socket

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    path = tmp_path / "config.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path.write_text(config_text(tiny_model, clip, tmp_path / "state").replace(
            "metrics:\n  enabled: false\n", f"metrics:\n  port: {port}\n"))
        caplog.set_level("INFO")
        assert main(["run", "-c", str(path), "--once"]) == 2
    assert capsys.readouterr().err.startswith(f"vlmwatch: error: cannot serve metrics on 127.0.0.1:{port}: ")
    assert not [r for r in caplog.records if r.getMessage().startswith("loading ")]
