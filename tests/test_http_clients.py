"""Frigate 0.17 and LLM Vision 1.7 as their users run them, against the real daemon with a tiny random model
whose limits are the AX650N 2048 build's (`board_model`): every request gets 200, every JSON reply parses and
validates, and the response says which profile fitted the request and how many images the model saw.

The requests are built here in the shape those clients send (read from their source: Frigate v0.17.2
frigate/genai/__init__.py and openai.py; LLM Vision v1.7.0 custom_components/llmvision/providers.py,
OpenAI._prepare_vision_data); their wording is ours.
"""

from __future__ import annotations

import base64
import json

import cv2
import jsonschema
import numpy as np
import openai
import pytest

from daemon.config import Config
from daemon.http.profiles import FRIGATE_REVIEW_SCHEMA
from daemons import SYSTEM, running
from mosquitto import free_port


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, board_model):
    tmp = tmp_path_factory.mktemp("clients")
    cfg = Config.model_validate({
        "model": {"dir": str(board_model), "system": SYSTEM},
        "cameras": idle_camera(tmp),
        "asks": {"per_minute": 0},
        "http": {"enabled": True, "port": free_port(), "max_tokens": 300},
        "state_dir": str(tmp / "state"), "metrics": {"enabled": False}})
    with running(cfg) as app:
        app.url = f"http://127.0.0.1:{cfg.http.port}/v1"
        yield app


def idle_camera(tmp) -> list[dict]:
    """A camera watching an empty folder: the NPU is the API's alone."""
    (tmp / "clips").mkdir()
    return [{"name": "idle", "source": str(tmp / "clips")}]


@pytest.fixture
def client(daemon):
    return openai.OpenAI(base_url=daemon.url, api_key="unused", max_retries=0, timeout=120)


def thumbnails(n: int) -> list[str]:
    """n JPEG thumbnails as base64, 180 px high like Frigate's preview frames."""
    rng = np.random.default_rng(n)
    pictures = (cv2.GaussianBlur(rng.integers(0, 255, (180, 320, 3), np.uint8), (9, 9), 3) for _ in range(n))
    return [base64.b64encode(cv2.imencode(".jpg", p)[1].tobytes()).decode() for p in pictures]


def image(b64: str, detail: str | None = None) -> dict:
    url = {"url": f"data:image/jpeg;base64,{b64}"}
    return {"type": "image_url", "image_url": {**url, "detail": detail} if detail else url}


def frigate_review_prompt(camera: str, n: int, concerns=(), language=None) -> str:
    """A review prompt with the structure of Frigate 0.17's (markdown sections, the reply keys in backticks,
    the event's facts as bullets, concerns as indented bullets), in our words, padded to Frigate's length."""
    guidance = "\n".join(f"- Guideline {i}: report only what the pictures show, in the order it happens, and weigh "
                         "the hour, the place and how long it lasted before judging it." for i in range(60))
    concern_lines = ("- `other_concerns` (list of strings): which of these apply:\n"
                     + "\n".join(f"    - {c}" for c in concerns)) if concerns else ""
    return f"""
Analyse these {n} pictures, oldest first, taken from the perspective of the {camera} security camera.

## What is normal here

Deliveries in daytime, residents coming and going.

## Instructions

{guidance}

## Reply

Reply with one flat JSON object holding:
- `scene` (string): what happens, start to end.
- `title` (string): a short title.
- `shortSummary` (string): two sentences for a notification.
- `confidence` (float): 0 to 1.
- `potential_threat_level` (integer): 0, 1 or 2.
{concern_lines}

## Sequence Details

- Frame 1 is the first, Frame {n} the last
- Activity started at 2026-12-05 22:14:03 and lasted 48 seconds
- Zones involved: driveway, porch

## Objects in Scene

Each line is one detection.

- Person
- Joe (person)
- car

## Notes
- Plain values only.
{f"Provide your answer in {language}" if language else ""}
"""


def frigate_review(camera: str, n: int, **facts) -> list[dict]:
    """frigate/genai/openai.py: one user message, the images first (detail "low"), then the prompt."""
    return [{"role": "user", "content": [image(t, "low") for t in thumbnails(n)]
             + [{"type": "text", "text": frigate_review_prompt(camera, n, **facts)}]}]


def check_fitted(raw, profile: str | None, used: int, sent: int) -> str:
    response = raw.parse()
    assert raw.headers["X-Vlmwatch-Images"] == f"{used}/{sent}"
    assert raw.headers.get("X-Vlmwatch-Profile") == profile
    usage = response.usage.model_dump()
    assert (usage["images_used"], usage["images_sent"]) == (used, sent)
    extra = response.model_extra["vlmwatch"]
    assert (extra["profile"], extra["images_used"], extra["images_sent"]) == (profile, used, sent)
    assert extra["modelled_npu_ms"] > 0
    return response.choices[0].message.content


@pytest.mark.parametrize("n", [3, 20])
def test_frigate_review_gets_a_review_that_frigate_parses(daemon, client, n):
    messages = frigate_review("front_door", n, concerns=["a ladder against the wall"], language="French")
    prompt = messages[0]["content"][-1]["text"]
    assert daemon.engine.prompt_tokens(0, prompt) > daemon.engine.limits.max_prompt  # it cannot fit as sent
    raw = client.chat.completions.with_raw_response.create(model="internvl3-2b", messages=messages)
    text = check_fitted(raw, "frigate-review", min(n, 8), n)
    review = json.loads(text)  # Frigate strips code fences, then validates ReviewMetadata: a flat object
    jsonschema.validate(review, FRIGATE_REVIEW_SCHEMA)


def test_frigate_object_descriptions_with_up_to_10_thumbnails(client):
    prompt = ("Look at the series of images containing the person. Say what the person seems to be doing and why, "
              "not how the person looks, and what the person may do next.")
    for n in (1, 3, 8, 10):
        messages = [{"role": "user", "content": [image(t, "low") for t in thumbnails(n)]
                     + [{"type": "text", "text": prompt}]}]
        raw = client.chat.completions.with_raw_response.create(model="internvl3-2b", messages=messages, max_tokens=8)
        assert check_fitted(raw, "frigate-object", min(n, 8), n)


def llmvision(n: int, message: str, structure: dict | None = None) -> dict:
    """custom_components/llmvision/providers.py (OpenAI compatible): a system message, then one user message
    with a label text before every image and the user's message last; with response_format json and a
    structure, a json_schema response_format named "response", strict, additionalProperties false added."""
    content = []
    for i, t in enumerate(thumbnails(n)):
        content += [{"type": "text", "text": f"Image {i + 1}:" if i % 2 else "driveway:"}, image(t)]
    content.append({"type": "text", "text": message})
    system = ("Summarise the pictures for a home event log in under 255 characters. Mention people, animals and "
              "vehicles and how they move from one picture to the next; leave out what stays still; follow the "
              "user's instructions. " * 6)
    body = {"model": "internvl3-2b", "max_completion_tokens": 200, "temperature": 0.2, "top_p": 0.95,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}]}
    if structure is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "response", "schema": {**structure, "additionalProperties": False}, "strict": True}}
    return body


def test_llmvision_structured_response_validates(client):
    structure = {"type": "object", "properties": {
        "people": {"type": "integer", "minimum": 0, "maximum": 10},
        "vehicle": {"type": "boolean"},
        "summary": {"type": "string", "maxLength": 120}}, "required": ["people", "vehicle", "summary"]}
    body = llmvision(12, "How many people are there, is there a vehicle, and what happens?", structure)
    raw = client.chat.completions.with_raw_response.create(**body)
    text = check_fitted(raw, "llmvision", 8, 12)
    jsonschema.validate(json.loads(text), body["response_format"]["json_schema"]["schema"])


def test_json_object_mode_for_any_client(client):
    result = client.chat.completions.create(
        model="internvl3-2b", response_format={"type": "json_object"}, max_tokens=60,
        messages=[{"role": "user", "content": "List what you see as JSON."}])
    assert isinstance(json.loads(result.choices[0].message.content), dict)


def test_a_long_request_of_an_unknown_client_gets_a_precise_400(daemon, client):
    limit = daemon.engine.limits.max_prompt
    question = "Please consider every detail of the house, the street and the weather. " * 200
    content = [image(t) for t in thumbnails(2)] + [{"type": "text", "text": question}]
    tokens = daemon.engine.prompt_tokens(2, question.strip())  # the endpoint strips the text
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": content}])
    assert err.value.body["code"] == "context_length_exceeded"
    assert f"is {tokens} tokens but the model's largest prefill is {limit} tokens" in err.value.message


def test_a_profile_turned_off_leaves_frigate_with_a_400(board_model, tmp_path):
    cfg = Config.model_validate({
        "model": {"dir": str(board_model), "system": SYSTEM}, "cameras": idle_camera(tmp_path),
        "asks": {"per_minute": 0},
        "http": {"enabled": True, "port": free_port(), "profiles": {"frigate_review": {"enabled": False}}},
        "state_dir": str(tmp_path / "state"), "metrics": {"enabled": False}})
    with running(cfg):
        off = openai.OpenAI(base_url=f"http://127.0.0.1:{cfg.http.port}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="largest prefill"):
            off.chat.completions.create(model="x", messages=frigate_review("porch", 3))
