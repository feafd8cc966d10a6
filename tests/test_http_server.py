"""The HTTP server with a fake backend: bounded waits, health, a taken port, API key settings."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from mosquitto import free_port

from daemon.config.http import HttpSettings
from daemon.errors import ConfigError
from daemon.http.messages import Generated
from daemon.http.server import HttpServer


class FakeBackend:
    """Answers at once, or never starts (`stall`), like a busy NPU."""

    model = "fake-model"

    def __init__(self, stall=False, ok=True):
        self.stall, self.ok, self.cancelled = stall, ok, 0

    def healthy(self):
        return self.ok

    def max_images(self):
        return 8

    def admit(self, client):
        pass

    def fit(self, completion):
        return completion

    def submit(self, completion, client, sink):
        if not self.stall:
            sink.started()
            sink.token("hello")
            sink.finished(Generated("hello", 3, 1, "stop"))

        def cancel():
            self.cancelled += 1

        return cancel


@pytest.fixture
def serve():
    servers = []

    def start(backend, **settings):
        server = HttpServer(HttpSettings(enabled=True, port=free_port(), **settings), backend)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def call(server, path, body=None):
    url = server.url.removesuffix("/v1") + path
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_a_request_that_waits_too_long_for_the_npu_gets_429_and_is_withdrawn(serve):
    backend = FakeBackend(stall=True)
    server = serve(backend, max_wait=0.3)
    status, headers, body = call(server, "/v1/chat/completions", CHAT)
    assert status == 429 and body["error"]["code"] == "queue_timeout"
    assert "waited 0.3 s (http.max_wait)" in body["error"]["message"] and headers["Retry-After"] == "1"
    assert backend.cancelled == 1


def test_an_answer_and_its_shape(serve):
    status, _, body = call(serve(FakeBackend()), "/v1/chat/completions", CHAT)
    assert status == 200 and body["object"] == "chat.completion" and body["model"] == "fake-model"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "images_used": 0,
                             "images_sent": 0}


def test_health_follows_the_daemon(serve):
    status, _, body = call(serve(FakeBackend(ok=False)), "/healthz")
    assert status == 503 and body["status"] == "unhealthy"


def test_wrong_method_is_answered_in_openais_shape(serve):
    status, _, body = call(serve(FakeBackend()), "/v1/chat/completions")  # GET
    assert status == 405 and body["error"]["message"].startswith("GET /v1/chat/completions")


def test_a_taken_port_is_a_config_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(HttpSettings(enabled=True, port=port), FakeBackend())
        with pytest.raises(ConfigError, match=f"cannot serve the HTTP API on 127.0.0.1:{port}: .*http.port"):
            server.start()


def test_api_key_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMWATCH_KEY", "from-env")
    assert HttpSettings(api_key_env="VLMWATCH_KEY").resolve_api_key() == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    assert HttpSettings(api_key_file=tmp_path / "key").resolve_api_key() == "from-file"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert HttpSettings(api_key_credential="key").resolve_api_key() == "from-file"
    assert HttpSettings().resolve_api_key() is None
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        HttpSettings(api_key_env="NOPE").resolve_api_key()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        HttpSettings(api_key_file=tmp_path / "empty").resolve_api_key()
    with pytest.raises(ValueError, match="give the API key one way only"):
        HttpSettings(api_key="a", api_key_env="VLMWATCH_KEY")
    assert "secret" not in repr(HttpSettings(api_key="secret"))
