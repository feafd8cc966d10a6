"""The OpenAI-compatible endpoint, driven by the real `openai` client against the real daemon
(tiny model, ONNX Runtime): answers equal `vlmwatch describe`'s for the same frames and question."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import cv2
import numpy as np
import openai
import pytest

from daemon.cli import main
from daemon.config import Config
from daemons import SYSTEM, running
from mosquitto import free_port

KEY = "sk-vlmwatch-test"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_model, long_clip):
    """One daemon for the module: a live-paced camera and the HTTP API with an API key."""
    tmp = tmp_path_factory.mktemp("http")
    key_file = tmp / "api_key"
    key_file.write_text(KEY + "\n")
    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model), "system": SYSTEM},
        "cameras": [{"name": "yard", "source": str(long_clip), "realtime": True, "frames": 2}],
        "prompts": {"max_new_tokens": 4},
        "asks": {"per_minute": 0},
        "http": {"enabled": True, "port": free_port(), "api_key_file": str(key_file), "max_tokens": 64},
        "state_dir": str(tmp / "state"), "metrics": {"enabled": False}})
    with running(cfg) as app:
        app.url = f"http://127.0.0.1:{cfg.http.port}"
        yield app


@pytest.fixture
def client(daemon):
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight frames as files: PNG and JPEG, of different sizes."""
    rng = np.random.default_rng(3)
    folder = tmp_path_factory.mktemp("frames")
    paths = []
    for i in range(8):
        picture = cv2.GaussianBlur(rng.integers(0, 255, (120 + 8 * i, 160, 3), np.uint8), (9, 9), 3)
        path = folder / f"frame{i}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), picture)
        paths.append(path)
    return paths


def data_url(path) -> str:
    mime = "image/png" if path.suffix == ".png" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def user(question, paths=()):
    parts = [{"type": "text", "text": question}]
    parts += [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in paths]
    return [{"role": "user", "content": parts}]


def describe(capsys, tiny_model, question, paths=(), max_new_tokens=16) -> dict:
    """What `vlmwatch describe --json` answers for the same frames and question."""
    capsys.readouterr()
    assert main(["describe", "--model", str(tiny_model), "--system", SYSTEM, "-q", question,
                 "--max-new-tokens", str(max_new_tokens), "--json", *map(str, paths)]) == 0
    return json.loads(capsys.readouterr().out)


def post(daemon, path, body: bytes, key=KEY, content_type="application/json"):
    """A raw request; (status, headers, JSON body)."""
    request = urllib.request.Request(daemon.url + path, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def test_models_and_health(daemon, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [daemon.engine.name]
    with urllib.request.urlopen(daemon.url + "/healthz", timeout=10) as response:
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"


def test_text_question_answers_as_describe_does(daemon, client, capsys, tiny_model):
    want = describe(capsys, tiny_model, "Hello, who are you?", max_new_tokens=12)
    got = client.chat.completions.create(model="internvl3-2b", max_tokens=12,
                                         messages=[{"role": "user", "content": "Hello, who are you?"}])
    assert got.choices[0].message.content == want["text"] and want["text"]
    assert got.usage.prompt_tokens == want["prompt_tokens"]
    assert got.usage.completion_tokens == len(want["tokens"])
    assert got.choices[0].finish_reason == ("length" if want["stop_reason"] == "length" else "stop")


def test_image_question_answers_as_describe_does(daemon, client, capsys, tiny_model, images):
    want = describe(capsys, tiny_model, "What is in the picture?", images[1:2])
    got = client.chat.completions.create(model="any", max_completion_tokens=16,
                                         messages=user("What is in the picture?", images[1:2]))
    assert got.choices[0].message.content == want["text"]
    assert got.usage.prompt_tokens == want["prompt_tokens"]


def test_eight_frames_stream_chunk_by_chunk_as_describe_answers(daemon, client, capsys, tiny_model, images):
    want = describe(capsys, tiny_model, "Describe what happens.", images)
    stream = client.chat.completions.create(model="any", max_tokens=16, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=user("Describe what happens.", images))
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == want["text"]
    assert len(pieces) > 1  # streamed as the tokens came, not in one piece
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.prompt_tokens == want["prompt_tokens"]
    assert chunks[-1].usage.completion_tokens == len(want["tokens"])


def test_a_seed_makes_sampling_reproducible_and_stop_texts_cut_the_answer(client, images):
    def ask(**options):
        return client.chat.completions.create(model="any", max_tokens=12, messages=user("Tell a story.", images[:1]),
                                              **options).choices[0].message.content

    assert ask(temperature=1.0, seed=5) == ask(temperature=1.0, seed=5)
    assert ask(temperature=1.0, seed=-1) == ask(temperature=1.0, seed=-1)  # OpenAI seeds may be negative
    assert ask(temperature=1e-310) == ask()  # a vanishing temperature is greedy, not a crash
    greedy = ask()
    stop = greedy[4:7]
    assert ask(stop=[stop]) == greedy[:greedy.find(stop)]


def test_a_frigate_shaped_request_gets_a_description(client, images):
    """frigate/genai/openai.py: one user message, the prompt's text part, then one JPEG thumbnail per image
    as a base64 data URL with detail "low"; Frigate reads choices[0].message.content."""
    thumbnails = [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in images[:3]]
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe the event on the front camera."}] + [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{base64.b64encode(t).decode()}",
                                            "detail": "low"}} for t in thumbnails]}]
    result = client.chat.completions.create(model="internvl3-2b", messages=messages, timeout=60)
    assert result.choices[0].message.content.strip()


def test_a_wrong_api_key_is_refused_with_401(daemon):
    wrong = openai.OpenAI(base_url=daemon.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"


def test_a_prompt_that_does_not_fit_is_refused_before_any_npu_time(daemon, client):
    limit = daemon.engine.limits.max_prompt
    npu = daemon.metrics.npu_seconds.labels(kind="modelled")._value.get()
    question = ("word " * limit).strip()
    tokens = daemon.engine.prompt_tokens(0, question)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": question}])
    assert err.value.body["code"] == "context_length_exceeded"
    assert f"is {tokens} tokens but the model's largest prefill is {limit} tokens" in err.value.message
    with pytest.raises(openai.BadRequestError, match="characters, far more than the model's largest prefill"):
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "a" * 10**6}])
    assert daemon.metrics.npu_seconds.labels(kind="modelled")._value.get() == npu


def test_malformed_requests_get_400_in_openais_error_shape(daemon, images):
    cases = {
        b"{not json": "not valid JSON",
        b"[1, 2]": "must be a JSON object",
        b"[" * 100_000: "nests arrays or objects too deeply",
        json.dumps({"model": "x"}).encode(): "messages: Field required",
        json.dumps({"model": "x", "messages": []}).encode(): "messages: List should have at least 1 item",
        json.dumps({"model": "x", "messages": [{"role": "robot", "content": "hi"}]}).encode(): "messages[0].role",
        json.dumps({"model": "x", "messages": user("hi"), "temperature": 9}).encode(): "temperature:",
        json.dumps({"model": "x", "messages": user("hi"), "n": 3}).encode(): "n:",
        json.dumps({"model": "x", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
            {"type": "text", "text": "hi"}]}]}).encode(): "image 1: the data URL's payload is not valid base64",
        json.dumps({"model": "x", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.invalid/a.jpg"}},
            {"type": "text", "text": "hi"}]}]}).encode(): "http.fetch_urls is off",
    }
    for body, message in cases.items():
        status, _, answer = post(daemon, "/v1/chat/completions", body)
        assert status == 400, (body[:80], answer)
        assert set(answer["error"]) == {"message", "type", "param", "code"}
        assert message in answer["error"]["message"], answer
        assert answer["error"]["type"] == "invalid_request_error"


def test_bounds_on_bodies_images_and_paths(daemon):
    huge = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (21 * 1024 * 1024) + b'"}]}'
    status, _, answer = post(daemon, "/v1/chat/completions", huge)
    assert status == 413 and "http.max_body_bytes" in answer["error"]["message"]
    bomb = cv2.imencode(".png", np.zeros((5000, 4000, 3), np.uint8))[1].tobytes()  # 20 MP of nothing, small file
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(bomb).decode()}}]}]})
    status, _, answer = post(daemon, "/v1/chat/completions", body.encode())
    assert status == 400 and "the image is 4000x5000 pixels; the limit is 16777216 pixels" in answer["error"]["message"]
    status, _, answer = post(daemon, "/v1/nothing", b"{}")
    assert status == 404 and answer["error"]["type"] == "not_found_error"
    assert daemon.healthy()


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(daemon, client):
    from daemon.service.workqueue import RateLimiter

    unlimited, daemon.pipeline.chat.limiter = daemon.pipeline.chat.limiter, RateLimiter(per_minute=2, burst=1)
    try:
        assert client.chat.completions.create(model="any", max_tokens=2, messages=user("hi")).choices
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="any", max_tokens=2, messages=user("hi"))
    finally:
        daemon.pipeline.chat.limiter = unlimited
    assert err.value.body["code"] == "rate_limit_exceeded"
    assert "requests per client at most 2 a minute (bursts of 1)" in err.value.message
    assert 1 <= int(err.value.response.headers["Retry-After"]) <= 30
