"""OpenAI chat-completions messages: the request parsed into typed values, responses built from them.

Only this module knows the wire format. A request becomes a `ChatRequest`
(its text parts joined into one question, its image URLs in order); with its
images decoded it becomes the `Completion` the backend answers, reporting to
a `Sink` and finishing with a `Generated`.

The model answers one question about one window: the text parts of every
message (system, user and earlier turns, in order) make the question, and the
images of every message are the window's frames, in order.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.errors import Busy, Cancelled, PromptTooLongError, QuestionError
from daemon.types import Frame

MAX_STOP_TEXTS = 4  # as OpenAI
MAX_STOP_CHARS = 256  # each; the engine looks for every stop text after every token
MAX_MESSAGES = 64


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return error_json(self.message, self.type, self.code, self.param)


@dataclass(frozen=True)
class Turn:
    """One message's shape, for recognising clients (daemon.http.profiles): its role, its text parts in
    order, how many images it has, and whether they all come before its texts."""

    role: str
    texts: tuple[str, ...]
    images: int = 0
    images_first: bool = False


@dataclass(frozen=True)
class ResponseFormat:
    """response_format json_object (schema None: any object) or json_schema (its schema)."""

    schema: Mapping[str, Any] | None = None
    name: str = "json_object"


@dataclass(frozen=True)
class ChatRequest:
    """A parsed chat-completions request; `images` are the image URLs (data: or http(s):), in order."""

    model: str
    question: str
    images: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    turns: tuple[Turn, ...] = ()
    response_format: ResponseFormat | None = None  # None: text


@dataclass(frozen=True)
class Completion:
    """What the backend is asked: a question about these frames (none: text only).

    `images_sent` counts the request's images, of which `frames` are an even sample; `profile` names the
    client profile whose compact prompt replaced the request's text (daemon.http.profiles)."""

    question: str
    frames: tuple[Frame, ...]
    max_tokens: int
    temperature: float | None = None  # None: the daemon's own sampling (greedy by default)
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    turns: tuple[Turn, ...] = ()
    response_format: ResponseFormat | None = None
    images_sent: int = 0
    profile: str | None = None


@dataclass(frozen=True)
class Generated:
    """A finished answer."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    modelled_npu_ms: float = 0.0
    images_used: int = 0
    images_sent: int = 0
    profile: str | None = None


class Sink(Protocol):
    """Where the backend reports a request's progress; called on the NPU worker's thread."""

    def started(self) -> None: ...

    def token(self, text: str) -> None: ...

    def finished(self, result: Generated) -> None: ...

    def failed(self, error: BaseException) -> None: ...


# --------------------------------------------------------------------------- parsing


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Body(BaseModel):
    """The options vlmwatch reads; others that change nothing (user, metadata, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


def parse_chat(raw: Any) -> ChatRequest:
    """A request body (decoded JSON) -> ChatRequest; ApiError 400 naming the parameter that is wrong."""
    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        body = _Body.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or None
        where = _path(err["loc"])
        raise ApiError(400, f"{where}: {err['msg']}", param=param) from None
    _refuse_unsupported(body)
    texts: list[str] = []
    images: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(body.messages):
        n_texts, n_images = len(texts), len(images)
        first_text = _read_message(message, f"messages[{i}]", texts, images)
        turns.append(Turn(message.get("role"), tuple(texts[n_texts:]), len(images) - n_images,
                          first_text is None or first_text >= len(images) - n_images))
    question = "\n\n".join(t for t in texts if t.strip()).strip()
    if not question:
        raise ApiError(400, "the messages have no text: add a text part with the question", param="messages")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > MAX_STOP_TEXTS or any(not 0 < len(s) <= MAX_STOP_CHARS for s in stop):
        raise ApiError(400, f"stop: give at most {MAX_STOP_TEXTS} non-empty stop texts of at most {MAX_STOP_CHARS}"
                       " characters", param="stop")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return ChatRequest(body.model, question, tuple(images), body.max_completion_tokens or body.max_tokens,
                       body.temperature, body.top_p, body.seed, stop, body.stream, include_usage, tuple(turns),
                       response_format(body.response_format))


def response_format(raw: dict[str, Any] | None) -> ResponseFormat | None:
    """OpenAI's response_format -> ResponseFormat (None for text); ApiError 400 naming what is wrong."""
    kind = (raw or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat()
    if kind != "json_schema":
        raise ApiError(400, f"response_format.type {kind!r} is not supported; give 'text', 'json_object' or "
                       "'json_schema'", param="response_format")
    spec = raw.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise ApiError(400, "response_format.json_schema.schema must be a JSON schema object, as in "
                       '{"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object", ...}}}',
                       param="response_format")
    return ResponseFormat(schema, str(spec.get("name") or "json_schema"))


def _refuse_unsupported(body: _Body) -> None:
    if body.tools or body.functions:
        raise ApiError(400, "tools and functions are not supported by this model server", param="tools")
    if body.logprobs:
        raise ApiError(400, "logprobs are not supported by this model server", param="logprobs")


def _read_message(message: dict[str, Any], where: str, texts: list[str], images: list[str]) -> int | None:
    """Append the message's texts and image URLs; return how many images came before its first text."""
    role = message.get("role")
    if role not in ("system", "developer", "user", "assistant"):
        raise ApiError(400, f"{where}.role must be one of system, developer, user, assistant (got {role!r})",
                       param="messages")
    content = message.get("content")
    if content is None and role == "assistant":
        return None
    if isinstance(content, str):
        texts.append(content)
        return 0
    first_text, n_images = None, 0
    if not isinstance(content, list):
        raise ApiError(400, f"{where}.content must be a string or a list of parts", param="messages")
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
            first_text = n_images if first_text is None else first_text
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise ApiError(400, f"{here}.image_url.url must be a URL string", param="messages")
            images.append(url)
            n_images += 1
        else:
            raise ApiError(400, f"{here}: expected a part {{\"type\": \"text\", \"text\": ...}} or "
                           "{\"type\": \"image_url\", \"image_url\": {\"url\": ...}}", param="messages")
    return first_text


def _path(loc: tuple) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


# --------------------------------------------------------------------------- responses


def api_error(exc: BaseException) -> ApiError:
    """The OpenAI-shaped error for what went wrong with a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, PromptTooLongError):
        return ApiError(400, str(exc), code="context_length_exceeded", param="messages")
    if isinstance(exc, QuestionError):
        return ApiError(400, str(exc), param="messages")
    if isinstance(exc, Busy):
        code = "rate_limit_exceeded" if exc.reason == "rate" else "queue_full"
        return ApiError(429, str(exc), type="rate_limit_error", code=code, retry_after=exc.retry_after)
    if isinstance(exc, Cancelled):
        return ApiError(503, "the request was cancelled: vlmwatch is shutting down", type="server_error",
                        code="shutting_down")
    return ApiError(500, f"the model failed on this request ({exc.__class__.__name__}); see the daemon's log",
                    type="server_error", code="internal_error")


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def error_json(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def usage_json(g: Generated) -> dict[str, Any]:
    """OpenAI's usage, and the images the model saw of those sent (an even sample when there were more)."""
    return {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
            "total_tokens": g.prompt_tokens + g.completion_tokens, "images_used": g.images_used,
            "images_sent": g.images_sent}


def vlmwatch_headers(g: Generated | Completion) -> dict[str, str]:
    """What vlmwatch did to fit the request, as response headers (sent before a stream's first chunk)."""
    used = len(g.frames) if isinstance(g, Completion) else g.images_used
    headers = {"X-Vlmwatch-Images": f"{used}/{g.images_sent}"}
    if g.profile:
        headers["X-Vlmwatch-Profile"] = g.profile
    return headers


def completion_json(cid: str, created: int, model: str, g: Generated) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                     "finish_reason": g.finish_reason, "logprobs": None}],
        "usage": usage_json(g),
        # what the request costs on an AX650N, and what was done to fit it
        "vlmwatch": {"modelled_npu_ms": round(g.modelled_npu_ms, 3), "profile": g.profile,
                     "images_used": g.images_used, "images_sent": g.images_sent},
    }


def chunk_json(cid: str, created: int, model: str, delta: dict[str, Any], finish_reason: str | None = None,
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish_reason,
                                             "logprobs": None}]
    out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
    if usage is not None:
        out["usage"] = usage
    return out


def models_json(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_json(model, created)]}


def model_json(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "vlmwatch"}


def now() -> int:
    return int(time.time())
