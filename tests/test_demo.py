"""The README's first command: the demo daemon on its embedded defaults."""

import time

from daemon.cli import main
from daemon.service.history import History


def test_demo_runs_the_daemon_and_prints_what_it_publishes(tmp_path, capsys):
    assert main(["demo", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MQTT broker (amqtt, in-process)" in out
    assert "mqtt  vlmwatch/status: b'online'" in out
    published = [line for line in out.splitlines() if line.startswith("mqtt  vlmwatch/front_door/description")]
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        analysed = [w for w in history.windows(0, time.time() + 1) if w.analysed]
    assert len(published) == len(analysed) >= 2  # the box entering and leaving are analysed
    assert "meaningless" in out

    assert main(["demo", "--home", str(tmp_path)]) == 0  # again: the clip is replayed, not resumed at its end
    again = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("mqtt  vlmwatch/front_door/description")]
    assert len(again) == len(published)
