"""The events table: saved at every change, linked to windows/results/alerts, closed as interrupted after a
crash, searched, pruned with its keyframes."""

import numpy as np

from daemon.state.events import EventStore
from daemon.state.history import History
from daemon.types import Alert, Description, Event, Frame, Result, Window


def window(t: float, camera="door") -> Window:
    return Window(camera, t, t + 8, tuple(Frame(camera, t + i, i, np.zeros((2, 2, 3), np.uint8)) for i in range(8)))


def test_an_event_round_trips_links_its_rows_and_survives_a_crash(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path) as history, EventStore(path) as store:
        ids = [history.record_window(window(t), True, "region", 100.0) for t in (0.0, 8.0, 40.0)]
        history.record_window(window(8.0, "yard"), True, "region", 100.0)
        result = history.record_result(ids[1], Result("door", "description", "q", 8.0, 16.0, 101.0, "a person"))
        late = history.record_result(ids[0], Result("door", "description", "q", 0.0, 8.0, 102.0, "a door opens"))
        history.record_alert(Alert("door", "person", "info", "a person", 101.0, 8.0, 16.0))
        event = Event("0.000-abc", "door", 0.0, 16.0, reasons=("region",), zones=frozenset({"porch"}),
                      rules=("person",), descriptions=(Description(8.0, 16.0, "a person"),), windows=2)
        store.save(event, 100.0)
        store.save_snapshot(event.id, b"\xff\xd8jpeg")
        assert store.get(event.id) == event
    # killed here: the event is still open; at the next start it is closed as interrupted
    with History(path) as history, EventStore(path) as store:
        [closed] = store.interrupt_open(200.0)
        assert (closed.state, closed.ended_by, closed.end) == ("ended", "interrupted", 16.0)
        assert closed.descriptions == (Description(0.0, 8.0, "a door opens"),) + event.descriptions  # killed before
        assert closed.rules == ("person",)
        assert store.get(event.id) == closed
        assert store.items(event.id) == {"window": ids[:2], "result": [result, late], "alert": [1]}
        assert store.snapshot_path(event.id).read_bytes() == b"\xff\xd8jpeg"
        assert store.interrupt_open(201.0) == []


def test_find_by_camera_rule_and_text_and_prune_with_keyframes(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path), EventStore(path) as store:
        for i, (camera, rule, story) in enumerate([("door", "person", "A parcel was left"),
                                                   ("yard", None, "A cat walked by"),
                                                   ("door", None, "Nobody, a shadow")]):
            event = Event(f"e{i}", camera, 100.0 * i, 100.0 * i + 20, "ended", 100.0 * i + 20, "quiet",
                          rules=(rule,) if rule else (), story=story,
                          descriptions=(Description(0, 8, "a \"quoted\" thing"),))
            store.save(event, 1000.0 + i)
            store.save_snapshot(event.id, b"jpeg")
        assert [e.id for e in store.find(camera="door")] == ["e2", "e0"]
        assert [e.id for e in store.find(rule="person")] == ["e0"]
        assert [e.id for e in store.find(text="PARCEL")] == ["e0"]
        assert [e.id for e in store.find(text='"quoted"')] == ["e2", "e1", "e0"]
        assert [e.id for e in store.find(since=50, until=150)] == ["e1"]
        assert store.prune(1001.5, 0.0) == 2
        assert [e.id for e in store.find()] == ["e2"]
        assert sorted(p.name for p in store.keyframes.iterdir()) == ["e2.jpg"]


def test_a_summary_reads_event_stories_instead_of_their_windows_descriptions(tmp_path):
    from datetime import timezone

    from histories import record_description

    from daemon.summaries.timeline import Period, build_timeline, entry_line

    t0 = 1_750_000_000.0
    path = tmp_path / "history.sqlite"
    with History(path) as history, EventStore(path) as store:
        for i, text in enumerate(["A man walks up.", "He leaves a parcel.", "He walks away."]):
            record_description(history, "porch", t0 + 8 * (i + 1), text)  # windows t0 .. t0 + 24
        record_description(history, "porch", t0 + 600, "The porch is empty.")  # no event: stays
        event = Event("e1", "porch", t0, t0 + 24, "ended", t0 + 24, "quiet", story="A man delivered a parcel.")
        store.save(event, t0 + 60)
        period = Period(t0 - 10, t0 + 3600, timezone.utc)
        timeline = build_timeline(history, period, ["porch"], store)
        assert [entry_line(e, period) for e in timeline.entries] == [
            f"{period.clock(t0 + 60)} porch EVENT: A man delivered a parcel.",
            f"{period.clock(t0 + 600)} porch: The porch is empty.",
        ]
        assert timeline.counts == {"descriptions": 1, "answers": 0, "alerts": 0, "events": 1}
        # without events (or before any): every description, as before
        assert len(build_timeline(history, period, ["porch"]).entries) == 4


def test_a_clean_stop_ends_open_events_as_shutdown(tmp_path, tiny_model):
    from daemon.config import load_config
    from daemon.engine.bundle import locate, open_model
    from daemon.engine.engine import Engine
    from daemon.service.build import assemble
    from daemon.types import Region

    class Published:
        def __init__(self):
            self.events = []

        def publish_event(self, kind, event, message_id=None, before=None, snapshot=None):
            self.events.append((kind, event.id, event.ended_by))

    (tmp_path / "config.yaml").write_text(f"model:\n  dir: {tiny_model}\ncameras:\n  - name: yard\n"
                                          f"    source: {tmp_path / 'clip.mp4'}\nstate_dir: state\n")
    cfg = load_config(tmp_path / "config.yaml")
    history = History(cfg.state_dir / "history.sqlite").open()
    publisher = Published()
    app = assemble(cfg, Engine(open_model(locate(tiny_model)), system="You watch."), {"yard": None}, history,
                   publisher=publisher)
    try:
        moved = (Region(0.1, 0.1, 0.2, 0.2, 0.04),)
        events = app.pipeline.events
        events.seen(Window("yard", 0.0, 8.0, window(0.0).frames, 0.04, moved), True, "region 4 %")
        events.seen(Window("yard", 8.0, 16.0, window(8.0).frames, 0.04, moved), True, "region 4 %")
        [(kind, event_id, _)] = publisher.events
        assert kind == "new"
        events.shutdown()  # what Daemon.shutdown does once the NPU workers are done
        assert publisher.events[-1] == ("end", event_id, "shutdown")
        assert events.store.get(event_id).state == "ended"
    finally:
        app.pipeline.events.store.close()
        history.close()
