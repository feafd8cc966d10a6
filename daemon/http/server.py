"""The OpenAI-compatible HTTP server (aiohttp) on its own thread and event loop.

    server = HttpServer(settings, backend, api_key=settings.resolve_api_key(), observe=metrics.http_request)
    server.start()       # ConfigError when the port is taken
    ...
    server.stop()

The server parses, authenticates and bounds requests and decodes their images
(on a small thread pool, never on the event loop); the `Backend` queues each
request as an NPU job and reports through a `Sink`, whose calls come from the
NPU worker's thread and are handed to the event loop. A client that
disconnects has its handler cancelled (aiohttp's handler cancellation), which
cancels its job: the engine stops at its next step. Nothing a client sends
reaches the camera pipeline except as one bounded job in the NPU queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Protocol

from aiohttp import web

from daemon.config.http import HttpSettings
from daemon.errors import Busy, ConfigError, QuestionError
from daemon.http.images import bad_image, data_url_bytes, decode_image, even_sample, fetch_bytes
from daemon.http.messages import (
    ApiError,
    ChatRequest,
    Completion,
    Generated,
    Sink,
    api_error,
    chunk_json,
    completion_json,
    model_json,
    models_json,
    new_id,
    now,
    parse_chat,
    usage_json,
    vlmwatch_headers,
)
from daemon.http.web import PageApi
from daemon.types import Frame

log = logging.getLogger(__name__)

Observe = Callable[[str, int, float], None]  # (endpoint, status, seconds)
DECODERS = 2  # threads decoding images: at most this many cores go to clients' images
READING = 4  # requests read and decoded at once; others wait before their bodies are read


class Backend(Protocol):
    """What the server needs from the daemon (daemon.service.chat.ChatService)."""

    model: str

    def healthy(self) -> bool: ...

    def max_images(self) -> int: ...

    def admit(self, client: str) -> None: ...  # Busy when the client is over its rate limit

    def fit(self, completion: Completion) -> Completion: ...  # fitted to the model; QuestionError when it cannot be

    def submit(self, completion: Completion, client: str, sink: Sink) -> Callable[[], None]: ...  # -> cancel


class _Events:
    """A Sink that hands the NPU thread's calls to the event loop, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def _put(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the server's loop has closed: nobody waits for this request any more
            pass

    def started(self) -> None:
        self._put("started")

    def token(self, text: str) -> None:
        self._put("token", text)

    def finished(self, result: Generated) -> None:
        self._put("finished", result)

    def failed(self, error: BaseException) -> None:
        self._put("failed", error)

    async def next(self, timeout: float | None = None) -> tuple[str, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout)


def error_response(err: ApiError) -> web.Response:
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
    if err.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="vlmwatch"'
    return web.json_response(err.body(), status=err.status, headers=headers)


class HttpServer:
    """Serves the API until stop(); one thread, one event loop, one small decoding pool."""

    def __init__(self, settings: HttpSettings, backend: Backend, api_key: str | None = None,
                 observe: Observe | None = None, page: PageApi | None = None):
        self.settings, self.backend, self._key, self._observe = settings, backend, api_key, observe
        self._page = page  # the web page and its JSON (daemon.http.web), when the daemon serves it
        self._created = now()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._reading: asyncio.Semaphore | None = None
        self._fetcher = None  # aiohttp.ClientSession when http.fetch_urls is on

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.settings.port}/v1"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> None:
        """Listen on http.host:http.port; ConfigError when that is impossible (the port is taken, ...)."""
        self._thread = threading.Thread(target=self._run, name="http-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the HTTP API did not start within {timeout:g} s")
        if self._error is not None:
            s = self.settings
            raise ConfigError(f"cannot serve the HTTP API on {s.host}:{s.port}: {self._error}. Set http.port to a "
                              "free port (or http.host to an address of this machine), or http.enabled: false.")
        log.info("HTTP API (OpenAI-compatible) at %s%s", self.url,
                 "" if self._key else " without an API key")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, cancel requests still open (their NPU jobs with them), join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            loop.call_soon_threadsafe(self._stopping.set)
        except RuntimeError:
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("HTTP API: the server thread did not stop within %.0f s", timeout)
        if self._page is not None:
            self._page.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception as exc:  # noqa: BLE001 - reported by start(), or logged if it comes later
            if self._ready.is_set():
                log.exception("HTTP API: the server stopped")
            else:
                self._error = exc
                self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopping, self._reading = asyncio.Event(), asyncio.Semaphore(READING)
        self._pool = ThreadPoolExecutor(DECODERS, thread_name_prefix="http-decode")
        runner = web.AppRunner(self._app(), handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            if self.settings.fetch_urls:
                import aiohttp

                self._fetcher = aiohttp.ClientSession()
            await web.TCPSite(runner, self.settings.host, self.settings.port).start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            if self._fetcher is not None:
                await self._fetcher.close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._errors])
        app.router.add_post("/v1/chat/completions", self._chat, name="chat")
        app.router.add_get("/v1/models", self._models, name="models")
        app.router.add_get("/v1/models/{model}", self._model, name="model")
        app.router.add_get("/healthz", self._health, name="healthz")
        if self._page is not None:
            app.add_routes(self._page.routes())
        return app

    # ------------------------------------------------------------------ plumbing

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        """Every error in OpenAI's shape; every request counted with its status and latency."""
        t0, status = time.monotonic(), 500
        route = request.match_info.route
        endpoint = route.name if route is not None and route.name else "other"
        try:
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            return error_response(exc)
        except web.HTTPException as exc:  # aiohttp's own: no such path, wrong method, body too large
            status = exc.status
            kind = "not_found_error" if status == 404 else "invalid_request_error"
            return error_response(ApiError(status, f"{request.method} {request.path}: {exc.reason}", type=kind))
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's code for it)
            raise
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log.exception("HTTP API: %s %s failed", request.method, request.path)
            return error_response(api_error(exc))
        finally:
            if self._observe is not None:
                self._observe(endpoint, status, time.monotonic() - t0)

    def _authorize(self, request: web.Request) -> str:
        """The client's name for rate limiting: its API key's fingerprint, else its address; 401 on a bad key."""
        if self._key is None:
            return f"http:{request.remote}"
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._key.encode()):
            raise ApiError(401, "Incorrect API key provided: send the key configured in vlmwatch's http section as "
                           "'Authorization: Bearer KEY' (OPENAI_API_KEY for OpenAI clients)", code="invalid_api_key")
        return "http:key:" + hashlib.sha256(token.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ endpoints

    async def _health(self, request: web.Request) -> web.Response:
        ok = self.backend.healthy()
        return web.json_response({"status": "ok" if ok else "unhealthy", "model": self.backend.model},
                                 status=200 if ok else 503)

    async def _models(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.json_response(models_json(self.backend.model, self._created))

    async def _model(self, request: web.Request) -> web.Response:
        self._authorize(request)
        name = request.match_info["model"]
        if name != self.backend.model:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {self.backend.model!r}",
                           code="model_not_found", param="model")
        return web.json_response(model_json(name, self._created))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        client = self._authorize(request)
        try:
            self.backend.admit(client)
        except Busy as exc:
            raise api_error(exc) from None
        async with self._reading:
            chat = parse_chat(await self._json(request))
            completion = await self._completion(chat)
            loop = asyncio.get_running_loop()
            try:
                completion = await loop.run_in_executor(self._pool, self.backend.fit, completion)
            except QuestionError as exc:
                raise api_error(exc) from None
        events = _Events(loop)
        try:
            cancel = self.backend.submit(completion, client, events)
        except Busy as exc:
            raise api_error(exc) from None
        try:
            await self._started(events)
            if chat.stream:
                return await self._stream(request, chat, events, completion)
            return await self._complete(chat, events)
        finally:
            cancel()  # a no-op once answered; otherwise the client left or gave up: stop the job

    async def _json(self, request: web.Request) -> Any:
        limit = self.settings.max_body_bytes
        too_large = ApiError(413, f"the request body is over {limit} bytes (http.max_body_bytes); send smaller "
                             "images", code="request_too_large")
        if (request.content_length or 0) > limit:
            raise too_large
        try:
            raw = await request.read()  # aiohttp stops reading at client_max_size (chunked bodies too)
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "the request body nests arrays or objects too deeply", code="invalid_json") from None

    async def _completion(self, chat: ChatRequest) -> Completion:
        limit = self.backend.max_images()
        if chat.images and not limit:
            raise ApiError(400, f"the request has {len(chat.images)} images; this model takes none (it has no ViT "
                           "graph): ask a text-only question", code="too_many_images", param="messages")
        chosen = even_sample(len(chat.images), limit)
        sources: list[str | bytes] = []
        for i in chosen:
            url, where = chat.images[i], f"image {i + 1}"
            if url.startswith("data:"):
                sources.append(url)
            elif url.lower().startswith(("http://", "https://")):
                if self._fetcher is None:
                    raise bad_image(where, "image URLs are not fetched (http.fetch_urls is off): send the image as "
                                    "a base64 data URL, data:image/jpeg;base64,...")
                s = self.settings
                sources.append(await fetch_bytes(self._fetcher, url, s.fetch_max_bytes, s.fetch_timeout, where))
            else:
                raise bad_image(where, "expected a data URL (data:image/jpeg;base64,...) or an http(s) URL")
        images = await asyncio.get_running_loop().run_in_executor(self._pool, self._decode, sources, chosen)
        frames = tuple(Frame("http", float(i), i, image) for i, image in enumerate(images))
        cap = self.settings.max_tokens
        return Completion(chat.question, frames, min(chat.max_tokens or cap, cap), chat.temperature, chat.top_p,
                          chat.seed, chat.stop, chat.turns, chat.response_format, len(chat.images))

    def _decode(self, sources: list[str | bytes], numbers: list[int]) -> list:
        s, out = self.settings, []
        for i, source in zip(numbers, sources):
            where = f"image {i + 1}"
            data = data_url_bytes(source, s.max_image_bytes, where) if isinstance(source, str) else source
            out.append(decode_image(data, s.max_image_pixels, where))
        return out

    async def _started(self, events: _Events) -> None:
        """Wait (bounded) until the NPU takes the request; 429 if it does not in time."""
        wait = self.settings.max_wait
        try:
            kind, value = await events.next(timeout=wait)
        except asyncio.TimeoutError:
            raise ApiError(429, f"the NPU is busy: this request waited {wait:g} s (http.max_wait) without its turn;"
                           " try again later", type="rate_limit_error", code="queue_timeout",
                           retry_after=wait / 2) from None
        if kind == "failed":
            raise api_error(value)

    async def _complete(self, chat: ChatRequest, events: _Events) -> web.Response:
        while True:
            kind, value = await events.next()
            if kind == "finished":
                return web.json_response(completion_json(new_id(), now(), self.backend.model, value),
                                         headers=vlmwatch_headers(value))
            if kind == "failed":
                raise api_error(value)

    async def _stream(self, request: web.Request, chat: ChatRequest, events: _Events,
                      completion: Completion) -> web.StreamResponse:
        """Server-sent events: one chunk per piece of text as the tokens arrive, then [DONE]."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no", **vlmwatch_headers(completion)})
        await response.prepare(request)
        cid, created, model = new_id(), now(), self.backend.model

        async def send(payload: dict) -> None:
            await response.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")

        try:
            await send(chunk_json(cid, created, model, {"role": "assistant", "content": ""}))
            while True:
                kind, value = await events.next()
                if kind == "token":
                    await send(chunk_json(cid, created, model, {"content": value}))
                elif kind == "finished":
                    await send(chunk_json(cid, created, model, {}, value.finish_reason))
                    if chat.include_usage:
                        await send(chunk_json(cid, created, model, {}, usage=usage_json(value)))
                    break
                elif kind == "failed":
                    await send(api_error(value).body())  # the status line has gone out: report it in the stream
                    break
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:  # the client went away mid-stream; the caller cancels the job
            log.debug("HTTP API: a streaming client disconnected")
        return response
