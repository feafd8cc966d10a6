"""Topics, JSON payload shapes and the parsing of ad-hoc questions."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from daemon.config.base import check_name
from daemon.mqtt.messages import (
    AskError,
    Topics,
    alert_json,
    error_reply_json,
    parse_ask,
    reply_json,
    result_json,
    summary_json,
)
from daemon.times import iso
from daemon.types import Alert, Result, Summary, Timings

T0 = 1_750_000_000.0
TEXT = Result("porch", "describe", "Describe the scene.", T0, T0 + 8, T0 + 9, text="A cat on the mat.",
              stop_reason="stop", timings=Timings(vit_ms=10, decode_ms=500, generated=5), model="InternVL3-2B")
CHOICE = Result("porch", "person", "Is there a person?", T0, T0 + 8, T0 + 9, choice="yes",
                probabilities={"yes": 0.9, "no": 0.1}, stop_reason="choice")


def test_topics() -> None:
    t = Topics("home/vlm")
    assert t.status == "home/vlm/status"
    assert t.description("porch") == "home/vlm/porch/description"
    assert t.answer("porch", "person") == "home/vlm/porch/answer/person"
    assert t.rule("porch", "person") == "home/vlm/porch/rule/person"
    assert t.summary("daily") == "home/vlm/summary/daily"
    assert t.ask_filter == "home/vlm/+/ask"
    assert t.ask_camera("home/vlm/porch/ask") == "porch"
    assert t.ask_camera("home/vlm/porch/reply") is None and t.ask_camera("other/porch/ask") is None


def test_names_must_be_topic_levels() -> None:
    assert check_name("front-door_2", kind="camera name") == "front-door_2"
    for bad in ("", "a/b", "a+", "#", "front door", "x" * 65):
        with pytest.raises(ValueError, match="letters, digits"):
            check_name(bad, kind="camera name")


def test_iso_has_timezone_and_round_trips() -> None:
    text = iso(T0 + 0.25)
    assert text.endswith("+00:00")
    assert datetime.fromisoformat(text).timestamp() == T0 + 0.25


def test_description_and_answer_payloads() -> None:
    d = result_json(TEXT, "m1")
    assert d["id"] == "m1" and d["camera"] == "porch" and d["text"] == "A cat on the mat."
    assert d["window"] == {"start": iso(T0), "end": iso(T0 + 8)} and d["ts"] == iso(T0 + 9)
    assert d["prompt"] == "describe" and d["model"] == "InternVL3-2B" and d["timings"]["tokens_per_s"] == 10.0
    a = result_json(CHOICE, "m2")
    assert a["choice"] == "yes" and a["probabilities"] == {"yes": 0.9, "no": 0.1} and "text" not in a
    assert result_json(Result("porch", "p", "q", None, None, T0), "m3")["window"] is None


def test_alert_and_summary_payloads() -> None:
    alert = alert_json(Alert("porch", "person", "warning", "someone", T0 + 9, T0, T0 + 8, 0.93, b"jpeg"), "a1")
    assert {k: alert[k] for k in ("id", "camera", "rule", "severity", "probability", "snapshot", "event_type")} == {
        "id": "a1", "camera": "porch", "rule": "person", "severity": "warning", "probability": 0.93,
        "snapshot": True, "event_type": "alert"}
    summary = summary_json(Summary("daily", T0, T0 + 86400, "Quiet day.", T0 + 86401, {"alerts": 2}, ("porch",)), "s1")
    assert summary["period"] == {"start": iso(T0), "end": iso(T0 + 86400)} and summary["counts"] == {"alerts": 2}


def test_zones_and_trigger_of_the_window_are_in_descriptions_and_alerts() -> None:
    from dataclasses import replace

    assert (result_json(TEXT, "m")["zones"], result_json(TEXT, "m")["trigger"]) == ([], None)
    seen = result_json(replace(TEXT, zones=frozenset({"steps", "porch"}), trigger="frigate person"), "m")
    assert (seen["zones"], seen["trigger"]) == (["porch", "steps"], "frigate person")
    alert = alert_json(Alert("porch", "person", "warning", "someone", T0 + 9, T0, T0 + 8,
                             zones=frozenset({"porch"}), trigger="frigate person"), "a2")
    assert (alert["zones"], alert["trigger"]) == (["porch"], "frigate person")


def test_plain_text_question() -> None:
    req = parse_ask("porch", b"  Is the gate open?\n", 4096, T0)
    assert (req.camera, req.question, req.choices, req.received) == ("porch", "Is the gate open?", (), T0)
    assert isinstance(req.id, str) and len(req.id) == 32


def test_json_question_keeps_id_and_choices() -> None:
    req = parse_ask("porch", json.dumps({"question": "Gate?", "choices": ["open", "closed"], "id": 42}).encode(),
                    4096, T0)
    assert (req.id, req.question, req.choices) == (42, "Gate?", ("open", "closed"))
    assert parse_ask("porch", "{\"question\": \"Qué pasa?\", \"id\": \"ä\"}".encode(), 4096, T0).id == "ä"


@pytest.mark.parametrize("payload, message, request_id", [
    (b"x" * 4097, "the question is 4097 bytes; the limit is 4096 bytes", None),
    (b"\xff\xfe what", "not valid UTF-8 (bad byte at offset 0)", None),
    (b"   \n", "the question is empty", None),
    (b'{"question": "x",', "starts with '{' but is not valid JSON", None),
    (b'{"id": "r1", "questoin": "typo"}', "question: Field required", "r1"),
    (b'{"id": 7, "question": "x", "extra": 1}', "extra: Extra inputs are not permitted", 7),
    (b'{"id": "r2", "question": "x", "choices": ["a"]}', "choices: List should have at least 2 items", "r2"),
    (b'{"id": "r3", "question": "x", "choices": ["a", "a"]}', "choices must be distinct", "r3"),
    (b'{"id": "r4", "question": "   "}', "question is empty", "r4"),
    (b'{"id": true, "question": "x"}', "id", None),
])
def test_bad_questions(payload: bytes, message: str, request_id: object) -> None:
    with pytest.raises(AskError) as caught:
        parse_ask("porch", payload, 4096, T0)
    assert message in str(caught.value)
    assert caught.value.request_id == request_id


def test_replies() -> None:
    req = parse_ask("porch", b'{"question": "Gate?", "id": "q1"}', 4096, T0)
    ok = reply_json(req, CHOICE)
    assert (ok["id"], ok["ok"], ok["choice"], ok["question"]) == ("q1", True, "yes", "Gate?")
    err = error_reply_json("porch", None, "nope", T0)
    assert err["ok"] is False and err["error"] == "nope" and len(err["id"]) == 32
