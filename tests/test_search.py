"""Full-text search over history (daemon/state/search.py, daemon/state/browse.py): the FTS5 index
follows history's writes and retention, takes any text a person types, and filters by camera and time."""

from __future__ import annotations

import sqlite3

import pytest

from daemon.state.browse import Browser
from daemon.state.history import History
from daemon.state.search import match_expression
from daemon.types import Alert, Summary
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
