"""The page's reads of events (daemon/state/eventbrowse.py): the events timeline newest first with its
filters and paging, one event with its windows, answers, alerts and message ids, its keyframe."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from daemon.state.eventbrowse import EventBrowser
from daemon.state.events import EventStore
from daemon.state.history import History
from daemon.types import Alert, Description, Event, Frame, Result, Window

T0 = 1_750_000_000.0


def window(camera: str, start: float) -> Window:
    return Window(camera, start, start + 8, tuple(Frame(camera, start + i, i, np.zeros((2, 2, 3), np.uint8))
                                                  for i in range(8)))


def test_the_events_timeline_is_newest_first_filtered_and_paged(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path) as history, EventStore(path) as store, EventBrowser(path) as browser:
        assert browser.events() == []
        for i, (camera, rule, severity) in enumerate([("door", "person", "warning"), ("yard", None, None),
                                                      ("door", None, None), ("yard", "cat", "info")]):
            start = T0 + 100 * i
            history.record_window(window(camera, start), True, "region", start + 8)
            if rule:
                history.record_alert(Alert(camera, rule, severity, f"a {rule}", start + 8, start, start + 8))
            store.save(Event(f"e{i}", camera, start, start + 8, "ended", start + 20, "quiet",
                             rules=(rule,) if rule else (), story=f"story {i}"), start + 20)
        history.record_alert(Alert("door", "late", "critical", "after it", T0 + 60, T0 + 50, T0 + 58))  # outside
        assert [e.event.id for e in browser.events()] == ["e3", "e2", "e1", "e0"]
        assert [e.event.id for e in browser.events(camera="door")] == ["e2", "e0"]
        assert [e.event.id for e in browser.events(rule="cat")] == ["e3"]
        assert [e.event.id for e in browser.events(severity="warning")] == ["e0"]
        assert browser.events(severity="critical") == []  # that alert came after the event's span
        assert [e.event.id for e in browser.events(since=T0 + 100, until=T0 + 250)] == ["e2", "e1"]
        first = browser.events(limit=3)
        assert [e.event.id for e in browser.events(before=first[-1].seq)] == ["e0"]
        (e0,) = browser.events(rule="person")
        assert [(a.rule, a.severity, a.text) for a in e0.alerts] == [("person", "warning", "a person")]
        assert (e0.status, e0.keyframe) == ("ended", False)


def test_an_event_page_has_its_windows_answers_alerts_message_ids_and_keyframe(tmp_path):
    path = tmp_path / "history.sqlite"
    keyframes = tmp_path / "frames"
    with History(path) as history, EventStore(path, keyframes) as store, EventBrowser(path, keyframes) as browser:
        ids = [history.record_window(window("door", T0 + 8 * i), analysed, "region", T0 + 8 * i + 8)
               for i, analysed in enumerate([True, False, True, True])]
        history.record_window(window("yard", T0), True, "region", T0 + 8)  # another camera
        for i, window_id in enumerate(ids[:3]):
            history.record_result(window_id, Result("door", "description", "Describe.", T0 + 8 * i, T0 + 8 * i + 8,
                                                    T0 + 8 * i + 9, f"text {i}"), message_id=f"m-{i}")
        history.record_alert(Alert("door", "person", "warning", "a person", T0 + 9, T0, T0 + 8), message_id="a-1")
        opened = Event("ev", "door", T0, T0 + 24, reasons=("region",), zones=frozenset({"porch"}),
                       descriptions=(Description(T0, T0 + 8, "text 0"),), windows=2, snapshot_ts=T0 + 8)
        store.save(opened, T0 + 10)
        page = browser.event("ev")  # open: its windows so far (up to its last change)
        assert [w.id for w in page.windows] == [ids[0], ids[2]] and page.entry.status == "open"
        store.save_snapshot("ev", b"\xff\xd8a keyframe")
        store.save(replace(opened, state="ended", end=T0 + 32, ended_by="interrupted", story="A visit."), T0 + 40)
        page = browser.event("ev")
        assert [w.id for w in page.windows] == [ids[0], ids[2], ids[3]]  # analysed, on its camera, in its span
        assert [(r.window_id, r.result.text) for r in page.results] == [(ids[0], "text 0"), (ids[2], "text 2")]
        assert page.result_ids == ("m-0", "m-2")
        assert [a.alert.rule for a in page.alerts] == ["person"] and page.alert_ids == ("a-1",)
        assert (page.entry.status, page.entry.event.story, page.entry.keyframe) == ("interrupted", "A visit.", True)
        assert browser.keyframe("ev") == b"\xff\xd8a keyframe"
        assert browser.event("nope") is None and browser.keyframe("nope") is None
        assert store.prune(T0 + 100, 0) == 1
        assert browser.event("ev") is None and browser.keyframe("ev") is None


def test_without_an_events_table_there_are_no_events(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path), EventBrowser(path) as browser:
        assert browser.events() == [] and browser.event("e1") is None and browser.keyframe("e1") is None
