"""The `mqtt:` settings: validation, password sources, secrecy, TLS files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.config.mqtt import MqttSettings
from daemon.errors import ConfigError


def test_defaults_and_fixed_names() -> None:
    s = MqttSettings()
    assert (s.host, s.port, s.base_topic, s.discovery.prefix, s.discovery.enabled) == (
        "localhost", 1883, "vlmwatch", "homeassistant", True)
    assert s.tls is None and s.resolve_password() is None
    assert s.effective_client_id().startswith("vlmwatch-")


def test_every_field_is_described() -> None:
    def undescribed(model: type) -> list[str]:
        return [name for name, f in model.model_fields.items() if not f.description]

    from daemon.config.mqtt import DiscoverySettings, OutboxSettings, TlsSettings
    for model in (MqttSettings, TlsSettings, DiscoverySettings, OutboxSettings):
        assert undescribed(model) == [], model.__name__


@pytest.mark.parametrize("data, message", [
    ({"hots": "x"}, "Extra inputs are not permitted"),
    ({"tls": {"ca": "x"}}, "Extra inputs are not permitted"),
    ({"port": 0}, "greater than or equal to 1"),
    ({"base_topic": "a/#"}, r"base_topic 'a/#' cannot start MQTT topics: it contains a wildcard"),
    ({"base_topic": "vlm+watch"}, "it contains a wildcard"),
    ({"base_topic": "vlm\twatch"}, r"it contains the character U\+0009 at position 3; control characters"),
    ({"base_topic": "vlm\x00watch"}, r"U\+0000"),
    ({"base_topic": "vlmwatch\n"}, r"U\+000A"),
    ({"base_topic": "home/\u0085"}, r"U\+0085"),
    ({"base_topic": "a//b"}, r"it has an empty level \(a leading or trailing '/', or '//'\)"),
    ({"base_topic": "/vlmwatch"}, "empty level"),
    ({"base_topic": "vlmwatch/"}, "empty level"),
    ({"base_topic": "x" * 1025}, "longer than 1,024 bytes"),
    ({"discovery": {"prefix": "home\tassistant"}}, r"discovery prefix .* cannot start MQTT topics: .*U\+0009"),
    ({"discovery": {"prefix": "home#"}}, "wildcard"),
    ({"discovery": {"prefix": "/homeassistant"}}, "empty level"),
    ({"discovery": {"prefix": ""}}, "the topic is empty"),
    ({"max_payload_bytes": 10}, "greater than or equal to 1024"),
    ({"username": "u", "password": "p", "password_env": "P"}, "give the password one way only"),
    ({"password_env": "P"}, "username is not"),
    ({"tls": {"key_file": "k.pem"}}, "cert_file is not"),
    ({"reconnect_min_delay": 10, "reconnect_max_delay": 1}, "reconnect_max_delay"),
])
def test_invalid_settings_are_rejected(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MqttSettings.model_validate(data)


def test_nested_base_topics_and_unicode_are_fine() -> None:
    s = MqttSettings(base_topic="home/vlmwatch-ü", discovery={"prefix": "ha/discovery"})
    assert (s.base_topic, s.discovery.prefix) == ("home/vlmwatch-ü", "ha/discovery")


def test_password_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    s = MqttSettings(username="vlm", password="hunter2-secret")
    for text in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump())):
        assert "hunter2-secret" not in text
    assert s.resolve_password() == "hunter2-secret"
    assert s.password_source() == "mqtt.password in the config file"


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = MqttSettings(username="vlm", password_env="VLMWATCH_TEST_PW")
    monkeypatch.delenv("VLMWATCH_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="environment variable VLMWATCH_TEST_PW is not set"):
        s.resolve_password()
    monkeypatch.setenv("VLMWATCH_TEST_PW", "from-env")
    assert s.resolve_password() == "from-env"


def test_password_from_file_and_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mqtt_password").write_text("from-file\n")
    assert MqttSettings(username="u", password_file=tmp_path / "mqtt_password").resolve_password() == "from-file"
    with pytest.raises(ConfigError, match=r"mqtt.password_file: cannot read the password from .*missing"):
        MqttSettings(username="u", password_file=tmp_path / "missing").resolve_password()

    credential = MqttSettings(username="u", password_credential="mqtt_password")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match=r"\$CREDENTIALS_DIRECTORY is not set.*LoadCredential=mqtt_password:"):
        credential.resolve_password()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credential.resolve_password() == "from-file"
    assert credential.password_source() == "systemd credential mqtt_password"


def test_unreadable_tls_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"mqtt.tls.ca_file .*junk.pem: cannot load it"):
        MqttSettings(tls={"ca_file": tmp_path / "junk.pem"}).ssl_context()
    with pytest.raises(ConfigError, match=r"mqtt.tls.cert_file .*missing.pem"):
        MqttSettings(tls={"cert_file": tmp_path / "missing.pem"}).ssl_context()
    insecure = MqttSettings(tls={"verify": False}).ssl_context()
    assert insecure is not None and not insecure.check_hostname
