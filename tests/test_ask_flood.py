"""Questions cannot starve camera windows (issue 11, finding 3), against mosquitto and the real daemon.

The engine is the tiny model with the board-speed profile: every graph call
takes as long as it would on an AX650N, so the NPU is as busy as on the board.
"""

from __future__ import annotations

import json
import threading
import time

from daemon.config import Config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemons import SYSTEM, board_speed_engine, running
from mosquitto import wait_until

DESCRIPTION = "vlmwatch/yard/description"


def daemon_config(tmp_path, model, clip, broker, **asks) -> Config:
    """One live-paced camera: a 2-frame window every 4 s, every window analysed."""
    return Config.model_validate({
        "model": {"dir": str(model), "system": SYSTEM},
        "cameras": [{"name": "yard", "source": str(clip), "realtime": True, "span": 4, "stride": 4, "frames": 2,
                     "gate": {"enabled": False}}],
        "prompts": {"max_new_tokens": 2},
        "mqtt": {"host": broker.host, "port": broker.port},
        "asks": asks,
        "state_dir": str(tmp_path / "state"),
        "metrics": {"enabled": False}})


def arrival_times(heard, topic: str, count: int, after: float, timeout: float) -> list[float]:
    """Monotonic arrival times of the first `count` messages on `topic` that arrive after `after`."""
    seen, times = len(heard.on(topic)), []
    deadline = time.monotonic() + timeout
    while len(times) < count:
        now = time.monotonic()
        assert now < deadline, f"only {len(times)} of {count} messages on {topic} within {timeout} s"
        n = len(heard.on(topic))
        if n > seen:
            times += [now] * (n - seen) if now > after else []
            seen = n
        time.sleep(0.02)  # polling the listener; the measurement is over seconds
    return times[:count]


def test_windows_keep_flowing_while_asks_flood_the_camera(tmp_path, tiny_model, long_clip, mosquitto, listen):
    heard = listen(mosquitto, "vlmwatch/#")
    cfg = daemon_config(tmp_path, tiny_model, long_clip, mosquitto, per_minute=0)  # no rate limit: the share acts
    with running(cfg, board_speed_engine(tiny_model)):
        base = arrival_times(heard, DESCRIPTION, 4, after=0.0, timeout=90)
        quiet_rate = 3 / (base[-1] - base[0])

        stop_flood, sent = threading.Event(), [0]

        def flood():  # 60 asks a second, as in the issue, for at most 40 s
            for i in range(60 * 40):
                if stop_flood.wait(1 / 60):
                    return
                heard.client.publish("vlmwatch/yard/ask", json.dumps({"question": "What is there?", "id": f"f{i}"}))
                sent[0] += 1

        flooder = threading.Thread(target=flood, name="ask-flood")
        start = time.monotonic()
        flooder.start()
        try:
            during = arrival_times(heard, DESCRIPTION, 3, after=start, timeout=40)
        finally:
            stop_flood.set()
            flooder.join(5)
        flood_rate = 3 / (during[-1] - start)
        replies = [json.loads(m.payload) for m in heard.on("vlmwatch/yard/reply")]
    answered = sum(r["ok"] for r in replies)
    print(f"\ndescriptions/s: {quiet_rate:.3f} without asks, {flood_rate:.3f} under {sent[0]} asks "
          f"({flood_rate / quiet_rate:.0%}); {answered} asks answered, {len(replies) - answered} refused")
    assert flood_rate >= 0.5 * quiet_rate
    assert answered >= 10  # questions still go first within their share
    assert all(r["ok"] or "waiting for the NPU" in r["error"] for r in replies)


def test_asks_over_the_rate_limit_get_an_error_reply(tmp_path, tiny_model, long_clip, mosquitto, listen):
    heard = listen(mosquitto, "vlmwatch/#")
    cfg = daemon_config(tmp_path, tiny_model, long_clip, mosquitto, per_minute=6, burst=2)
    with running(cfg, Engine(open_model(locate(tiny_model)), system=SYSTEM, max_new_tokens=2)):
        heard.wait_topic("vlmwatch/status", b"online", timeout=30)
        for i in range(6):
            heard.client.publish("vlmwatch/yard/ask", json.dumps({"question": "Anyone there?", "id": f"q{i}"}),
                                 qos=1)
        wait_until(lambda: len(heard.on("vlmwatch/yard/reply")) >= 6, 30, "six replies")
    replies = {r["id"]: r for r in (json.loads(m.payload) for m in heard.on("vlmwatch/yard/reply"))}
    limited = [i for i in range(6) if "at most 6 a minute" in replies[f"q{i}"].get("error", "")]
    assert limited == [2, 3, 4, 5]  # a burst of two, then refused with the reason
    assert replies["q5"]["ok"] is False
    assert "too many questions on camera yard: at most 6 a minute (bursts of 2); ask again in" in replies["q5"]["error"]
