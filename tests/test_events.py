"""The pure event tracker and the story's frame reservoir: times in, transitions out, no clock, no sleeps."""

import random

import numpy as np
import pytest

from daemon.config.events import EventSettings
from daemon.events.book import EventBook
from daemon.events.reservoir import FrameReservoir
from daemon.events.tracker import EventTracker, Sighting, sighting
from daemon.types import Frame, Region, Window

SETTINGS = EventSettings(end_after=20, max_length=120, update_every=10)


def seen(t: float, changed: bool, camera="door", trigger=None, change=0.01) -> Sighting:
    return Sighting(camera, t, t + 8, changed, "region 1 %" if changed else "static", trigger=trigger,
                    change=change if changed else 0.0, box=(0.1, 0.1, 0.2, 0.2) if changed else None)


def run(tracker, pattern: str, camera="door", t0=1000.0):
    """One window per character every 8 s: '#' changed, '.' static; the transitions' kinds."""
    kinds = []
    for i, c in enumerate(pattern):
        kinds += [(t.kind, t.event.id) for t in tracker.see(seen(t0 + 8 * i, c == "#", camera))]
    return kinds


def test_an_activity_of_several_windows_is_one_event_that_ends_after_end_after_of_quiet():
    tracker = EventTracker(SETTINGS, random.Random(1))
    kinds = run(tracker, "..###.#....")
    assert [k for k, _ in kinds] == ["new", "closing"]
    assert kinds[0][1] == kinds[1][1]
    event = tracker.closing()[0]
    assert (event.start, event.last_change, event.end, event.windows) == (1016.0, 1056.0, 1056.0, 4)
    assert event.ended_by == "quiet" and event.state == "closing"
    [end] = tracker.told(event.id, "a person came and went", "model")
    assert end.kind == "end" and end.event.story == "a person came and went" and end.event.state == "ended"
    assert tracker.closing() == []


def test_two_visits_are_two_events_and_a_static_scene_none():
    tracker = EventTracker(SETTINGS, random.Random(2))
    kinds = run(tracker, "##.....##.....")
    assert [k for k, _ in kinds] == ["new", "closing", "new", "closing"]
    assert kinds[0][1] != kinds[2][1]
    assert run(EventTracker(SETTINGS), "." * 50) == []


def test_a_heartbeat_or_first_window_is_not_activity_but_a_trigger_is():
    frames = tuple(Frame("door", i, i, np.zeros((4, 4, 3), np.uint8)) for i in range(8))
    moved = (Region(0.1, 0.2, 0.1, 0.1, 0.01),)
    assert not sighting(Window("door", 0, 8, frames, 0.0), True, "heartbeat: 300 s since last analysis").changed
    assert not sighting(Window("door", 0, 8, frames, None), True, "first window").changed
    assert not sighting(Window("door", 0, 8, frames, 0.01, moved), False, "static: ...").changed
    assert sighting(Window("door", 0, 8, frames, 0.01, moved), True, "region 1.00 % at 1,2,3,4").changed
    assert sighting(Window("door", 0, 8, frames, 0.0, trigger="doorbell"), True, "trigger: doorbell").changed


def test_max_length_ends_a_long_event_and_the_next_change_opens_another():
    tracker = EventTracker(SETTINGS, random.Random(3))
    kinds = [k for k, _ in run(tracker, "#" * 20)]  # 160 s of change, max_length 120 s
    assert kinds == ["new", "closing", "new"]
    assert tracker.closing()[0].ended_by == "max_length"
    assert tracker.closing()[0].duration <= SETTINGS.max_length


def test_updates_are_rate_limited_and_a_new_rule_always_updates():
    tracker = EventTracker(SETTINGS, random.Random(4))
    run(tracker, "###")
    kinds = []
    for i, now in enumerate([100.0, 102.0, 104.0, 111.0]):
        kinds += [t.kind for t in tracker.described("door", 1000.0 + 8 * (i % 3), 1008.0, f"text {i}", now)]
    assert kinds == ["update", "changed", "changed", "update"]  # 102 and 104 are folded into 111's
    assert [t.kind for t in tracker.fired("door", "person", 1008.0, 112.0)] == ["update"]  # new rule: at once
    assert [t.kind for t in tracker.fired("door", "person", 1008.0, 113.0)] == ["changed"]  # the same rule again
    event = tracker.open_event("door")
    assert [d.text for d in event.descriptions] == ["text 0", "text 1", "text 2", "text 3"]
    assert event.rules == ("person",)
    assert tracker.described("door", 5000.0, 5008.0, "not in any event", 120.0) == []


def test_a_description_arriving_after_the_event_closed_still_joins_it():
    tracker = EventTracker(SETTINGS, random.Random(5))
    run(tracker, "##....")
    closing = tracker.closing()[0]
    assert [t.kind for t in tracker.described("door", 1008.0, 1016.0, "late words", 200.0)] == ["changed"]
    [end] = tracker.told(closing.id, None, None)
    assert [d.text for d in end.event.descriptions] == ["late words"]


def test_cameras_have_their_own_events():
    tracker = EventTracker(SETTINGS, random.Random(6))
    a = run(tracker, "##", camera="door")
    b = run(tracker, "##", camera="yard")
    assert [k for k, _ in a + b] == ["new", "new"]
    assert {e.camera for e in tracker.open_events()} == {"door", "yard"}


def frame(ts: float, size=8) -> Frame:
    return Frame("door", ts, int(ts), np.full((size, size, 3), int(ts) % 255, np.uint8))


def test_the_reservoir_is_bounded_and_spread_covers_the_whole_event():
    reservoir = FrameReservoir(24, random.Random(7))
    for second in range(600):  # 10 minutes at 1 frame a second, windows overlapping by half
        reservoir.offer([frame(second - 1), frame(second)] if second else [frame(0)])
    assert reservoir.seen == 600 and len(reservoir.frames) == 24
    picked = reservoir.spread(8, 0.0, 600.0)
    assert len(picked) == 8 and [f.ts for f in picked] == sorted(f.ts for f in picked)
    assert picked[0].ts < 150 and picked[-1].ts > 450  # beginning and end, not the last minute
    gaps = np.diff([f.ts for f in picked])
    assert gaps.max() < 200


def test_the_reservoir_keeps_only_the_model_input():
    reservoir = FrameReservoir(2, random.Random(8))
    small = np.zeros((448, 448, 3), np.uint8)
    reservoir.offer([Frame("door", 1.0, 1, np.zeros((360, 640, 3), np.uint8), small)])
    assert reservoir.frames[0].image is small and reservoir.nbytes == small.nbytes
    with pytest.raises(ValueError, match="at least 1 frame"):
        FrameReservoir(0, random.Random())


def window(t: float, changed: bool) -> Window:
    frames = tuple(frame(t + i) for i in range(8))
    regions = (Region(0.1, 0.1, 0.1, 0.1, 0.01),) if changed else ()
    return Window("door", t, t + 8, frames, 0.01 if changed else 0.0, regions)


def test_the_book_tells_a_long_event_from_frames_across_it_and_frees_them():
    book = EventBook(SETTINGS, random.Random(9), snapshot=lambda w: b"jpeg%d" % int(w.start))
    out = []
    for i in range(12):
        w = window(8.0 * i, i < 9)
        out += book.window(w, i < 9, "region 1 %" if i < 9 else "static")
    assert [t.kind for t in out] == ["new", "closing"]
    assert book.kept_bytes() > 0
    story = book.story(out[-1].event)
    assert len(story.frames) == 8 and story.text is None
    assert story.frames[0].ts < 12 and story.frames[-1].ts > 60
    assert book.kept_bytes() == 0
    assert book.take_snapshot(out[0].event.id) == b"jpeg0"


def test_a_one_window_event_reuses_its_description():
    book = EventBook(SETTINGS, random.Random(10))
    out = book.window(window(0.0, True), True, "region 1 %")
    out += book.window(window(24.0, False), False, "static")
    book.described("door", 0.0, 8.0, "a cat crosses", 50.0)
    story = book.story(out[-1].event)
    assert story.text == "a cat crosses" and story.frames == ()


def test_description_rate():
    book = EventBook(EventSettings(description_every=30, description_changed_only=True))
    sent = [book.publish_description("door", text, now) for text, now in
            [("a", 0), ("b", 10), ("b", 40), ("b", 80), ("c", 90)]]
    assert sent == [True, False, True, False, True]  # 10 s: too soon; 80: unchanged


def test_settings_refuse_a_max_length_shorter_than_end_after():
    with pytest.raises(ValueError, match="must be longer than end_after"):
        EventSettings(end_after=60, max_length=30)


def test_a_rule_on_events_reads_the_story_not_the_descriptions():
    from daemon.rules.match import Match
    from daemon.rules.model import STORY, Rule, find_result, rule_scope
    from daemon.types import Result

    rule = Rule("parcel", Match.build(any=["parcel"]), on="event")
    description = Result("door", "description", "q", 0, 8, 8, "a parcel is left")
    story = Result("door", STORY, "q", 0, 40, 41, "a man left a parcel")
    assert find_result(rule, [description]) is None and find_result(rule, [story]) is story
    assert find_result(Rule("parcel", rule.trigger), [description, story]) is description
    assert rule_scope("event", asks=False) == "event"
    with pytest.raises(ValueError, match="match rules only"):
        rule_scope("event", asks=True)
    with pytest.raises(ValueError, match="write window or event"):
        rule_scope("visit", asks=False)


def test_event_messages_and_home_assistant_entities():
    import json

    from daemon.config.mqtt import DiscoverySettings
    from daemon.mqtt.discovery import Discovery
    from daemon.mqtt.messages import Topics, event_json, story_json
    from daemon.types import Description, Event

    event = Event("1000.000-abcdef", "porch", 1000.0, 1040.0, "ended", 1040.0, "quiet", ("region",),
                  frozenset({"path"}), (), (0.1, 0.2, 0.3, 0.4), ("person",),
                  (Description(1000.0, 1008.0, "a man walks up"),), 5, "A man left a parcel.", "model", 1016.0, 0.02)
    message = event_json("end", event, "m1", before=None)
    assert (message["type"], message["event_type"], message["event_id"], message["story"]) == (
        "end", "end", event.id, "A man left a parcel.")
    after = message["after"]
    assert after["start_time"].startswith("1970-01-01T00:16:40") and after["duration"] == 40.0
    assert after["data"]["rules"] == ["person"] and after["data"]["descriptions"][0]["text"] == "a man walks up"
    assert story_json(event, "m2")["text"] == "A man left a parcel."
    json.dumps(message)  # plain JSON

    jinja2 = pytest.importorskip("jinja2")
    entities = {e.object_id: e for e in Discovery(DiscoverySettings(), Topics("vlmwatch"), ["porch"],
                                                  events=True).entities()}
    assert {"porch_event", "porch_story", "porch_activity", "porch_event_snapshot"} <= set(entities)
    assert "porch_event" not in {e.object_id for e in Discovery(DiscoverySettings(), Topics("vlmwatch"),
                                                                ["porch"]).entities()}
    fired = entities["porch_event"].config
    assert fired["state_topic"] == "vlmwatch/porch/event" and fired["event_types"] == ["end"]

    def render(template: str, payload: dict) -> str:
        return jinja2.Environment().from_string(template).render(value=json.dumps(payload), value_json=payload)

    assert json.loads(render(fired["value_template"], message)) == message  # fired at the end, story attached
    assert render(fired["value_template"], event_json("update", event, "m3")) == ""  # ignored by Home Assistant
    assert entities["porch_activity"].config["state_topic"] == "vlmwatch/porch/activity"
