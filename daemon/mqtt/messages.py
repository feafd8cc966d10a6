"""What goes over the wire: topic names, JSON payloads, and parsing of ad-hoc questions. Pure.

Times become ISO-8601 here and nowhere else; every payload carries `id`, a message id that
survives retries, so consumers can de-duplicate QoS 1 redeliveries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from daemon.config.mqtt import MAX_PACKET_BYTES, topic_problem
from daemon.times import iso
from daemon.types import Alert, Event, Result, Summary, Timings, new_message_id

RESERVED_CAMERA_NAMES = frozenset({"summary"})  # <base>/summary/<job> is taken


def message_problem(topic: str, payload: bytes, max_payload: int) -> str | None:
    """Why a message can never be published, or None: the topic breaks MQTT's rules, or the payload
    is larger than the broker takes (`max_payload`) or than an MQTT packet can hold."""
    problem = topic_problem(topic)
    if problem is not None:
        return f"its topic is not allowed: {problem}"
    if len(payload) > max_payload:
        return f"its payload is {len(payload):,} bytes; mqtt.max_payload_bytes is {max_payload:,}"
    packet = 2 + len(topic.encode("utf-8")) + 2 + len(payload)  # topic length, topic, packet id, payload
    if packet > MAX_PACKET_BYTES:
        return f"topic and payload make a {packet:,}-byte packet; MQTT allows at most {MAX_PACKET_BYTES:,}"
    return None


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut for a log line or an error message: a client may send a 65,535-byte topic."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


@dataclass(frozen=True)
class Topics:
    """Every topic vlmwatch uses, under one configurable base."""

    base: str

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def npu(self) -> str:
        """The daemon's NPU load and queue depth (JSON), published periodically."""
        return f"{self.base}/npu"

    @property
    def ask_filter(self) -> str:
        return f"{self.base}/+/ask"

    def description(self, camera: str) -> str:
        return f"{self.base}/{camera}/description"

    def answer(self, camera: str, prompt: str) -> str:
        return f"{self.base}/{camera}/answer/{prompt}"

    def alert(self, camera: str) -> str:
        return f"{self.base}/{camera}/alert"

    def rule(self, camera: str, rule: str) -> str:
        return f"{self.base}/{camera}/rule/{rule}"

    def snapshot(self, camera: str) -> str:
        return f"{self.base}/{camera}/snapshot"

    def summary(self, job: str) -> str:
        return f"{self.base}/summary/{job}"

    def event(self, camera: str) -> str:
        """An event's `new`, `update`s and `end` (JSON, not retained)."""
        return f"{self.base}/{camera}/event"

    def activity(self, camera: str) -> str:
        """ON while an event is open, else OFF (retained)."""
        return f"{self.base}/{camera}/activity"

    def story(self, camera: str) -> str:
        """The last ended event's story (JSON, retained)."""
        return f"{self.base}/{camera}/story"

    def event_snapshot(self, camera: str) -> str:
        """The last ended event's keyframe (JPEG, retained)."""
        return f"{self.base}/{camera}/event/snapshot"

    def ask(self, camera: str) -> str:
        return f"{self.base}/{camera}/ask"

    def reply(self, camera: str) -> str:
        return f"{self.base}/{camera}/reply"

    def ask_camera(self, topic: str) -> str | None:
        """The camera level of `<base>/<camera>/ask`, or None for any other topic."""
        prefix, suffix = f"{self.base}/", "/ask"
        if not (topic.startswith(prefix) and topic.endswith(suffix)):
            return None
        camera = topic[len(prefix):-len(suffix)]
        return camera if camera and "/" not in camera else None


# -- payloads -----------------------------------------------------------------

def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _window(start: float | None, end: float | None) -> dict[str, str] | None:
    if start is None or end is None:
        return None
    return {"start": iso(start), "end": iso(end)}


def _timings(t: Timings) -> dict[str, float]:
    return {
        "vit_ms": round(t.vit_ms, 1),
        "prefill_ms": round(t.prefill_ms, 1),
        "decode_ms": round(t.decode_ms, 1),
        "generated": t.generated,
        "tokens_per_s": round(t.tokens_per_s, 2),
        "modelled_npu_ms": round(t.modelled_npu_ms, 1),
    }


def result_json(result: Result, message_id: str) -> dict[str, Any]:
    """A description (text result) or an answer (choice result) of one window."""
    payload: dict[str, Any] = {
        "id": message_id,
        "camera": result.camera,
        "ts": iso(result.ts),
        "window": _window(result.window_start, result.window_end),
        "prompt": result.prompt_id,
        "question": result.question,
    }
    if result.choice is not None:
        payload["choice"] = result.choice
        payload["probabilities"] = {k: round(v, 6) for k, v in (result.probabilities or {}).items()}
    else:
        payload["text"] = result.text
        payload["stop_reason"] = result.stop_reason
    payload["model"] = result.model
    payload["timings"] = _timings(result.timings)
    payload["zones"] = sorted(result.zones)  # the camera's zones the window's changed regions touched
    payload["trigger"] = result.trigger  # the external trigger that made the window analysed, or null
    return payload


def alert_json(alert: Alert, message_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "camera": alert.camera,
        "rule": alert.rule,
        "severity": alert.severity,
        "text": alert.text,
        "ts": iso(alert.ts),
        "window": _window(alert.window_start, alert.window_end),
        "probability": None if alert.probability is None else round(alert.probability, 6),
        "snapshot": alert.snapshot_jpeg is not None,
        "zones": sorted(alert.zones),
        "trigger": alert.trigger,
        # Home Assistant's `event` entity reads the event type from the payload.
        "event_type": "alert",
    }


def summary_json(summary: Summary, message_id: str | None = None) -> dict[str, Any]:
    """A summary as MQTT publishes it and `vlmwatch summarize --json` prints it (there without an id)."""
    return {
        **({"id": message_id} if message_id is not None else {}),
        "job": summary.job,
        "ts": iso(summary.ts),
        "period": {"start": iso(summary.period_start), "end": iso(summary.period_end)},
        "text": summary.text,
        "counts": dict(summary.counts),
        "cameras": list(summary.cameras),
    }


def event_record(event: Event) -> dict[str, Any]:
    """An event as consumers read it (the `after` of an event message; Frigate's review items have this
    shape: id, camera, start_time, end_time and the details under `data`)."""
    return {
        "id": event.id,
        "camera": event.camera,
        "start_time": iso(event.start),
        "end_time": None if event.end is None else iso(event.end),
        "duration": round(event.duration, 3),
        "state": event.state,
        "ended_by": event.ended_by,
        "story": event.story,
        "story_from": event.story_from,
        "data": {
            "reasons": list(event.reasons),
            "zones": sorted(event.zones),
            "triggers": list(event.triggers),
            "box": None if event.box is None else [round(v, 4) for v in event.box],
            "rules": list(event.rules),
            "windows": event.windows,
            "descriptions": [{"window": _window(d.window_start, d.window_end), "text": d.text}
                             for d in event.descriptions],
            "snapshot_time": None if event.snapshot_ts is None else iso(event.snapshot_ts),
        },
    }


def event_json(kind: str, event: Event, message_id: str, before: Event | None = None) -> dict[str, Any]:
    """`<camera>/event`: `type` new | update | end, as in Frigate's `frigate/reviews`, with the record as
    `after` (and `before`, the record the previous message carried, when there was one). `event_type`
    is what Home Assistant's `event` entity fires; `story` and `event_id` are at the top level so an
    automation reads `trigger.to_state.attributes.story`."""
    return {
        "id": message_id,
        "type": kind,
        "event_type": kind,
        "event_id": event.id,
        "camera": event.camera,
        "story": event.story,
        "before": None if before is None else event_record(before),
        "after": event_record(event),
    }


def story_json(event: Event, message_id: str) -> dict[str, Any]:
    return {"id": message_id, "event_id": event.id, "camera": event.camera, "text": event.story or "",
            "start_time": iso(event.start), "end_time": None if event.end is None else iso(event.end),
            "duration": round(event.duration, 3), "rules": list(event.rules)}


def npu_json(load: float, queue: int, ts: float) -> dict[str, Any]:
    """`load`: the fraction of wall time the NPU worker was busy since the last report."""
    return {"load": round(min(max(load, 0.0), 1.0), 3), "queue": queue, "ts": iso(ts)}


# -- ad-hoc questions ---------------------------------------------------------

RequestId = str | int


@dataclass(frozen=True)
class AskRequest:
    """A question someone asked about a camera's latest window over MQTT."""

    camera: str
    id: RequestId  # echoed in the reply; generated when the question came as plain text
    question: str
    choices: tuple[str, ...] = ()  # empty: answer in free text
    received: float = 0.0  # POSIX seconds


class AskError(ValueError):
    """A question that cannot be accepted; the message goes back in the error reply."""

    def __init__(self, message: str, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class _AskJson(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1)
    choices: list[str] | None = Field(None, min_length=2, max_length=16)
    id: Annotated[str, Field(min_length=1, max_length=128)] | int | None = None


ASK_SHAPE = '{"question": str, "choices": [str, ...], "id": str|int}'
MAX_ASK_DEPTH = 8  # {"choices": [...]} needs 2
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON `text`, without parsing it (brackets in strings do not count)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def parse_ask(camera: str, payload: bytes, max_bytes: int, received: float) -> AskRequest:
    """Plain text, or JSON `{"question": ..., "choices": [...], "id": ...}`; AskError says what is wrong."""
    if len(payload) > max_bytes:
        raise AskError(f"the question is {len(payload)} bytes; the limit is {max_bytes} bytes")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise AskError(f"the payload is not valid UTF-8 (bad byte at offset {exc.start})") from None
    if not text:
        raise AskError('the question is empty: send plain text or JSON {"question": "..."}')
    if not text.startswith("{"):
        return AskRequest(camera, new_message_id(), text, (), received)
    depth = json_depth(text)
    if depth > MAX_ASK_DEPTH:  # json.loads recurses once per level: 2,000 levels raise RecursionError
        raise AskError(f"the JSON nests {depth} levels deep; a question nests at most {MAX_ASK_DEPTH} "
                       f"(expected {ASK_SHAPE})")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AskError(f"the payload starts with '{{' but is not valid JSON: {exc}") from None
    request_id = _usable_id(raw.get("id")) if isinstance(raw, dict) else None
    try:
        data = _AskJson.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        raise AskError(f"{where}: {err['msg']} (expected {ASK_SHAPE})", request_id) from None
    question = data.question.strip()
    choices = tuple(c.strip() for c in data.choices or ())
    if not question:
        raise AskError("question is empty", request_id)
    if any(not c for c in choices) or len(set(choices)) != len(choices):
        raise AskError("choices must be distinct and non-empty", request_id)
    return AskRequest(camera, data.id if data.id is not None else new_message_id(), question, choices, received)


def _usable_id(value: object) -> RequestId | None:
    """An id worth echoing: a short string or an integer (not a bool)."""
    if isinstance(value, str) and 0 < len(value) <= 128:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def reply_json(request: AskRequest, result: Result) -> dict[str, Any]:
    payload = result_json(result, message_id="")
    payload.update(id=request.id, camera=request.camera, question=request.question, ok=True)
    return payload


def error_reply_json(camera: str, request_id: RequestId | None, error: str, ts: float) -> dict[str, Any]:
    return {
        "id": request_id if request_id is not None else new_message_id(),
        "camera": camera,
        "ts": iso(ts),
        "ok": False,
        "error": error,
    }
