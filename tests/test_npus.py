"""Several NPUs: one engine and one worker each (`model.devices`), against the tiny ONNX model.

Windows go to whichever NPU is free and none is lost or analysed twice; a
camera's questions go to the NPU holding its prefix; a summary step runs on the
engine of the NPU that takes it; the single-NPU default is unchanged.
"""

import threading
import time

import numpy as np
import pytest
from histories import record_description

from daemon.cli import main
from daemon.config import Config
from daemon.config.model import ModelSettings
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.errors import ConfigError
from daemon.mqtt.messages import AskRequest
from daemon.service.build import assemble, open_engines
from daemon.service.metrics import Metrics
from daemon.service.workqueue import SummaryJob, WindowJob
from daemon.state.history import History
from daemon.summaries.runner import Fire
from daemon.types import Frame, Window
from daemon.video import SourceBase


class FastSource(SourceBase):
    """`count` windows of distinct frames, as fast as they are taken (a camera the NPUs cannot keep up with)."""

    def __init__(self, name, count, seed):
        self.name, self.count, self.seed, self.produced = name, count, seed, []

    def windows(self, stop):
        rng = np.random.default_rng(self.seed)
        for i in range(self.count):
            if stop.is_set():
                return
            frames = tuple(Frame(self.name, 8.0 * i + j, 2 * i + j, rng.integers(0, 255, (32, 32, 3), np.uint8))
                           for j in range(2))
            self.produced.append(8.0 * i)
            yield Window(self.name, 8.0 * i, 8.0 * i + 8, frames)


def config(tmp_path, cameras, model=None, **top):
    return Config.model_validate({
        "model": {"dir": "unused", **(model or {})}, "state_dir": str(tmp_path), "prompts": {"max_new_tokens": 2},
        "cameras": [{"name": c, "source": f"{c}.mp4", "frames": 2, "gate": {"enabled": False}} for c in cameras],
        **top})


def test_two_npus_share_cameras_without_losing_or_duplicating_a_window(tmp_path, tiny_model):
    cameras = ("porch", "garage", "yard")
    cfg = config(tmp_path, cameras)
    # sleep=True: each graph call takes its AX650N time, so windows pile up and both NPUs work
    engines = [Engine(open_model(locate(tiny_model), sleep=True), system="Watch.", max_new_tokens=2)
               for _ in range(2)]
    sources = {c: FastSource(c, 12, seed) for seed, c in enumerate(cameras)}
    metrics = Metrics()
    with History(tmp_path / "history.sqlite").open() as history:
        app = assemble(cfg, engines, sources, history, metrics=metrics)
        assert [n.label for n in app.npus] == ["npu0", "npu1"]
        assert app.run(once=True) == 0
        windows = history.windows(0, time.time() + 1)
        results = history.results(0, time.time() + 1)

    recorded = sorted((w.camera, w.start) for w in windows)
    assert recorded == sorted((c, s) for c in cameras for s in sources[c].produced)  # each exactly once
    assert len(recorded) == 36
    for w in windows:
        assert w.analysed or w.reason == "dropped: a newer window replaced it"
    for camera in cameras:  # a camera's windows are analysed in its order, each described once
        analysed = sorted((w for w in windows if w.camera == camera and w.analysed), key=lambda w: w.recorded)
        assert [w.start for w in analysed] == sorted(w.start for w in analysed) and analysed
        described = [r.result.window_start for r in results if r.result.camera == camera]
        assert sorted(described) == [w.start for w in analysed]
    jobs = {npu: metrics.npu_jobs.labels(npu=npu, kind="window")._value.get() for npu in ("npu0", "npu1")}
    assert jobs["npu0"] > 0 and jobs["npu1"] > 0
    assert jobs["npu0"] + jobs["npu1"] == sum(w.analysed for w in windows)
    assert metrics.npu_busy_seconds.labels(npu="npu1")._value.get() > 0


@pytest.fixture
def two_npus(tmp_path, tiny_model):
    cfg = config(tmp_path, ["porch"], {"dir": str(tiny_model), "devices": [None, None], "system": "Watch."},
                 summaries=[{"id": "daily", "cron": "0 20 * * *", "timezone": "UTC", "period": "1h",
                             "max_new_tokens": 2}])
    engines = open_engines(cfg.model, max_new_tokens=2)
    with History(tmp_path / "history.sqlite").open() as history:
        closers = []
        yield assemble(cfg, engines, {"porch": None}, history, closers=closers)
        for close in closers:
            close()


def window(seed=0):
    rng = np.random.default_rng(seed)
    return Window("porch", 10.0, 18.0,
                  tuple(Frame("porch", 10.0 + i, i, rng.integers(0, 255, (32, 32, 3), np.uint8)) for i in range(2)))


def test_a_question_goes_to_the_npu_that_holds_its_cameras_prefix(two_npus):
    app = two_npus
    first, second = (npu.engine.model.meter for npu in app.npus)
    app.jobs.handle(WindowJob(window(), "test"), app.npus[1])
    assert app.pipeline.windows.latest["porch"].npu == 1
    before = (first.ms, second.ms)
    app.pipeline.asks.admit(AskRequest("porch", "q1", "Is anyone there?"))
    assert app.queue.get(0, npu=0) is None  # npu0 does not hold the prefix
    job = app.queue.get(0, npu=1)
    app.jobs.handle(job, app.npus[1])
    app.queue.done(npu=1)
    assert first.ms == before[0]  # npu0 did nothing
    assert second.ms > before[1]
    [asked] = [r.result for r in app.history.results(0, time.time() + 1) if r.result.prompt_id == "ask-q1"]
    assert asked.window_start == 10.0 and asked.timings.generated == 2


def test_a_summary_step_runs_on_the_engine_of_the_npu_that_takes_it(two_npus):
    app = two_npus
    now = time.time()
    for k in range(3):
        record_description(app.history, "porch", now - 600 + 60 * k, f"A cat crosses the lawn, scene {k}.")
    job = app.config.summaries[0]
    first, second = (npu.engine.model.meter for npu in app.npus)
    app.queue.put_summary(SummaryJob(job.id, app.pipeline.summarizer.start(job, Fire(job.id, now, None))))
    work = app.queue.get(0, npu=1)
    app.jobs.handle(work, app.npus[1])
    app.queue.done(npu=1)
    assert second.ms > 0 and first.ms == 0  # the step ran on npu1's engine only
    while (work := app.queue.get(0, npu=0)) is not None:  # any further steps: on npu0
        app.jobs.handle(work, app.npus[0])
        app.queue.done(npu=0)
    [summary] = [row.summary for row in app.history.summaries(0, time.time() + 1)]
    assert summary.job == "daily" and summary.counts["model_calls"] >= 1


def test_open_engines_opens_one_engine_per_device_and_one_by_default(tiny_model):
    assert len(open_engines(ModelSettings(dir=tiny_model), max_new_tokens=2)) == 1
    engines = open_engines(ModelSettings(dir=tiny_model, devices=[None, None, None]), max_new_tokens=2)
    assert len({id(e) for e in engines}) == 3 and len({id(e.llm) for e in engines}) == 3


def test_device_ids_for_onnx_runtime_are_refused_with_what_to_write(tiny_model):
    with pytest.raises(ConfigError, match=r"model.devices: devices \[0, 1\]: ONNX Runtime has no device ids.*"
                                          r"write devices: \[null, null\]"):
        open_engines(ModelSettings(dir=tiny_model, devices=[0, 1]))


def test_check_config_reports_devices_that_do_not_suit_the_model(tmp_path, tiny_model, capsys):
    path = tmp_path / "config.yaml"
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    path.write_text(f"model:\n  dir: {tiny_model}\n  devices: [0, 1]\ncameras:\n  - name: yard\n    source: {clip}\n"
                    f"state_dir: {tmp_path}\n")
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{path}:3: model.devices: devices [0, 1]: ONNX Runtime has no device ids")


@pytest.mark.parametrize("model, message", [
    ({"devices": [0], "device_id": 1}, "give either device_id (one M.2 card) or devices (a list of NPUs), not both"),
    ({"devices": [None, 2, 2]}, "devices [None, 2, 2]: each M.2 card may be listed once"),
    ({"devices": []}, "List should have at least 1 item"),
])
def test_bad_device_lists_are_config_errors(model, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        ModelSettings(dir="x", **model)


def test_the_board_npu_is_listed_once_and_cards_by_number():
    assert ModelSettings(dir="x").device_list == [None]
    assert ModelSettings(dir="x", device_id=2).device_list == [2]
    assert ModelSettings(dir="x", devices=[None, 0, 1]).device_problem("axmodel") is None
    assert "list null at most once" in ModelSettings(dir="x", devices=[None, None]).device_problem("axmodel")


def test_run_with_two_onnx_engines_end_to_end(tmp_path, tiny_model, yard_clip, caplog):
    path = tmp_path / "config.yaml"
    path.write_text(
        f"model:\n  dir: {tiny_model}\n  devices: [null, null]\n  system: You watch a camera.\n"
        f"cameras:\n  - name: yard\n    source: {yard_clip}\n    gate: {{enabled: false}}\n"
        f"  - name: porch\n    source: {yard_clip}\n    gate: {{enabled: false}}\n"
        f"prompts:\n  max_new_tokens: 4\nstate_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
    caplog.set_level("INFO", logger="daemon")
    assert main(["run", "-c", str(path), "--once"]) == 0
    assert "2 camera(s), model vlmwatch-tiny-internvl-numpy-seed0 on npu0, npu1" in caplog.text
    with History(tmp_path / "state" / "history.sqlite").open() as history:
        windows = history.windows(0, time.time() + 1)
        results = history.results(0, time.time() + 1)
    assert sorted(w.camera for w in windows) == ["porch"] * 5 + ["yard"] * 5  # 40 s in 8 s windows, each once
    assert all(w.analysed for w in windows)  # recordings wait for an NPU: nothing dropped
    assert len(results) == 10


def test_a_summary_run_asks_the_engine_each_step_is_given():
    """A summary's model calls run on the NPU whose worker took the step: the engine is an argument."""
    from daemon.summaries.runner import SummaryRun

    asked = []

    def steps(engine_for):
        asked.append(engine_for())
        yield
        asked.append(engine_for())
        return "the summary"

    run = SummaryRun(steps, "planning engine")
    assert run.step("npu1 engine") is True and asked == ["npu1 engine"]
    assert run.step("npu0 engine") is False and asked == ["npu1 engine", "npu0 engine"]
    assert run.summary == "the summary"
