"""Summaries end to end on the tiny exported model (prefill 16 x 16 = 256 tokens, KV 320): map-reduce for real,
the summarize command, and the daemon publishing a scheduled summary to a real mosquitto."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import pytest
from histories import long_history

from daemon.cli import main
from daemon.engine.engine import Engine
from daemon.state.history import History
from daemon.summaries.plan import TokenBudget
from daemon.summaries.runner import Summarizer
from daemon.summaries.timeline import Period, Request

SYSTEM = "You watch a camera."


@pytest.fixture(scope="module")
def engine(tiny_model):
    from daemon.engine.bundle import locate, open_model

    return Engine(open_model(locate(tiny_model, None, None), "onnxruntime", None), system=SYSTEM)


class Spy:
    """The real engine, remembering the size of every prompt it was given."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.limits, self.prompt_tokens = engine.limits, engine.prompt_tokens
        self.tokenize, self.detokenize = engine.tokenize, engine.detokenize
        self.sizes: list[tuple[int, int]] = []  # (prompt tokens, answer room asked for)

    def ask(self, frames, prompts, on_token=None, stop=None):
        analysis = self.engine.ask(frames, prompts, on_token, stop)
        self.sizes += [(a.prompt_tokens, p.max_new_tokens) for a, p in zip(analysis.answers, prompts)]
        return analysis


def test_map_reduce_on_the_tiny_model_fits_every_prompt_in_its_context(tmp_path, engine):
    start = 1_750_000_000.0
    with History(tmp_path / "history.sqlite") as history:
        long_history(history, start, hours=2)
        spy = Spy(engine)
        summarizer = Summarizer(history, spy, None, ["porch", "garage"], clock=lambda: start + 2 * 3600)
        request = Request("daily", ("porch", "garage"), "Summarise the day.", 24)
        period = Period(start, start + 2 * 3600, timezone.utc)
        plan = summarizer.plan(request, period)
        summary = summarizer.summarize(request, period)

    assert plan.map_steps >= 5  # the timeline is far longer than one prefill
    geo = engine.llm.geo
    assert (geo.max_prompt, geo.kv_len) == (256, 320)
    assert summary.counts["model_calls"] == len(spy.sizes) > plan.map_steps + 1  # maps, merges, final
    assert [n for n, _ in spy.sizes[:plan.map_steps]] == [s.tokens for s in plan.steps if s.kind == "map"]
    for tokens, room in spy.sizes:
        assert tokens <= TokenBudget(engine).limit(room) <= geo.max_prompt
        assert tokens + room <= geo.kv_len
    assert summary.text and summary.counts["descriptions"] == 2 * 2 * 12


# --------------------------------------------------------------------------- vlmwatch summarize


def write_config(tmp_path, model, extra: str = "") -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"model:\n  dir: {model}\n  backend: onnxruntime\n  system: {SYSTEM}\n"
                    f"cameras:\n  - name: porch\n    source: {tmp_path}/clips/\n"
                    f"  - name: garage\n    source: {tmp_path}/clips/\n"
                    f"state_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n{extra}")
    return str(path)


@pytest.fixture
def recorded(tmp_path, tiny_model):
    """A config whose history holds the last three hours of two cameras."""
    with History(tmp_path / "state" / "history.sqlite") as history:
        long_history(history, time.time() - 3 * 3600 + 60, hours=3)
    return write_config(tmp_path, tiny_model)


def test_dry_run_prints_the_plan_without_running_the_model(recorded, capsys):
    assert main(["summarize", "-c", recorded, "--since", "4h", "--dry-run", "--json", "--max-new-tokens", "40"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["limits"] == {"max_prompt": 256, "kv_len": 320}
    assert plan["counts"] == {"descriptions": 72, "answers": 3, "alerts": 3, "timeline": 78}
    kinds = [s["kind"] for s in plan["steps"]]
    assert plan["map_steps"] == kinds.count("map") >= 5 and kinds[-1] == "final"
    assert all(s["prompt_tokens"] <= 256 for s in plan["steps"])
    assert all(s["exact"] == (s["kind"] == "map") for s in plan["steps"])

    assert main(["summarize", "-c", recorded, "--since", "4h", "--dry-run", "--max-new-tokens", "40"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == ["Timeline: 78 lines from 72 descriptions, 3 rule answers, 3 alerts",
                        "Model: largest prefill 256 tokens, KV cache 320 tokens",
                        (f"Plan: {plan['map_steps']} map steps, {kinds.count('merge')} merge steps, 1 final step"
                         f" ({len(kinds)} model calls at most)")]
    first = plan["steps"][0]
    assert first["max_new_tokens"] <= 40  # partial summaries: short enough for three to fit the final prompt
    assert out[5] == (f"--- step 1/{len(kinds)}: map, {first['prompt_tokens']} prompt tokens,"
                      f" answer up to {first['max_new_tokens']} tokens")
    assert "\n".join(out[6:6 + first["prompt"].count("\n") + 1]) == first["prompt"]


def test_summarize_runs_the_model_and_prints_the_summary(recorded, capsys):
    assert main(["summarize", "-c", recorded, "--camera", "garage", "--since", "1h", "--max-new-tokens", "24",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["job"] == "on-demand" and summary["cameras"] == ["garage"]
    assert summary["text"] and summary["counts"]["model_calls"] >= 1
    assert summary["counts"]["descriptions"] == 12


def test_summarize_of_a_quiet_period_says_nothing_was_seen(tmp_path, tiny_model, capsys):
    History(tmp_path / "state" / "history.sqlite").open().close()
    config = write_config(tmp_path, tiny_model, "timezone: UTC\n")
    assert main(["summarize", "-c", config, "--since", "30m", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["text"].startswith("Nothing was seen on porch, garage from ")
    assert summary["counts"]["model_calls"] == 0


@pytest.mark.parametrize("args, message", [
    (["--camera", "attic", "--since", "2h"], "unknown camera 'attic'; the config has: porch, garage"),
    (["--since", "yesterday"], ("--since 'yesterday' is not a duration: write a number and a unit (s, m, h, d, w),"
                                " e.g. 2h, 24h, 7d or 1h30m")),
    (["--since", "2h", "--timezone", "Mars/Olympus"],
     "unknown time zone 'Mars/Olympus': use an IANA name such as Europe/Berlin or UTC"),
])
def test_summarize_refuses_bad_arguments_with_exit_2(tmp_path, tiny_model, capsys, args, message):
    assert main(["summarize", "-c", write_config(tmp_path, tiny_model), *args]) == 2
    assert capsys.readouterr().err == f"vlmwatch: error: {message}\n"


def test_summarize_without_a_history_says_where_it_looked(tmp_path, tiny_model, capsys):
    config = write_config(tmp_path, tiny_model)
    assert main(["summarize", "-c", config, "--since", "2h"]) == 1
    assert capsys.readouterr().err == (f"vlmwatch: error: no history at {tmp_path / 'state' / 'history.sqlite'}: the"
                                       f" daemon records it (vlmwatch run -c {config}); check state_dir in the config\n")


# --------------------------------------------------------------------------- the daemon


def test_the_daemon_publishes_a_scheduled_summary_to_mosquitto(tmp_path, tiny_model, mosquitto, listen):
    """A job due every minute, on the real APScheduler and cron trigger (its clock shifted so that the next minute
    comes in a second), summarises history on the NPU worker and publishes it, retained, with its HA sensor."""
    from test_scheduler import Shifted

    from daemon.config import load_config
    from daemon.service.build import build_app
    from daemon.summaries.runner import RunLog
    from daemon.summaries.scheduler import cron_trigger

    heard = listen(mosquitto, "vlmwatch/#", "homeassistant/#")
    (tmp_path / "clips").mkdir()
    config = write_config(tmp_path, tiny_model, f"mqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
                          "summaries:\n  - id: minutely\n    cron: '* * * * *'\n    period: 2h\n"
                          "    max_new_tokens: 16\n    timezone: UTC\n")
    with History(tmp_path / "state" / "history.sqlite") as history:
        long_history(history, time.time() - 3600, hours=1)  # what the cameras saw in the last hour
    app, closers = build_app(load_config(config))
    app.pipeline.scheduler.trigger_for = lambda job: Shifted.due_in(cron_trigger(job), 1.0)
    runner = threading.Thread(target=app.run, name="daemon-under-test")
    runner.start()
    try:
        message = heard.wait_topic("vlmwatch/summary/minutely", timeout=60)
    finally:
        app.stop.set()
        runner.join(20)
        for close in reversed(closers):
            close()

    body = json.loads(message.payload)
    assert message.retain and body["job"] == "minutely" and body["text"]
    assert body["counts"]["descriptions"] == 24 and body["counts"]["model_calls"] >= 2  # map-reduce on 256 tokens
    start, end = (datetime.fromisoformat(body["period"][k]) for k in ("start", "end"))
    assert (end - start).total_seconds() == 7200
    sensors = [json.loads(m.payload) for m in heard.messages
               if m.topic.startswith("homeassistant/sensor/") and m.topic.endswith("/config") and m.payload]
    assert any(s.get("state_topic") == "vlmwatch/summary/minutely" for s in sensors)
    with History(tmp_path / "state" / "history.sqlite") as history:
        assert [r.summary.text for r in history.summaries(0, time.time() + 1, job="minutely")] == [body["text"]]
    with RunLog(tmp_path / "state" / "history.sqlite") as runlog:
        assert runlog.last("minutely").fire == pytest.approx(end.timestamp(), abs=0.001)  # ISO has milliseconds
