"""daemon.summaries and daemon.summary_plan: timeline, map-reduce planning, last runs, the empty period."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from histories import long_history, record_answer, record_description

from daemon.config import Config
from daemon.config.summaries import SummarySettings, parse_period
from daemon.engine.engine import Limits
from daemon.errors import PromptTooLongError
from daemon.service.build import assemble
from daemon.service.workqueue import SummaryJob, WindowJob
from daemon.state.history import History
from daemon.summaries.plan import (
    MAP_INSTRUCTION,
    Step,
    TokenBudget,
    plan_summary,
    run_steps,
)
from daemon.summaries.runner import Fire, LastRun, RunLog, Summarizer, period_for
from daemon.summaries.timeline import (
    Entry,
    Period,
    Request,
    build_timeline,
    entry_line,
    merge_runs,
)
from daemon.times import parse_duration
from daemon.types import Alert, Window

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC).timestamp()  # a Monday, 08:00 UTC


# --------------------------------------------------------------------------- helpers


class WordPrompts:
    """A prompt builder with one token per word: exact, fast and easy to reason about."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab)) for w in re.findall(r"\s*\S+|\s+", text)]

    def decode(self, ids) -> str:
        inverse = {i: w for w, i in self.vocab.items()}
        return "".join(inverse[i] for i in ids)

    def prefix(self, n_frames: int) -> list[int]:
        return [0] * 5  # system turn

    def suffix(self, question: str) -> list[int]:
        return self.encode(question) + [0] * 3  # end of turn, assistant turn


class NoModel:
    """An engine whose model must not be called: its token counting and limits only."""

    def __init__(self, prompts=None, max_prompt=256, kv_len=320):
        self.prompts = prompts or WordPrompts()
        self.limits = Limits(max_prompt, kv_len, 16)
        self.vision = None  # text only, as Engine.vision without a ViT

    def prompt_tokens(self, n_frames: int, question: str) -> int:
        return len(self.prompts.prefix(n_frames)) + len(self.prompts.suffix(question))

    def tokenize(self, text: str) -> list[int]:
        return self.prompts.encode(text)

    def detokenize(self, ids) -> str:
        return self.prompts.decode(ids)

    def ask(self, frames, prompts, on_token=None, stop=None):
        raise AssertionError("the model was called")


@pytest.fixture
def history(tmp_path):
    with History(tmp_path / "history.sqlite") as h:
        yield h


def job(**kw) -> SummarySettings:
    return SummarySettings(**{"id": "daily", "cron": "0 20 * * *", "timezone": "UTC", **kw})


# --------------------------------------------------------------------------- durations and periods


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("24h", 86400), ("7d", 604800),
                                           ("1h30m", 5400), ("1w", 604800), ("0.5h", 1800), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_durations_say_what_to_write():
    with pytest.raises(ValueError) as err:
        parse_period("2 hours")
    assert str(err.value) == ("period '2 hours' is not a duration: write a number and a unit (s, m, h, d, w), e.g. 2h,"
                              " 24h, 7d or 1h30m; or since_last for everything since the previous run")
    with pytest.raises(ValueError, match=r"^duration '0m' must be longer than zero$"):
        parse_duration("0m")
    assert parse_period("since_last") is None


def test_a_config_with_a_bad_period_names_the_key(tmp_path):
    from daemon.config import load_config
    from daemon.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("model: {dir: m}\ncameras: [{name: porch, source: a.mp4}]\nsummaries:\n"
                    "  - id: daily\n    cron: '0 20 * * *'\n    period: 2x\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}:6: summaries[0].period: period '2x' is not a duration: write a number and a"
                              " unit (s, m, h, d, w), e.g. 2h, 24h, 7d or 1h30m; or since_last for everything since"
                              " the previous run (got '2x')")


def test_periods():
    fire = Fire("daily", T0, T0 - 86400)
    assert period_for(job(period="2h"), fire, None, UTC) == Period(T0 - 7200, T0, UTC)
    assert period_for(job(), fire, None, UTC) == Period(T0 - 86400, T0, UTC)  # never ran: one schedule step
    last = LastRun("daily", T0 - 3 * 86400, T0 - 4 * 86400, T0 - 3 * 86400, T0 - 3 * 86400 + 5)
    assert period_for(job(), fire, last, UTC) == Period(T0 - 3 * 86400, T0, UTC)  # missed days included


def test_period_labels_and_clock():
    day = Period(T0, T0 + 12 * 3600, BERLIN)
    assert day.label() == "2025-06-02 10:00 to 22:00 CEST"
    assert day.clock(T0 + 60) == "10:01"
    week = Period(T0, T0 + 3 * 86400, UTC)
    assert week.label() == "2025-06-02 08:00 to 2025-06-05 08:00 UTC"
    assert week.clock(T0 + 86400) == "Tue 08:00"
    assert Period(T0, T0 + 30 * 86400, UTC).clock(T0) == "Jun 02 08:00"


# --------------------------------------------------------------------------- timeline


def test_near_identical_consecutive_descriptions_merge_per_camera():
    texts = [("porch", "A man stands at the door."), ("garage", "A car is parked."),
             ("porch", "A man stands at the door"), ("porch", "a man is standing at the door."),
             ("porch", "A cat crosses the lawn."), ("porch", "A man stands at the door.")]
    entries = [Entry("description", cam, T0 + 60 * i, T0 + 60 * i, text) for i, (cam, text) in enumerate(texts)]
    merged = merge_runs(entries)
    assert [(e.camera, e.text, e.repeats, e.start, e.end) for e in merged] == [
        ("porch", "A man stands at the door.", 3, T0, T0 + 180),
        ("garage", "A car is parked.", 1, T0 + 60, T0 + 60),
        ("porch", "A cat crosses the lawn.", 1, T0 + 240, T0 + 240),
        ("porch", "A man stands at the door.", 1, T0 + 300, T0 + 300),
    ]


def test_timeline_from_history(history):
    record_description(history, "porch", T0 + 10, "A man  stands\nat the door.")
    record_description(history, "porch", T0 + 20, "A man stands at the door.")
    record_description(history, "garage", T0 + 30, "A car is parked.")
    record_description(history, "kitchen", T0 + 35, "Not a summarised camera.")
    record_answer(history, "porch", T0 + 40, "person", "yes")
    record_answer(history, "porch", T0 + 50, "person", "yes")
    history.record_alert(Alert("porch", "person", "warning", "Someone is at the door.", T0 + 45, T0 + 37, T0 + 45))
    record_description(history, "porch", T0 + 7200, "After the period.")
    period = Period(T0, T0 + 3600, UTC)
    timeline = build_timeline(history, period, ["porch", "garage"])
    assert [entry_line(e, period) for e in timeline.entries] == [
        "08:00 porch (x2): A man stands at the door.",
        "08:00 garage: A car is parked.",
        "08:00 porch person: yes (x2)",
        "08:00 porch ALERT person (warning): Someone is at the door.",
    ]
    assert timeline.counts == {"descriptions": 3, "answers": 2, "alerts": 1}


# --------------------------------------------------------------------------- planning


def budget(max_prompt=256, kv_len=320) -> TokenBudget:
    return TokenBudget(NoModel(max_prompt=max_prompt, kv_len=kv_len))


def test_a_short_timeline_is_one_direct_step(history):
    record_description(history, "porch", T0 + 10, "A cat crosses the lawn.")
    period = Period(T0, T0 + 3600, UTC)
    request = Request("daily", ("porch",), "What happened?", 32)
    plan = plan_summary(build_timeline(history, period, ["porch"]), request, budget())
    prompt = "Camera log of porch from 2025-06-02 08:00 to 09:00 UTC:\n08:00 porch: A cat crosses the lawn.\nWhat happened?"
    assert plan.steps == (Step("direct", prompt, budget().count(prompt), 32),)
    assert plan.map_steps == 0


def test_map_reduce_plan_keeps_every_prompt_within_the_limits(history):
    long_history(history, T0, hours=6)
    period = Period(T0, T0 + 6 * 3600, UTC)
    b = budget(max_prompt=256, kv_len=320)
    request = Request("daily", ("porch", "garage"), "Summarise the day.", 48)
    timeline = build_timeline(history, period, ["porch", "garage"])
    plan = plan_summary(timeline, request, b)

    maps = [s for s in plan.steps if s.kind == "map"]
    assert len(maps) == plan.map_steps > 5
    assert plan.partial_tokens == 48
    for step in maps:
        assert step.exact and step.tokens == b.count(step.prompt) <= b.limit(48) == 256
        assert step.prompt.startswith("Part of the camera log of porch, garage, ")
        assert step.prompt.endswith("\n" + MAP_INSTRUCTION)
    lines = [line for s in maps for line in s.prompt.split("\n")[1:-1]]
    assert lines == [entry_line(e, period) for e in timeline.entries]  # every line once, in order
    reduce = plan.steps[len(maps):]
    assert [s.kind for s in reduce][-1] == "final" and all(s.kind == "merge" for s in reduce[:-1])
    assert all(not s.exact and s.tokens <= b.limit(s.max_new_tokens) for s in reduce)

    asked = []

    def worst_case(question: str, max_new_tokens: int) -> str:
        asked.append((b.count(question), b.limit(max_new_tokens)))
        return " ".join(["word"] * (max_new_tokens + 20))  # longer than allowed: must be clipped

    steps, pauses = run_steps(plan, worst_case, b), 0
    while True:
        try:
            next(steps)
            pauses += 1
        except StopIteration as done:
            text = done.value
            break
    assert text.startswith("word word")
    assert len(asked) >= len(maps) + 1
    assert pauses == len(asked) - 1  # a pause after every model call but the final one
    assert all(tokens <= limit for tokens, limit in asked)


def test_a_prompt_too_long_for_the_model_is_refused_with_the_numbers(history):
    record_description(history, "porch", T0 + 10, "A cat crosses the lawn.")
    timeline = build_timeline(history, Period(T0, T0 + 3600, UTC), ["porch"])
    with pytest.raises(PromptTooLongError) as err:
        plan_summary(timeline, Request("daily", ("porch",), "What happened?", 300), budget(kv_len=320))
    assert str(err.value) == ("summary 'daily': with answers of up to 300 tokens, a prompt may take 20 tokens (the"
                              " model's largest prefill is 256, its KV cache 320), too few to summarise the timeline"
                              " in parts; lower max_new_tokens, or shorten the prompt or the system text")


# --------------------------------------------------------------------------- running jobs


def test_an_empty_period_publishes_nothing_seen_without_the_model(history, tmp_path):
    published = []
    with RunLog(history.path) as runlog:
        summarizer = Summarizer(history, NoModel(), runlog, ["porch", "garage"], publish=lambda summary, _id: published.append(summary),
                                clock=lambda: T0 + 5)
        summary = summarizer.run(job(period="2h"), Fire("daily", T0, T0 - 86400))
        assert summary.text == "Nothing was seen on porch, garage from 2025-06-02 06:00 to 08:00 UTC."
        assert summary.counts == {"descriptions": 0, "answers": 0, "alerts": 0, "timeline": 0, "model_calls": 0}
        assert published == [summary]
        assert [r.summary for r in history.summaries(0, T0 + 10)] == [summary]
        assert runlog.last("daily") == LastRun("daily", T0, T0 - 7200, T0, T0 + 5)


def test_the_last_run_survives_a_restart_so_periods_neither_gap_nor_repeat(history):
    fire1, fire2 = Fire("daily", T0, T0 - 86400), Fire("daily", T0 + 86400, T0)
    with RunLog(history.path) as runlog:
        Summarizer(history, NoModel(), runlog, ["porch"], clock=lambda: T0).run(job(), fire1)
    with RunLog(history.path) as runlog:  # a restart: new connection, new summarizer
        summarizer = Summarizer(history, NoModel(), runlog, ["porch"], clock=lambda: T0 + 86400)
        assert summarizer.run(job(), fire1) is None  # that fire already ran
        second = summarizer.run(job(), fire2)
        assert (second.period_start, second.period_end) == (T0, T0 + 86400)
        assert summarizer.run(job(), fire2) is None
    assert [r.summary.period_end for r in history.summaries(0, T0 + 10 * 86400)] == [T0, T0 + 86400]


class WordyModel(NoModel):
    """Answers every question with as many words as it may, and notes each call in `log`."""

    def __init__(self, log: list[str]):
        super().__init__()
        self.log = log

    def ask(self, frames, prompts, on_token=None, stop=None):
        from types import SimpleNamespace

        self.log.append("summary step")
        [p] = prompts
        answer = SimpleNamespace(text=" ".join(["word"] * p.max_new_tokens), stop_reason="length", prompt_tokens=0)
        return SimpleNamespace(answers=[answer])


def test_windows_queued_during_a_long_summary_go_between_its_model_calls(history):
    long_history(history, T0, hours=6)
    order: list[str] = []
    cfg = Config.model_validate({"model": {"dir": "unused"}, "state_dir": str(history.path.parent),
                                 "cameras": [{"name": "porch", "source": "porch.mp4"},
                                             {"name": "garage", "source": "garage.mp4"}],
                                 "summaries": [{"id": "daily", "cron": "0 20 * * *", "timezone": "UTC",
                                                "period": "6h", "max_new_tokens": 48}]})
    app = assemble(cfg, WordyModel(order), {"porch": None, "garage": None}, history)
    queue = app.queue
    fire = Fire("daily", T0 + 6 * 3600, None)
    queue.put_summary(SummaryJob("daily", app.pipeline.summarizer.start(cfg.summaries[0], fire)))

    def work_one() -> None:  # what the NPU worker does with each job
        item = queue.get(timeout=0)
        if isinstance(item, WindowJob):
            order.append("window")
        else:
            app.jobs.handle(item, app.npus[0])
        queue.done()

    work_one()
    queue.put_window(WindowJob(Window("porch", T0, T0 + 8, ())))  # a window arrives meanwhile
    work_one()
    work_one()
    assert order == ["summary step", "window", "summary step"]
    while queue.depth:
        work_one()
    [summary] = [row.summary for row in history.summaries(0, time.time() + 1)]
    assert summary.counts["model_calls"] == order.count("summary step") > 5
    assert summary.text.startswith("word word")
