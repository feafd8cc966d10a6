"""The web page and its JSON endpoints, on the HTTP API's server (docs/page.md).

    GET /                      the page (static files from daemon/http/static, no build step)
    GET /api/...               what the page shows, as JSON and JPEG; read-only

The page's files carry no data and are served to anyone who can reach the port;
every /api/ request needs the API key ('Authorization: Bearer KEY') when one is
configured, and without a key is answered only to clients on this machine
(loopback), whatever http.host says. Blocking work (SQLite, JPEG encoding) runs
on a small thread pool of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from daemon.http import pagejson as pj
from daemon.http.live import Live
from daemon.http.messages import ApiError
from daemon.state.browse import KINDS, MAX_LIMIT
from daemon.state.eventbrowse import EventBrowser
from daemon.times import zone_of

STATIC = Path(__file__).with_name("static")
HOUR = 3600.0
WORKERS = 2  # threads answering the page's queries: at most this many cores go to page views
EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")  # the shape of an event id (daemon.events.tracker)


class PageApi:
    """The page's routes over `browser` (history) and `live` (the running daemon); `events`: whether the
    daemon records events now (the timeline shows them first; past events are shown either way)."""

    def __init__(self, browser: EventBrowser, live: Live, api_key: str | None,
                 clock: Callable[[], float] = time.time, events: bool = False):
        self.browser, self.live, self._key, self.clock, self.events = browser, live, api_key, clock, events
        self.zone: tzinfo = zone_of(live.timezone)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="http-page")

    def close(self) -> None:
        """Stop answering; close the history connection (the server calls this when it stops)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.browser.close()

    def routes(self) -> list[web.AbstractRouteDef]:
        get = web.get
        return [
            get("/", self._index, name="page"),
            web.static("/static", STATIC, name="static"),
            get("/api/info", self._info, name="api-info"),
            get("/api/cameras", self._cameras, name="api-cameras"),
            get("/api/cameras/{camera}/picture.jpg", self._picture, name="api-picture"),
            get("/api/timeline", self._timeline, name="api-timeline"),
            get("/api/search", self._search, name="api-search"),
            get("/api/events", self._events, name="api-events"),
            get("/api/events/{id}", self._event, name="api-event"),
            get("/api/events/{id}/keyframe.jpg", self._keyframe, name="api-keyframe"),
            get("/api/windows/{id}", self._window, name="api-window"),
            get("/api/windows/{id}/frames/{index}.jpg", self._frame, name="api-frame"),
            get("/api/alerts", self._alerts, name="api-alerts"),
            get("/api/alerts/{id}/snapshot.jpg", self._snapshot, name="api-snapshot"),
            get("/api/summaries", self._summaries, name="api-summaries"),
            get("/api/npu", self._npu, name="api-npu"),
        ]

    # -- plumbing ------------------------------------------------------------------

    def authorize(self, request: web.Request) -> None:
        if self._key is None:
            if not _loopback(request.remote):
                raise ApiError(403, "this vlmwatch has no API key, so its page answers only on this machine: set "
                               "http.api_key (or api_key_file, ...) to open it to the network", code="no_api_key")
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key.encode()):
            raise ApiError(401, "Incorrect API key: send the key configured in vlmwatch's http section as "
                           "'Authorization: Bearer KEY' (the page asks for it once)", code="invalid_api_key")

    async def _call(self, request: web.Request, work: Callable[[], Any]) -> Any:
        self.authorize(request)
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def _camera(self, request: web.Request, name: str | None) -> str | None:
        if name is not None and name not in {c.name for c in self.live.cameras()}:
            raise ApiError(404, f"there is no camera {name!r}; cameras: "
                           f"{', '.join(c.name for c in self.live.cameras())}", code="no_such_camera")
        return name

    # -- the page ------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # -- JSON ----------------------------------------------------------------------

    async def _info(self, request: web.Request) -> web.Response:
        cameras = await self._call(request, self.live.cameras)
        return web.json_response({"timezone": self.live.timezone, "cameras": [c.name for c in cameras],
                                  "events": self.events, "search_kinds": list(KINDS), "max_limit": MAX_LIMIT})

    async def _cameras(self, request: web.Request) -> web.Response:
        def read():
            since = self.clock() - HOUR
            return [pj.camera_json(c, self.browser.camera_figures(c.name, since), self.zone)
                    for c in self.live.cameras()]

        return web.json_response({"cameras": await self._call(request, read)})

    async def _picture(self, request: web.Request) -> web.Response:
        name = self._camera(request, request.match_info["camera"])
        data = await self._call(request, lambda: self.live.picture(name))
        if data is None:
            raise ApiError(404, f"camera {name} has no analysed window yet", code="no_picture")
        cache = "private, max-age=3600" if "window" in request.query else "no-store"  # ?window=: that window's
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": cache})

    async def _timeline(self, request: web.Request) -> web.Response:
        q = Query(request, self.zone)
        options = dict(camera=self._camera(request, q.text("camera")), rule=q.text("rule"),
                       severity=q.text("severity"), since=q.time("since"), until=q.time("until", end_of_day=True),
                       before=q.integer("before"), skipped=q.flag("skipped"), limit=q.integer("limit") or 50)
        def read():
            entries = self.browser.timeline(**options)
            kept = [len(self.live.frames(e.window.camera, e.window.start) or ()) for e in entries]
            return entries, [pj.entry_json(e, self.zone, k) for e, k in zip(entries, kept)]

        entries, windows = await self._call(request, read)
        return web.json_response({"windows": windows, "next_before": entries[-1].window.id if entries else None})

    async def _events(self, request: web.Request) -> web.Response:
        q = Query(request, self.zone)
        options = dict(camera=self._camera(request, q.text("camera")), rule=q.text("rule"),
                       severity=q.text("severity"), since=q.time("since"), until=q.time("until", end_of_day=True),
                       before=q.integer("before"), limit=q.integer("limit") or 50)
        entries = await self._call(request, lambda: self.browser.events(**options))
        return web.json_response({"events": [pj.event_entry_json(e, self.zone) for e in entries],
                                  "next_before": entries[-1].seq if entries else None})

    async def _event(self, request: web.Request) -> web.Response:
        event_id = _event_id(request)
        page = await self._call(request, lambda: self.browser.event(event_id))
        if page is None:
            raise ApiError(404, f"there is no event {event_id!r} in history (pruned, or never recorded)",
                           code="no_such_event")
        return web.json_response(pj.event_page_json(page, self.zone))

    async def _keyframe(self, request: web.Request) -> web.Response:
        event_id = _event_id(request)
        data = await self._call(request, lambda: self.browser.keyframe(event_id))
        if data is None:
            raise ApiError(404, f"event {event_id!r} has no keyframe (none saved yet, or pruned)", code="no_keyframe")
        # an open event's keyframe is replaced by a better one at its end: asked again each time it is shown
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    async def _search(self, request: web.Request) -> web.Response:
        q = Query(request, self.zone)
        text = q.text("q") or ""
        if len(text) > 200:
            raise ApiError(400, "the search text is over 200 characters: search for a few words", param="q")
        options = dict(camera=self._camera(request, q.text("camera")), since=q.time("since"),
                       until=q.time("until", end_of_day=True), limit=q.integer("limit") or 50)
        t0 = time.perf_counter()
        hits = await self._call(request, lambda: self.browser.search(text, **options))
        return web.json_response({"query": text, "hits": [pj.hit_json(h, self.zone) for h in hits],
                                  "milliseconds": round((time.perf_counter() - t0) * 1000, 1)})

    async def _window(self, request: web.Request) -> web.Response:
        window_id = Query(request, self.zone).path_integer("id")

        def read():
            page = self.browser.window(window_id)
            if page is None:
                return None, 0
            frames = self.live.frames(page.window.camera, page.window.start) if page.window.analysed else None
            return page, len(frames or ())

        page, frames = await self._call(request, read)
        if page is None:
            raise ApiError(404, f"there is no window {window_id} in history (pruned, or never recorded)",
                           code="no_such_window")
        return web.json_response(pj.window_page_json(page, self.zone, frames))

    async def _frame(self, request: web.Request) -> web.Response:
        q = Query(request, self.zone)
        window_id, index = q.path_integer("id"), q.path_integer("index")

        def read():
            page = self.browser.window(window_id)
            frames = self.live.frames(page.window.camera, page.window.start) if page is not None else None
            return frames[index] if frames is not None and index < len(frames) else None

        data = await self._call(request, read)
        if data is None:
            raise ApiError(404, f"frame {index} of window {window_id} is not kept: the daemon keeps the frames of "
                           "each camera's last few analysed windows only", code="no_frame")
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def _alerts(self, request: web.Request) -> web.Response:
        q = Query(request, self.zone)
        camera, before, limit = self._camera(request, q.text("camera")), q.integer("before"), q.integer("limit")

        def read():
            rows = self.browser.alerts(camera=camera, before=before, limit=limit or 20)
            return [pj.alert_json(r, self.zone, window_id=self.browser.window_of_alert(r.id)) for r in rows]

        return web.json_response({"alerts": await self._call(request, read)})

    async def _snapshot(self, request: web.Request) -> web.Response:
        alert_id = Query(request, self.zone).path_integer("id")
        data = await self._call(request, lambda: self.browser.alert_snapshot(alert_id))
        if data is None:
            raise ApiError(404, f"alert {alert_id} has no snapshot in history", code="no_snapshot")
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    async def _summaries(self, request: web.Request) -> web.Response:
        q = Query(request, self.zone)
        job, before, limit = q.text("job"), q.integer("before"), q.integer("limit")
        rows = await self._call(request, lambda: self.browser.summaries(job=job, before=before, limit=limit or 10))
        return web.json_response({"summaries": [pj.summary_json(r, self.zone) for r in rows]})

    async def _npu(self, request: web.Request) -> web.Response:
        def read():
            figures = self.browser.npu_figures(self.clock() - HOUR)
            return pj.npu_json(self.live.npus(), self.live.queue_depth(), figures, HOUR)

        return web.json_response(await self._call(request, read))


class Query:
    """A request's parameters, each checked: a bad one is a 400 naming it and what to send."""

    def __init__(self, request: web.Request, zone: tzinfo):
        self.request, self.zone = request, zone

    def text(self, name: str) -> str | None:
        value = self.request.query.get(name, "").strip()
        return value or None

    def flag(self, name: str) -> bool:
        return self.request.query.get(name, "") in ("1", "true", "yes")

    def integer(self, name: str) -> int | None:
        value = self.text(name)
        if value is None:
            return None
        if not value.isdigit() or int(value) < 1:
            raise ApiError(400, f"{name}={value!r} is not a positive whole number", param=name)
        return int(value)

    def path_integer(self, name: str) -> int:
        value = self.request.match_info[name]
        if not value.isdigit():
            raise ApiError(404, f"{self.request.path}: {value!r} is not a number", code="not_found")
        return int(value)

    def time(self, name: str, end_of_day: bool = False) -> float | None:
        """POSIX seconds, an ISO date-time, or a date (YYYY-MM-DD: that day in the configured zone; as
        `until`, the whole day is included)."""
        value = self.text(name)
        if value is None:
            return None
        try:
            return float(value)
        except ValueError:
            pass
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ApiError(400, f"{name}={value!r} is not a date (YYYY-MM-DD), a date and time (ISO-8601) or "
                           "POSIX seconds", param=name) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone)
        if end_of_day and len(value) == 10:
            when += timedelta(days=1)
        return when.timestamp()


def _event_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if EVENT_ID.fullmatch(value) is None:
        raise ApiError(404, f"{request.path}: {value!r} is not an event id (like 1750000000.000-0a1b2c)",
                       code="not_found")
    return value


def _loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or ip).is_loopback
