"""Zones end to end: the running daemon on a generated clip, a rule per zone, alerts through mosquitto."""

from __future__ import annotations

import json
import time

from clips import Scene, Thing, write_scene

from daemon.cli import main
from daemon.state.history import History

RULES = """\
- id: at_porch
  ask: Is anything there?
  threshold: 0
  cooldown: 0s
  zones: [porch]
- id: at_drive
  ask: Is anything there?
  threshold: 0
  cooldown: 0s
  zones: [drive]
"""


def test_a_zone_rule_fires_on_windows_whose_change_touched_its_zone(tmp_path, tiny_model, mosquitto, listen):
    # A square appears at the left (the porch) at 9 s and leaves at 15 s; the drive is on the right.
    scene = Scene(duration=20.0, things=(Thing(appear=9.0, leave=15.0, start=(40, 120)),))
    clip = write_scene(tmp_path / "yard.mp4", scene)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "zones.yaml").write_text(RULES)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model:\n  dir: {tiny_model}\n  backend: onnxruntime\n  system: You watch a camera.\n"
        f"cameras:\n  - name: yard\n    source: {clip}\n    span: 4\n    frames: 4\n"
        f"    zones:\n      porch: '0,0.3 0.4,0.3 0.4,1 0,1'\n      drive: [[0.6, 0], [1, 0], [1, 1], [0.6, 1]]\n"
        f"prompts:\n  max_new_tokens: 4\nmqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
        f"rules: {tmp_path / 'rules'}\nstate_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
    listener = listen(mosquitto, "vlmwatch/#")
    assert main(["run", "-c", str(config), "--once"]) == 0

    with History(tmp_path / "state" / "history.sqlite") as history:
        windows = history.windows(0, time.time() + 1)
        alerts = [row.alert for row in history.alerts(0, time.time() + 1)]
    analysed = [w for w in windows if w.analysed]
    assert [w.reason.split()[0] for w in analysed] == ["first", "region", "region"]  # appears (8-12 s), leaves (12-16 s)
    assert [w.zones for w in analysed] == [frozenset(), frozenset({"porch"}), frozenset({"porch"})]
    assert all(w.regions and w.regions[0].x < 0.4 for w in analysed[1:])
    assert [(a.rule, a.zones) for a in alerts] == [("at_porch", frozenset({"porch"}))] * 2  # never at_drive

    published = listener.wait_for(lambda ms: [json.loads(m.payload) for m in ms if m.topic == "vlmwatch/yard/alert"]
                                  if len([m for m in ms if m.topic == "vlmwatch/yard/alert"]) >= 2 else None,
                                  what="both alerts")
    assert [(a["rule"], a["zones"], a["trigger"]) for a in published] == [("at_porch", ["porch"], None)] * 2
    descriptions = [json.loads(m.payload) for m in listener.on("vlmwatch/yard/description")]
    assert [d["zones"] for d in descriptions] == [[], ["porch"], ["porch"]]
