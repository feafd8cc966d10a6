"""Events end to end: a real RTSP camera (GStreamer's RTSP server looping a generated clip), the tiny
exported model, a real mosquitto; the daemon as `vlmwatch run` builds it (and, for the crash, as a
process killed with SIGKILL). Waits are on conditions (messages, rows), never on sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from clips import Scene, Thing, scene_frames, write_jpeg_frames, write_scene
from daemons import SYSTEM, running
from mosquitto import wait_until
from rtsp_camera import RtspServer, gstreamer_rtsp_missing

from daemon.cli import main
from daemon.config import load_config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.state.events import EventStore
from daemon.state.history import History

rtsp = pytest.mark.skipif(bool(gstreamer_rtsp_missing()), reason=str(gstreamer_rtsp_missing()))
EVENT, ACTIVITY, STORY = "vlmwatch/yard/event", "vlmwatch/yard/activity", "vlmwatch/yard/story"
FPS = 10


def visits(tmp_path: Path, duration: float, appear: float, leave: float) -> Path:
    """A still yard (no light drift) in which a box enters at `appear`, crosses, and leaves at `leave`;
    the RTSP server loops it, so the visit comes back every `duration` seconds."""
    scene = Scene(duration=duration, fps=FPS, noise=3.0, drift=0.0,
                  things=(Thing(appear, leave, (20, 100), (260, 100), appear, leave),))
    return write_jpeg_frames(tmp_path / "frames", scene_frames(scene))


def write_config(tmp_path: Path, tiny_model: Path, source: str, broker=None, rules: str | None = None,
                 **events) -> Path:
    config = {
        "model": {"dir": str(tiny_model), "backend": "onnxruntime", "system": SYSTEM},
        "cameras": [{"name": "yard", "source": source, "frames": 4, "span": 1.0, "stride": 1.0}],
        "prompts": {"max_new_tokens": 3},
        "events": {"end_after": 3.0, "max_length": 60.0, "update_every": 0, "max_new_tokens": 6, **events},
        "state_dir": str(tmp_path / "state"), "metrics": {"enabled": False},
    }
    if rules is not None:
        (tmp_path / "rules").mkdir(exist_ok=True)
        (tmp_path / "rules" / "rules.yaml").write_text(rules)
        config["rules"] = str(tmp_path / "rules")
    if broker is not None:
        config["mqtt"] = {"host": broker.host, "port": broker.port, "discovery": {"enabled": False}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def story_recording_engine(tiny_model: Path) -> tuple[Engine, list[list[float]]]:
    """The tiny model; the timestamps of the frames each story was told from are recorded."""
    engine = Engine(open_model(locate(tiny_model)), system=SYSTEM, max_new_tokens=3)
    told, prefill = [], engine.prefill

    def recording(frames, prompts=(), stop=None):
        if prompts and prompts[0].id == "story":
            told.append([f.ts for f in frames])
        return prefill(frames, prompts, stop)

    engine.prefill = recording
    return engine, told


def by_event(messages) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in messages:
        payload = json.loads(m.payload)
        out.setdefault(payload["event_id"], []).append(payload)
    return out


def ended(heard, count: int) -> bool:
    return sum(p["type"] == "end" for ps in by_event(heard.on(EVENT)).values() for p in ps) >= count


@rtsp
def test_a_visit_is_one_event_with_new_updates_and_an_end_told_from_frames_across_it(
        tmp_path, tiny_model, mosquitto, listen):
    server = RtspServer(visits(tmp_path, 16.0, 3.0, 9.0), fps=FPS).start()
    try:
        heard = listen(mosquitto, "vlmwatch/yard/#")
        engine, told = story_recording_engine(tiny_model)
        cfg = load_config(write_config(tmp_path, tiny_model, server.url(), mosquitto))
        with running(cfg, engine):
            heard.wait_for(lambda _: ended(heard, 2), 90, "two events' end")  # the loop brings the box back
    finally:
        server.stop()
    events = list(by_event(heard.on(EVENT)).items())
    first_id, first = events[0]
    second_id, second = events[1]
    assert first_id != second_id  # two separate visits: two events
    for messages in (first, second):
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("new") == kinds.count("end") == 1
        assert "update" in kinds  # descriptions arrived while it was open
    end = first[-1]["after"]
    assert end["ended_by"] == "quiet" and end["story_from"] == "model" and end["story"]
    assert end["data"]["windows"] >= 3 and end["data"]["descriptions"]
    assert first[-1]["story"] == end["story"]
    # the story's frames are spread across the whole event, not its last seconds
    with EventStore(tmp_path / "state" / "history.sqlite") as store:
        record = store.get(first_id)
        items = store.items(first_id)
    assert record.state == "ended" and record.story == end["story"] and len(items["window"]) >= 3
    frames = told[0]
    assert len(frames) == 4 and frames == sorted(frames)
    span = record.end - record.start
    assert record.start <= frames[0] < record.start + span / 3 and record.end - span / 3 < frames[-1] <= record.end
    # Home Assistant's activity went ON and OFF, and the last story is retained
    assert [m.payload for m in heard.on(ACTIVITY)][:2] == [b"ON", b"OFF"]
    assert json.loads(heard.on(STORY)[0].payload)["event_id"] == first_id


def test_a_static_scene_gives_no_event(tmp_path, tiny_model):
    clip = write_scene(tmp_path / "static.mp4", Scene(duration=24.0, fps=FPS, noise=3.0, drift=0.0))
    config = write_config(tmp_path, tiny_model, str(clip))
    assert main(["run", "-c", str(config), "--once"]) == 0
    with History(tmp_path / "state" / "history.sqlite") as history, EventStore(history.path) as store:
        assert len(history.windows(0, 1e12)) >= 20  # it did watch
        assert store.find() == []


def test_a_recording_with_two_visits_gives_two_events(tmp_path, tiny_model, capsys):
    scene = Scene(duration=40.0, fps=FPS, noise=3.0, drift=0.0,
                  things=(Thing(4, 10, (20, 100), (260, 100), 4, 10), Thing(24, 30, (260, 60), (20, 60), 24, 30)))
    # a rule on the events' stories (any text): one alert per event, none per window
    rules = "- id: visit\n  match: {regex: '.'}\n  on: event\n  cooldown: 0s\n"
    config = write_config(tmp_path, tiny_model, str(write_scene(tmp_path / "visits.mp4", scene)), rules=rules)
    assert main(["run", "-c", str(config), "--once"]) == 0
    with History(tmp_path / "state" / "history.sqlite") as history, EventStore(history.path) as store:
        events = sorted(store.find(), key=lambda e: e.start)
        alerts = [a.alert for a in history.alerts(0, 1e12)]
        linked = [store.items(e.id)["alert"] for e in events]
    assert len(events) == 2 and all(e.state == "ended" and e.story for e in events)
    assert [(a.rule, a.window_start, a.window_end) for a in alerts] == [("visit", e.start, e.end) for e in events]
    assert all(e.rules == ("visit",) for e in events) and [len(ids) for ids in linked] == [1, 1]
    start = min(e.start for e in events) - 4.0  # media time of the file's first frame
    assert [round(e.start - start) for e in events] == [4, 24]
    # `vlmwatch events` lists them, newest first, and shows one whole
    capsys.readouterr()
    assert main(["events", "-c", str(config), "--since", "3650d", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["id"] for e in listed] == [events[1].id, events[0].id]
    assert main(["events", "-c", str(config), "--since", "3650d", "--camera", "door"]) == 0
    assert capsys.readouterr().out.strip() == "no events"
    assert main(["events", "-c", str(config), "--show", events[0].id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["story"] == events[0].story and shown["items"]["window"] and shown["keyframe"].endswith(".jpg")
    assert main(["events", "-c", str(config), "--show", "nope"]) == 2
    assert "no such event" in capsys.readouterr().err


@rtsp
def test_sigkill_during_an_event_closes_it_as_interrupted_with_everything_recorded(
        tmp_path, tiny_model, mosquitto, listen):
    server = RtspServer(visits(tmp_path, 120.0, 1.0, 119.0), fps=FPS).start()  # a long visit
    try:
        heard = listen(mosquitto, "vlmwatch/yard/#")
        config = write_config(tmp_path, tiny_model, server.url(), mosquitto)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "-c", str(config)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            heard.wait_for(lambda ms: sum(json.loads(m.payload)["type"] == "update" for m in ms
                                          if m.topic == EVENT) >= 2, 90, "an event with two updates")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        [(event_id, before)] = by_event(heard.on(EVENT)).items()
        assert [m["type"] for m in before][0] == "new" and "end" not in [m["type"] for m in before]
        with running(load_config(config)):
            heard.wait_for(lambda _: any(m["type"] == "end" for m in by_event(heard.on(EVENT)).get(event_id, [])),
                           60, "the interrupted event's end")
    finally:
        server.stop()
    end = by_event(heard.on(EVENT))[event_id][-1]
    assert end["type"] == "end" and end["after"]["ended_by"] == "interrupted"
    with History(tmp_path / "state" / "history.sqlite") as history, EventStore(history.path) as store:
        record = store.get(event_id)
        items = store.items(event_id)
        results = [r for r in history.results(0, 1e12, prompt_id="description") if r.id in items["result"]]
    assert record.state == "ended" and record.ended_by == "interrupted"
    # every description recorded for the event's windows before the kill is in the event
    assert results and {(r.result.window_start, r.result.text) for r in results} <= {
        (d.window_start, d.text) for d in record.descriptions}
    published = [d["text"] for m in before for d in m["after"]["data"]["descriptions"]]
    assert set(published) <= {d.text for d in record.descriptions}


@rtsp
def test_a_broker_outage_during_an_event_loses_no_event_message(tmp_path, tiny_model, mosquitto, listen):
    server = RtspServer(visits(tmp_path, 40.0, 2.0, 14.0), fps=FPS).start()
    try:
        heard = listen(mosquitto, "vlmwatch/yard/event", "vlmwatch/yard/activity", durable=True)
        cfg = load_config(write_config(tmp_path, tiny_model, server.url(), mosquitto))
        with running(cfg) as app:
            sent: list[tuple[str, str, str]] = []
            publish = app.publisher.publish_event

            def recording(kind, event, message_id=None, **kw):
                sent.append((kind, event.id, publish(kind, event, message_id, **kw)))
                return sent[-1][2]

            app.publisher.publish_event = recording
            wait_until(lambda: any(k == "new" for k, _, _ in sent), 60, "an event to open")
            event_id = next(e for k, e, _ in sent if k == "new")
            mosquitto.stop()  # the broker goes away during the event
            wait_until(lambda: (event_id, "end") in {(e, k) for k, e, _ in sent}, 60, "the event to end")
            mosquitto.start()
            ids = {m for _, e, m in sent if e == event_id}
            heard.wait_for(lambda ms: ids <= {json.loads(m.payload)["id"] for m in ms if m.topic == EVENT}, 60,
                           "every message of the event after the outage")
    finally:
        server.stop()
    kinds = [k for k, e, _ in sent if e == event_id]
    assert kinds[0] == "new" and kinds[-1] == "end" and "update" in kinds
    assert b"OFF" in [m.payload for m in heard.on(ACTIVITY)]
