"""Full-text search over history (daemon/state/search.py, daemon/state/browse.py): the FTS5 index
follows history's writes and retention (events' stories too), takes any text a person types, and
filters by camera and time."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from daemon.state.browse import Browser
from daemon.state.events import EventStore
from daemon.state.history import History
from daemon.state.search import match_expression
from daemon.types import Alert, Description, Event, Summary
from histories import record_description

T0 = 1_750_000_000.0


@pytest.fixture
def files(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path) as history, Browser(path) as browser:
        yield history, browser


def texts(hits):
    return [h.text for h in hits]


def test_a_description_is_found_as_soon_as_it_is_recorded_and_gone_when_pruned(files):
    history, browser = files
    record_description(history, "porch", T0, "A red car parks by the gate.")
    record_description(history, "yard", T0 + 60, "A cat crosses the lawn.")
    hits = browser.search("red car")
    assert [(h.kind, h.camera, h.ts, h.text) for h in hits] == [("result", "porch", T0, "A red car parks by the gate.")]
    assert hits[0].window_id == browser.timeline(camera="porch")[0].window.id
    assert browser.search("Lawn") == browser.search("lawn") != []  # case folded
    assert history.prune(now=T0 + 30, keep_seconds=0) > 0  # the porch rows go
    assert browser.search("red car") == []
    assert texts(browser.search("cat")) == ["A cat crosses the lawn."]
    count = browser._run(lambda db: db.execute("SELECT count(*) FROM search").fetchone()[0], "count")
    assert count == 1  # nothing left behind in the index


def test_alerts_and_summaries_are_searched_by_text_and_by_rule(files):
    history, browser = files
    history.record_alert(Alert("porch", "parcel", "warning", "A parcel was left at the door.", T0, T0 - 8, T0))
    history.record_summary(Summary("evening", T0 - 3600, T0, "Quiet evening; one parcel delivered.", T0 + 1,
                                   {"porch": 3}, ("porch", "yard")))
    hits = browser.search("parcel")
    assert [(h.kind, h.camera) for h in hits] == [("summary", "porch, yard"), ("alert", "porch")]
    assert [h.kind for h in browser.search("warning")] == ["alert"]  # the rule and severity are words too
    assert [h.kind for h in browser.search("parcel", kinds=("alert",))] == ["alert"]


def test_rows_recorded_before_the_index_existed_are_indexed_when_it_is_created(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path) as history:
        record_description(history, "porch", T0, "A fox near the bushes at dusk.")
    with Browser(path) as browser:
        assert texts(browser.search("fox")) == ["A fox near the bushes at dusk."]


def test_any_text_is_a_valid_query(files):
    history, browser = files
    record_description(history, "porch", T0, 'He said "hello" AND left (quickly) - NEAR the door*.')
    for query in ['"', "AND", "NEAR(", "door*", "col:umn", "-left", "((", "hello\" OR \"x", "né"]:
        browser.search(query)  # never an FTS5 syntax error
    assert texts(browser.search('"hello" (left)')) != []
    assert browser.search("  ... !! ") == []
    assert match_expression("red ca") == '"red" "ca"*'
    assert match_expression("?!") is None


def test_newest_first_filtered_by_camera_and_time(files):
    history, browser = files
    for i in range(30):
        record_description(history, "porch" if i % 2 else "yard", T0 + 60 * i, f"visitor number {i}")
    hits = browser.search("visitor", limit=5)
    assert texts(hits) == [f"visitor number {i}" for i in (29, 28, 27, 26, 25)]
    assert texts(browser.search("visitor", camera="yard", limit=3)) == [f"visitor number {i}" for i in (28, 26, 24)]
    hits = browser.search("visitor", since=T0 + 60 * 10, until=T0 + 60 * 13)
    assert texts(hits) == [f"visitor number {i}" for i in (12, 11, 10)]
    assert browser.search("visitor", since=T0 + 60 * 100) == []


def test_the_index_lives_in_the_history_file_under_its_own_schema_version(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path), Browser(path):
        pass
    db = sqlite3.connect(path)
    versions = dict(db.execute("SELECT component, version FROM schema_version").fetchall())
    assert versions["search"] == 1 and versions["history"] >= 1


def event(event_id: str, camera: str, start: float, story: str | None = None, **fields) -> Event:
    ended = {"state": "ended", "end": start + 20, "ended_by": "quiet"} if story is not None else {}
    return Event(event_id, camera, start, start + 20, story=story, **{**ended, **fields})


def index_size(browser) -> int:
    return browser._run(lambda db: db.execute("SELECT count(*) FROM search").fetchone()[0], "count")


def test_a_story_is_found_once_its_event_ends_follows_its_changes_and_goes_with_it(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path) as history, EventStore(path) as store, Browser(path) as browser:
        record_description(history, "porch", T0, "A fox near the bushes.")
        opened = event("e1", "porch", T0 - 8, descriptions=(Description(T0 - 8, T0, "A fox near the bushes."),))
        store.save(opened, T0 + 1)
        store.save(replace(opened, windows=2), T0 + 5)  # rewritten at every change, no story yet
        assert [h.kind for h in browser.search("fox")] == ["result"]  # the description only
        ended = replace(opened, state="ended", end=T0 + 12, ended_by="quiet", rules=("visitor",),
                        story="A fox trots across the lawn and leaves by the hedge.")
        store.save(ended, T0 + 20)
        store.save(ended, T0 + 21)  # saved again unchanged: still one entry
        hits = browser.search("hedge")
        assert [(h.kind, h.camera, h.event_id, h.text, h.window_id) for h in hits] == [
            ("event", "porch", "e1", ended.story, None)]
        assert hits[0].ts == T0 + 1  # when the event was first recorded (wall clock)
        assert [h.kind for h in browser.search("fox")] == ["event", "result"]
        assert [h.event_id for h in browser.search("visitor")] == ["e1"]  # the rules that fired are words too
        assert [h.kind for h in browser.search("story")] == ["event"]
        assert browser.search("hedge", camera="yard") == [] and browser.search("hedge", kinds=("result",)) == []
        assert index_size(browser) == 2
        store.save(replace(ended, story="A fox sits by the gate."), T0 + 30)  # a story told again
        assert browser.search("hedge") == [] and [h.event_id for h in browser.search("gate")] == ["e1"]
        assert index_size(browser) == 2
        assert store.prune(T0 + 100, keep_seconds=0) == 1
        assert browser.search("gate") == [] and index_size(browser) == 1  # the description stays (history's)


def test_stories_recorded_before_their_index_existed_are_indexed_when_it_is_created(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path), Browser(path) as browser:  # events never enabled: no events table, no stories
        assert browser.search("badger") == []
    with History(path), EventStore(path) as store:  # events enabled later; the page not running
        store.save(event("e1", "yard", T0, story="A badger digs under the fence."), T0)
    with Browser(path) as browser:
        assert [(h.kind, h.event_id) for h in browser.search("badger")] == [("event", "e1")]
        versions = dict(browser._run(lambda db: db.execute("SELECT component, version FROM schema_version")
                                     .fetchall(), "read"))
    assert versions["search_events"] == 1


def test_stories_are_newest_first_and_filtered_by_time_among_the_other_kinds(tmp_path):
    path = tmp_path / "history.sqlite"
    with History(path) as history, EventStore(path) as store, Browser(path) as browser:
        for i in range(6):
            if i % 2:
                record_description(history, "yard", T0 + 60 * i, f"a heron, number {i}")
            else:
                store.save(event(f"e{i}", "yard", T0 + 60 * i - 8, story=f"a heron lands, number {i}"),
                           T0 + 60 * i)
        assert texts(browser.search("heron", limit=3)) == ["a heron, number 5", "a heron lands, number 4",
                                                           "a heron, number 3"]
        hits = browser.search("heron", since=T0 + 60, until=T0 + 60 * 3)
        assert [(h.kind, h.text) for h in hits] == [("event", "a heron lands, number 2"),
                                                     ("result", "a heron, number 1")]
