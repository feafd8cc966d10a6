"""The web page (daemon/http/web.py, daemon/http/static/) in a real browser: Debian's chromium driven by
Playwright, against the real daemon (tiny model, ONNX Runtime, events on) fed by a generated clip in
which a box crosses the yard: one event, told as a story when the clip ends.

Set VLMWATCH_SCREENSHOT=docs/page.png to write the README's screenshot from this run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from daemon.cli import main
from daemon.config import Config
from daemon.state.events import EventStore
from daemon.state.history import History
from daemons import SYSTEM, running
from mosquitto import free_port

playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (tests/run.sh does)")

KEY = "sk-page-test"
ZONE = "Pacific/Auckland"  # far from the test machine's UTC: a time shown in UTC is caught


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_model, yard_clip):
    """The daemon with its page and an API key, after it has analysed the whole clip and told its events."""
    tmp = tmp_path_factory.mktemp("page")
    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model), "system": SYSTEM}, "timezone": ZONE,
        "cameras": [{"name": "yard", "source": str(yard_clip), "gate": {"heartbeat": 8}}],
        "prompts": {"max_new_tokens": 6}, "asks": {"per_minute": 0},
        "http": {"enabled": True, "port": free_port(), "api_key": KEY},
        "state_dir": str(tmp / "state"), "metrics": {"enabled": False}})
    with running(cfg) as app:
        app.url = f"http://127.0.0.1:{cfg.http.port}"
        app.cfg = cfg
        wait_for(lambda: app.watch.states()["yard"][0] == "ended" and app.queue.depth == 0 and app.pipeline.windows.latest.get("yard"))
        wait_for(lambda: (events := events_of(app)) and all(e.state == "ended" for e in events))
        yield app


def wait_for(condition, timeout=120.0):
    import threading

    done = threading.Event()
    for _ in range(int(timeout * 10)):
        if condition():
            return
        done.wait(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, daemon):
    """A page at phone width, its key already given once (kept in localStorage)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-GB")
    page = context.new_page()
    page.goto(daemon.url + "/")
    page.locator("#key-form").wait_for()  # the page asks for the key once
    page.fill("#key-input", KEY)
    page.press("#key-input", "Enter")
    page.locator("#key-form").wait_for(state="hidden")
    yield page
    context.close()


def history_of(daemon):
    with History(daemon.cfg.state_dir / "history.sqlite") as history:
        windows = history.windows(0, 1e12, camera="yard")
        results = history.results(0, 1e12, camera="yard")
    return windows, results


def events_of(daemon):
    """The events in history, newest first."""
    with EventStore(daemon.cfg.state_dir / "history.sqlite") as store:
        return store.find()


def linked_windows(daemon, event_id):
    """The ids of the windows history linked to the event when it ended (daemon.state.events)."""
    with EventStore(daemon.cfg.state_dir / "history.sqlite") as store:
        return store.items(event_id)["window"]


def api(daemon, path, key=KEY):
    request = urllib.request.Request(daemon.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_camera_grid_shows_the_picture_and_the_latest_description(page, daemon):
    windows, results = history_of(daemon)
    latest = results[-1].result
    card = page.locator("article[data-camera=yard]")
    card.locator(".description").wait_for()
    assert card.locator(".description").inner_text() == latest.text
    assert page.evaluate("document.querySelector('article[data-camera=yard] img').naturalWidth") > 0
    assert card.locator(".badge").inner_text() == "ended"  # the clip has been read to its end
    analysed = sum(w.analysed for w in windows)
    assert f"{analysed} analysed, {len(windows) - analysed} skipped" in card.inner_text()
    # times in the configured zone: the description's time as the API gives it in Pacific/Auckland
    said = api(daemon, "/api/cameras")["cameras"][0]["described_at_iso"]
    assert said.endswith(("+12:00", "+13:00"))
    assert said[11:19] in card.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
    assert page.locator("#footer").inner_text() == f"Times in {ZONE}"


def test_the_timeline_lists_the_analysed_windows_newest_first(page, daemon):
    windows, _ = history_of(daemon)
    analysed = [w for w in windows if w.analysed]
    page.click("nav >> text=Timeline")
    page.locator("ol.timeline > li[data-event]").first.wait_for()  # events first, while they are recorded
    page.select_option("select[name=of]", "windows")
    page.click("form.filters button[type=submit]")
    items = page.locator("ol.timeline > li:not([data-event])")
    items.first.wait_for()
    assert items.count() == len(analysed)
    links = [a.get_attribute("href") for a in page.locator("ol.timeline > li > div > a").all()]
    assert links == [f"#/window/{w.id}" for w in reversed(analysed)]
    page.click(f"a[href='#/window/{analysed[-1].id}'] >> nth=0")  # the window page: answers and the gate
    page.locator("h2 >> text=Answers").wait_for()
    assert analysed[-1].reason in page.inner_text("main")
    assert page.locator(".frames img").count() == len(analysed[-1].frame_ts)  # the latest window's frames are kept


def test_search_finds_a_word_of_a_description(page, daemon):
    _, results = history_of(daemon)
    words = [w for r in results for w in re.findall(r"[^\W\d_]{3,}", r.result.text)]
    assert words, "the tiny model said no word of three letters"
    word = words[0]
    page.click("nav >> text=Timeline")
    page.fill("input[name=q]", word)
    page.press("input[name=q]", "Enter")
    page.locator("#search-summary").wait_for()
    hits = page.locator("ol.timeline > li")
    stories = [e.story for e in events_of(daemon)]  # a story may say it too
    expected = [t for t in [r.result.text for r in results] + stories if word.lower() in t.lower()]
    assert 0 < hits.count() <= len(expected)
    assert word.lower() in hits.first.inner_text().lower()
    assert page.locator("ol.timeline mark").first.inner_text().lower().startswith(word.lower())


def test_the_timeline_lists_the_events_with_their_story_and_keyframe(page, daemon):
    events = events_of(daemon)
    assert events and all(e.story for e in events), "the clip's box crossing made no event with a story"
    page.click("nav >> text=Timeline")
    items = page.locator("ol.timeline > li[data-event]")
    items.first.wait_for()
    assert [items.nth(i).get_attribute("data-event") for i in range(items.count())] == [e.id for e in events]
    first = items.first
    assert first.locator(".story").inner_text() == events[0].story
    assert first.locator(".badge.status-ended").inner_text() == "ended"  # told when the clip ended
    assert f"{events[0].duration:.0f} s" in first.inner_text()
    assert page.evaluate("document.querySelector('ol.timeline li[data-event] img.thumb').naturalWidth") > 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.select_option("select[name=camera]", "yard")  # the filters apply to events too
    page.fill("input[name=rule]", "no-such-rule")
    page.click("form.filters button[type=submit]")
    page.locator("ol.timeline > li >> text=Nothing recorded yet.").wait_for()
    assert "of=events" in page.url and "rule=no-such-rule" in page.url


def story_word(story: str) -> str:
    """A word of the story as the index splits it: letters only (digits would join it), three or more."""
    words = [w for w in re.findall(r"[^\W_]+", story) if w.isalpha() and len(w) >= 3]
    assert words, f"the tiny model's story has no word of three letters: {story!r}"
    return max(words, key=len)


def test_search_finds_a_word_of_a_story_and_leads_to_its_event(page, daemon):
    event = events_of(daemon)[0]
    word = story_word(event.story)
    page.click("nav >> text=Timeline")
    page.fill("input[name=q]", word)
    page.press("input[name=q]", "Enter")
    page.locator("#search-summary").wait_for()
    hit = page.locator("ol.timeline > li", has=page.locator(".badge", has_text="event"))
    assert hit.count() == 1 and word.lower() in hit.inner_text().lower()
    found = api(daemon, f"/api/search?q={word}")["hits"]
    assert {"kind": "event", "event_id": event.id, "link": f"#/event/{event.id}"}.items() <= next(
        h for h in found if h["kind"] == "event").items()
    hit.locator("a").click()
    page.locator("h2 >> text=Story").wait_for()
    assert page.url.endswith(f"#/event/{event.id}")


def test_the_event_page_shows_its_story_windows_keyframe_and_changes(page, daemon):
    event = events_of(daemon)[0]
    windows = linked_windows(daemon, event.id)
    assert windows, "the event has no analysed window linked"
    page.goto(f"{daemon.url}/#/event/{event.id}")
    page.locator("h2 >> text=Windows").wait_for()
    assert page.locator("p.story").inner_text() == event.story
    links = [a.get_attribute("href") for a in page.locator("main table a[href^='#/window/']").all()]
    assert links == [f"#/window/{i}" for i in windows]
    assert page.evaluate("document.querySelector('.editor .pic img').naturalWidth") > 0  # the keyframe
    assert page.locator(".editor .pic svg rect[stroke-dasharray]").count() == (1 if event.box else 0)
    data = api(daemon, f"/api/events/{event.id}")
    best = next(w for w in data["windows"] if w["end"] == data["keyframe_ts"])  # the keyframe's window
    drawn = page.locator(".editor .pic svg rect:not([stroke-dasharray])")
    assert drawn.count() == len(best["regions"]) > 0
    assert [float(drawn.nth(i).get_attribute("x")) for i in range(drawn.count())] == [r["x"] for r in best["regions"]]
    assert float(drawn.first.get_attribute("stroke-width")) >= 1  # screen pixels (non-scaling stroke): visible
    _, results = history_of(daemon)
    ids = [r.id for r in results if r.window_id in windows]
    assert ids and page.locator("main table td.dim div").count() >= len(ids)  # a message id (or —) per answer
    page.click(f"a[href='#/window/{windows[-1]}']")
    page.locator("h2 >> text=Answers").wait_for()
    assert [w["id"] for w in data["windows"]] == windows and data["status"] == "ended"
    assert data["keyframe"] == f"/api/events/{event.id}/keyframe.jpg"


def test_a_polygon_drawn_in_the_editor_is_accepted_by_check_config(page, daemon, tmp_path, capsys):
    page.click("nav >> text=Masks & zones")
    svg = page.locator(".editor svg")
    svg.wait_for()
    box = svg.bounding_box()
    for x, y in ((0.1, 0.1), (0.6, 0.1), (0.6, 0.5)):  # a mask by mouse
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
    page.click("#close-polygon")
    page.select_option("select[aria-label='polygon kind']", "zone")  # a zone by keyboard only
    page.fill("input[aria-label='zone name']", "porch")
    svg.focus()
    for key in ["Enter", "Shift+ArrowDown", "Shift+ArrowDown", "Enter", "Shift+ArrowRight", "Enter", "Escape"]:
        page.keyboard.press(key)
    lines = page.input_value("#config-lines")
    assert "      porch: " in lines and "        - " in lines
    assert "would be ignored" in page.inner_text("#region-stats")
    config = daemon.cfg
    text = (f"model:\n  dir: {config.model.dir}\n  system: {SYSTEM}\ncameras:\n  - name: yard\n"
            f"    source: {config.cameras[0].source}\n{lines}state_dir: {tmp_path / 'state'}\n"
            "metrics:\n  enabled: false\n")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    capsys.readouterr()
    assert main(["check-config", "-c", str(path)]) == 0, capsys.readouterr()
    camera = Config.model_validate(__import__("yaml").safe_load(text)).cameras[0]
    (mask,) = camera.gate.masks  # where the mouse clicked, to a pixel of the shown picture
    assert [c for point in mask for c in point] == pytest.approx([0.1, 0.1, 0.6, 0.1, 0.6, 0.5], abs=0.005)
    assert camera.zones["porch"] == ((0.5, 0.5), (0.5, 0.7), (0.6, 0.7))


def test_a_wrong_key_gets_nothing(browser, daemon):
    context = browser.new_context()
    page = context.new_page()
    page.goto(daemon.url + "/")
    page.evaluate("localStorage.setItem('vlmwatch.key', 'sk-wrong')")
    page.reload()
    page.locator("#key-form").wait_for()
    assert "Incorrect API key" in page.inner_text("#key-error")
    assert page.locator("article").count() == 0 and "yard" not in page.inner_text("main")
    context.close()
    for path in ("/api/cameras", "/api/timeline", "/api/search?q=a", "/api/cameras/yard/picture.jpg", "/api/npu",
                 "/api/events", f"/api/events/{events_of(daemon)[0].id}"):
        for key in ("sk-wrong", None):
            with pytest.raises(urllib.error.HTTPError) as caught:
                api(daemon, path, key)
            assert caught.value.code == 401


def test_screenshot_for_the_readme(page, daemon, tmp_path):
    """The README's picture: a desktop-width view of the cameras, then of the editor."""
    page.set_viewport_size({"width": 900, "height": 560})
    page.goto(daemon.url + "/#/editor/yard")
    page.locator(".editor svg").wait_for()
    box = page.locator(".editor svg").bounding_box()
    for x, y in ((0.02, 0.04), (0.98, 0.04), (0.98, 0.16), (0.02, 0.16)):
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
    page.click("#close-polygon")
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    assert page.locator(".editor polygon").count() == 1
    assert page.evaluate("document.querySelector('.editor img').naturalWidth") > 0
    target = os.environ.get("VLMWATCH_SCREENSHOT")
    path = Path(target) if target else tmp_path / "page.png"
    picture = cv2.imdecode(np.frombuffer(page.screenshot(type="png"), np.uint8), cv2.IMREAD_COLOR)
    picture = (picture >> 4 << 4) + 8  # 16 levels a channel: the clip's noise would make a 360 KB file
    cv2.imwrite(str(path), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert path.stat().st_size < 200_000


def test_the_page_weighs_little(browser, daemon):
    """Bytes a first load of the cameras page transfers (the page's files, its JSON and the camera's picture),
    printed for docs/page.md; the page's own files stay under 40 KB."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(daemon.url + "/")
    page.evaluate(f"localStorage.setItem('vlmwatch.key', {KEY!r})")
    sizes: dict[str, int] = {}
    page.on("response", lambda r: r.url.startswith(daemon.url) and sizes.__setitem__(
        r.url.removeprefix(daemon.url), int(r.headers["content-length"])))  # bytes sent (no compression)
    page.reload()
    page.locator("article[data-camera=yard] img").wait_for()
    page.wait_for_load_state("networkidle")
    context.close()
    own = sum(n for url, n in sizes.items() if not url.startswith("/api/"))
    print(f"\npage weight: {sum(sizes.values())} bytes per load ({own} page files, "
          + ", ".join(f"{url} {n}" for url, n in sorted(sizes.items())) + ")")
    assert set(sizes) >= {"/", "/static/app.js", "/static/style.css", "/api/info", "/api/cameras"}
    assert any(url.startswith("/api/cameras/yard/picture.jpg?window=") for url in sizes)
    assert own < 40_000


def test_the_json_endpoints_say_what_is_wrong_with_a_request(daemon):
    def error(path):
        with pytest.raises(urllib.error.HTTPError) as caught:
            api(daemon, path)
        return caught.value.code, json.loads(caught.value.read())["error"]["message"]

    assert error("/api/timeline?since=yesterday") == (400, "since='yesterday' is not a date (YYYY-MM-DD), a date and "
                                                      "time (ISO-8601) or POSIX seconds")
    assert error("/api/timeline?limit=-3") == (400, "limit='-3' is not a positive whole number")
    assert error("/api/timeline?camera=garage") == (404, "there is no camera 'garage'; cameras: yard")
    assert error("/api/windows/999999")[0] == 404
    assert error("/api/events/1.000-000000") == (404, "there is no event '1.000-000000' in history (pruned, or "
                                                 "never recorded)")
    assert error("/api/events/a%20b")[0] == 404 and error("/api/events/1.000-000000/keyframe.jpg")[0] == 404
    assert error("/api/events?severity=info&until=soon") == (400, "until='soon' is not a date (YYYY-MM-DD), a date "
                                                             "and time (ISO-8601) or POSIX seconds")
    assert error("/api/search?q=" + "a" * 201)[0] == 400
    windows = api(daemon, "/api/timeline?limit=2")["windows"]
    assert len(windows) == 2 and windows[0]["id"] > windows[1]["id"]
    day = windows[0]["recorded_iso"][:10]  # a date is a day in the configured zone, `until` included
    assert api(daemon, f"/api/timeline?since={day}&until={day}&limit=2")["windows"] == windows


def test_without_a_key_only_this_machine_is_answered():
    from daemon.http.web import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("::ffff:127.0.0.1")
    assert not _loopback("192.168.1.20") and not _loopback("::ffff:10.0.0.2") and not _loopback(None)


def test_the_npu_and_alerts_pages(page, daemon):
    page.click("nav >> text=NPU")
    page.locator("main table").wait_for()
    text = page.inner_text("main")
    assert "npu0" in text and daemon.engine.kv_path in text
    analysed = sum(w.analysed for w in history_of(daemon)[0])
    assert f"{analysed} window(s) analysed" in text and " s per window" in text  # all within the last hour
    page.click("nav >> text=Alerts & summaries")
    page.locator("h2 >> text=Summaries").wait_for()
    assert "No alerts yet." in page.inner_text("main")  # this daemon has no rules
