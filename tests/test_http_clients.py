"""Frigate 0.17 and LLM Vision 1.7 as their users run them, against the real daemon with a tiny random model
whose limits are the AX650N 2048 build's (`board_model`): every request gets 200, every JSON reply parses and
validates, and the response says which profile fitted the request and how many images the model saw.

The requests are built here in the shape those clients send (read from their source: Frigate v0.17.2
frigate/genai/__init__.py and openai.py; LLM Vision v1.7.0 custom_components/llmvision/providers.py,
OpenAI._prepare_vision_data); their wording is ours.
"""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from clients import frigate_review, image, llmvision, thumbnails
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


def test_a_streamed_json_answer_parses_once_joined(client):
    schema = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "kind": {"type": "string", "enum": ["person", "car", "none"]}},
              "required": ["count", "kind"], "additionalProperties": False}
    stream = client.chat.completions.create(
        model="x", stream=True, max_tokens=40, messages=[{"role": "user", "content": [
            image(t) for t in thumbnails(2)] + [{"type": "text", "text": "Count the people."}]}],
        response_format={"type": "json_schema", "json_schema": {"name": "count", "schema": schema}})
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), schema)


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
