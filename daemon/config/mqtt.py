"""The `mqtt:` section, and the look-ups it implies at start-up: the password and the TLS context.
The password is a `SecretStr` or a reference to where it lives; it never appears in a log line.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.config.base import Section
from daemon.config.secrets import read_secret
from daemon.errors import ConfigError

MAX_TOPIC_BYTES = 65_535  # MQTT: a topic is a UTF-8 string with a 2-byte length
MAX_PACKET_BYTES = 268_435_455  # MQTT: the largest "remaining length" of a packet (also mosquitto's message_size_limit)
# What mosquitto refuses in a topic by dropping the connection ("malformed packet"), as the MQTT spec allows:
# control characters (C0 with NUL, DEL, C1), UTF-16 surrogates and Unicode non-characters.
_NON_CHARACTERS = "".join(chr(plane | 0xFFFE) + chr(plane | 0xFFFF) for plane in range(0, 0x110000, 0x10000))
_BAD_TOPIC_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef" + _NON_CHARACTERS + "]")


def topic_problem(topic: str) -> str | None:
    """Why `topic` cannot be published (MQTT's rules and what mosquitto enforces), or None if it can."""
    if not topic:
        return "the topic is empty"
    if "+" in topic or "#" in topic:
        return "it contains a wildcard ('+' or '#'), which only subscriptions may use"
    bad = _BAD_TOPIC_CHARS.search(topic)
    if bad:
        return (f"it contains the character U+{ord(bad.group()):04X} at position {bad.start()}; control characters, "
                "lone surrogates and Unicode non-characters make the broker drop the connection")
    size = len(topic.encode("utf-8"))
    if size > MAX_TOPIC_BYTES:
        return f"it is {size:,} bytes long; MQTT allows at most {MAX_TOPIC_BYTES:,}"
    return None


def _prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot start every topic vlmwatch uses, or None."""
    problem = topic_problem(prefix)
    if problem is None and "" in prefix.split("/"):
        problem = "it has an empty level (a leading or trailing '/', or '//')"
    if problem is None and len(prefix.encode("utf-8")) > 1024:
        problem = "it is longer than 1,024 bytes"
    return problem



class TlsSettings(Section):
    """TLS to the broker. Present (even empty) means TLS is on."""

    ca_file: Path | None = Field(
        None, description="PEM file of the CA that signed the broker's certificate; empty = the system's CAs.")
    cert_file: Path | None = Field(None, description="PEM client certificate, when the broker requires one.")
    key_file: Path | None = Field(None, description="PEM private key of cert_file (unencrypted).")
    verify: bool = Field(
        True, description="Verify the broker's certificate and host name. Turn off only for a throw-away test broker.")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file is set but tls.cert_file is not: give both or neither")
        return self


class DiscoverySettings(Section):
    """Home Assistant MQTT discovery."""

    enabled: bool = Field(True, description="Publish Home Assistant discovery configs for cameras, rules and summaries.")
    prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix (its MQTT settings).")
    expire_after: int = Field(
        1800, ge=0, description="Seconds without a new description after which Home Assistant shows the "
        "description sensor as unavailable; keep it above the gate's heartbeat. 0 = never.")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        problem = _prefix_problem(value)
        if problem:
            raise ValueError(f"discovery prefix {value!r} cannot start MQTT topics: {problem}")
        return value


class OutboxSettings(Section):
    """Bounds of the persistent outbox (descriptions are dropped first, alerts last)."""

    max_messages: int = Field(10_000, ge=10, description="Unsent messages kept while the broker is away.")
    max_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024,
                           description="Total payload bytes kept while the broker is away (snapshots are large).")


class MqttSettings(Section):
    """How vlmwatch reaches the MQTT broker and what it publishes there."""

    host: str = Field("localhost", min_length=1, description="Broker host name or IP address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (usually 1883, or 8883 with TLS).")
    client_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="MQTT client id; must be unique on the broker. Default: '<base_topic>-<host name>'.")
    keepalive: int = Field(60, ge=5, le=3600, description="Seconds between keep-alive pings; "
                           "the broker publishes 'offline' about 1.5x this long after the daemon vanishes silently.")
    username: str | None = Field(None, min_length=1, description="User name, when the broker requires one.")
    password: SecretStr | None = Field(
        None, description="Password written in the config file. Prefer password_env, password_file or "
        "password_credential so the secret stays out of the config.")
    password_env: str | None = Field(None, min_length=1, description="Name of an environment variable holding the password.")
    password_file: Path | None = Field(None, description="File whose content (trailing newline stripped) is the password.")
    password_credential: str | None = Field(
        None, min_length=1, pattern=r"^[^/\n]+$",  # no newline: then "$" means the end, whatever the engine
        description="Name of a systemd credential (LoadCredential=/SetCredentialEncrypted=) holding the password; "
        "read from $CREDENTIALS_DIRECTORY/<name>.")
    tls: TlsSettings | None = Field(None, description="TLS settings; absent = plain TCP.")
    base_topic: str = Field("vlmwatch", min_length=1, description="Prefix of every topic vlmwatch publishes; "
                            "give each daemon sharing a broker its own.")
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings,
                                         description="Home Assistant discovery.")
    outbox: OutboxSettings = Field(default_factory=OutboxSettings, description="Bounds of the persistent outbox.")
    refused_attempts: int = Field(
        3, ge=1, le=20, description="Connection attempts the broker may refuse (bad credentials, rejected client id, "
        "untrusted TLS certificate) before vlmwatch stops trying and reports the error; unreachable brokers are "
        "retried for ever.")
    reconnect_min_delay: float = Field(
        1.0, gt=0, description="Seconds before the first reconnect attempt; doubles on each failure.")
    reconnect_max_delay: float = Field(
        120.0, gt=0, description="Upper bound of the reconnect delay in seconds.")
    ask_max_bytes: int = Field(4096, ge=64, le=65536, description="Largest accepted payload on <base_topic>/<camera>/ask.")
    max_payload_bytes: int = Field(
        MAX_PACKET_BYTES, ge=1024, le=MAX_PACKET_BYTES,
        description="Largest payload the broker accepts (mosquitto: message_size_limit; default MQTT's maximum). "
        "A larger message (a big snapshot) is not sent but kept in the outbox's dead letters and logged.")

    @field_validator("base_topic")
    @classmethod
    def _base_topic(cls, value: str) -> str:
        problem = _prefix_problem(value)
        if problem:
            raise ValueError(f"base_topic {value!r} cannot start MQTT topics: {problem}")
        return value

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        sources = [name for name in ("password", "password_env", "password_file", "password_credential")
                   if getattr(self, name) is not None]
        if len(sources) > 1:
            raise ValueError(f"give the password one way only, not {' and '.join(sources)}")
        if sources and self.username is None:
            raise ValueError(f"{sources[0]} is set but username is not: the broker needs both")
        if self.reconnect_max_delay < self.reconnect_min_delay:
            raise ValueError("reconnect_max_delay must be at least reconnect_min_delay")
        return self

    # -- start-up look-ups (I/O; called by Publisher.start or a --validate-config run) --

    def effective_client_id(self) -> str:
        return self.client_id or f"{self.base_topic.replace('/', '-')}-{socket.gethostname()}"

    def password_source(self) -> str:
        """Where the password comes from, for messages; never the password itself."""
        if self.password is not None:
            return "mqtt.password in the config file"
        if self.password_env is not None:
            return f"environment variable {self.password_env}"
        if self.password_file is not None:
            return f"file {self.password_file}"
        if self.password_credential is not None:
            return f"systemd credential {self.password_credential}"
        return "no password configured"

    def resolve_password(self) -> str | None:
        """The password, read from wherever it lives; ConfigError with a remedy if it cannot be."""
        if self.password is not None:
            return self.password.get_secret_value()
        return read_secret("mqtt.password", env=self.password_env, file=self.password_file,
                           credential=self.password_credential, what="the password")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the broker, or None for plain TCP; ConfigError naming the bad file."""
        tls = self.tls
        if tls is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if not tls.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if tls.ca_file is not None:
                context.load_verify_locations(cafile=str(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.tls.ca_file {tls.ca_file}: cannot load it as a PEM CA certificate ({exc}). "
                              "Point it at the CA that signed the broker's certificate.") from exc
        try:
            if tls.cert_file is not None:
                context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt.tls.cert_file {tls.cert_file} / key_file {tls.key_file}: cannot load the client "
                              f"certificate and key ({exc}). Check both are PEM and belong together.") from exc
        return context
