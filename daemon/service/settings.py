"""The daemon's own configuration sections: cameras, prompts, retention, metrics, health, logging.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from daemon.mqtt.triggers.settings import TriggerSettings
from daemon.redact import mistyped_url
from daemon.settings import Name, Section, read_secret
from daemon.video.settings import PolygonField, SourceSettings

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
ZONE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # zone names: as rule ids, they reach MQTT payloads


class CameraPrompts(Section):
    description: str | None = Field(None, description="This camera's description question (overrides prompts.description).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest description for this camera.")


PASSWORD_KEYS = ("password_env", "password_file", "password_credential")


class CameraSettings(SourceSettings):
    """One camera: a name, a source, the window/gate/connection settings of its source, prompt overrides,
    and its login, kept out of the config like the MQTT password."""

    name: Name = Field(description="Unique name: 1-64 lower-case letters, digits, '_' and '-'.")
    source: str = Field(min_length=1, description="rtsp://, rtsps://, http(s):// (MJPEG) URL, a video file or a folder.")
    username: str | None = Field(None, min_length=1,
                                 description="Camera user, put into the source URL (instead of one written there).")
    password_env: str | None = Field(None, min_length=1,
                                     description="Name of an environment variable holding the camera password.")
    password_file: Path | None = Field(
        None, description="File whose content (trailing newline stripped) is the camera password.")
    password_credential: str | None = Field(
        None, min_length=1, pattern=r"^[^/]+$",
        description="Name of a systemd credential (LoadCredential=) holding the camera password; "
        "read from $CREDENTIALS_DIRECTORY/<name>.")
    prompts: CameraPrompts = Field(default_factory=CameraPrompts, description="Per-camera prompt overrides.")
    detect_source: str | None = Field(
        None, min_length=1,
        description="A low-resolution substream (rtsp://...) or a low-resolution copy of the file that feeds the "
        "gate; windows that pass are taken from `source` (see frames_from). Default: the gate reads `source`.")
    frames_from: Literal["main", "detect"] = Field(
        "main", description="With detect_source: take an analysed window's frames from the main `source` (main) or "
        "from the substream itself (detect: the main stream is never opened).")
    zones: dict[str, PolygonField] = Field(
        default_factory=dict,
        description="Named polygons (relative coordinates 0..1) that rules can require the change to touch "
        "(`zones: [porch]` in a rule), e.g. {porch: [[0, 0.5], [0.4, 0.5], [0.4, 1], [0, 1]]}.")
    triggers: list[TriggerSettings] = Field(
        default_factory=list,
        description="MQTT messages (e.g. Frigate events, a motion sensor) that make the camera's next window "
        "analysed whatever the gate says; needs the mqtt section.")

    @model_validator(mode="after")
    def _login(self) -> CameraSettings:
        given = [key for key in PASSWORD_KEYS if getattr(self, key) is not None]
        if not given and self.username is None:
            return self
        first = given[0] if given else "username"
        if "://" not in self.source:
            raise ValueError(f"{first} is set but the source is a file or folder, which has no login")
        if len(given) > 1:
            raise ValueError(f"give the camera password one way only, not {' and '.join(given)}")
        url = urlsplit(self.source)
        if given and url.password is not None:
            raise ValueError(f"{first} is set but the source URL holds a password too: remove it from the URL")
        if given and self.username is None and not url.username:
            raise ValueError(f"{first} is set but there is no user: set username, or write it in the URL "
                             "(rtsp://user@host/...)")
        return self

    def source_url(self, key: str) -> str:
        """The source with the camera's login in the URL (user and password percent-encoded). It
        holds the password: hand it to the capture, never to a log line. ConfigError naming
        `key`.password_* when the password cannot be read."""
        password = read_secret(f"{key}.password", env=self.password_env, file=self.password_file,
                               credential=self.password_credential, what="the password")
        if password is None and self.username is None:
            return self.source
        url = urlsplit(self.source)
        userinfo, _, host = url.netloc.rpartition("@")
        user = quote(self.username, safe="") if self.username is not None else userinfo.split(":", 1)[0]
        secret = f":{quote(password, safe='')}" if password is not None else ""
        if userinfo and password is None:
            secret = userinfo[len(userinfo.split(":", 1)[0]):]  # keep a password written in the URL
        return urlunsplit(url._replace(netloc=f"{user}{secret}@{host}"))

    @field_validator("zones", mode="before")
    @classmethod
    def _zone_names(cls, zones):
        for name in zones if isinstance(zones, dict) else ():
            if not ZONE_RE.fullmatch(str(name)):
                raise ValueError(f"zone name {name!r} must be 1-64 lower-case letters, digits, '_' or '-', "
                                 "starting with a letter or digit")
        return zones

    @model_validator(mode="after")
    def _detect_pairs(self) -> "CameraSettings":
        if self.detect_source is not None:
            main_stream, detect_stream = "://" in self.source, "://" in self.detect_source
            if main_stream != detect_stream:
                raise ValueError("source and detect_source must both be camera URLs or both be video files")
            if not main_stream and (self.source.endswith("/") or self.detect_source.endswith("/")):
                raise ValueError("detect_source pairs a camera's streams or two files, not folders")
        return self

    @field_validator("source", "detect_source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = mistyped_url(v)
        if scheme is not None:
            raise ValueError(f"this looks like a {scheme}:// URL, but '//' does not follow '{scheme}:', so it would "
                             f"be taken for a file path: write {scheme}://HOST/PATH")
        if "://" in v:
            url = urlsplit(v)
            if url.scheme not in URL_SCHEMES:
                raise ValueError(f"unsupported URL scheme {url.scheme!r}: use one of {', '.join(URL_SCHEMES)},"
                                 " or a file or folder path")
            if not url.hostname:
                raise ValueError("the URL has no host (expected e.g. rtsp://camera.local:554/stream)")
        return v


class PromptSettings(Section):
    description: str = Field("Describe what happens in the video.", min_length=1,
                             description="The question whose answer is each window's description.")
    max_new_tokens: int = Field(
        64, ge=1, description="Longest description in tokens: 64 is about the 255 characters a Home Assistant"
        " state holds; each further token is one more decode step (86.66 ms of NPU time on the AX650N).")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level (stderr/journald).")


class RetentionSettings(BaseModel):
    """The `retention:` section: how long history is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: float = Field(30, gt=0, description="Days of history (windows, results, alerts, summaries) to keep; "
                        "older rows are pruned. Fractions are allowed (0.5 = 12 hours).")

    @property
    def keep_seconds(self) -> float:
        return self.days * 86400.0


class MetricsSettings(BaseModel):
    """The `metrics:` section: the Prometheus endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics.")
    host: str = Field(
        "127.0.0.1", min_length=1,
        description="Address to listen on. Loopback by default, so only this machine can scrape; "
        "0.0.0.0 (or ::) exposes the endpoint to the network, which has no authentication.")
    port: int = Field(9108, ge=1, le=65535, description="TCP port of the metrics endpoint.")


class AskSettings(BaseModel):
    """The `asks:` section: how much of the NPU questions (MQTT asks, HTTP chat completions) may take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    npu_share: float = Field(
        0.5, gt=0, le=1, description="Most of the NPU's busy time (over `share_seconds`) questions may take while "
        "camera windows wait; questions still go first below it. 1 = questions always first.")
    share_seconds: float = Field(60.0, ge=5, description="Seconds of NPU history the share is measured over.")
    per_minute: float = Field(
        6.0, ge=0, description="Questions a minute each client may ask: per camera for MQTT asks (its "
        "<camera>/ask topic), per API key or else per address for HTTP. 0 = no limit.")
    burst: int = Field(3, ge=1, description="Questions a client may ask at once before per_minute applies.")
    max_waiting: int = Field(16, ge=1, le=256, description="MQTT asks waiting for the NPU; more are refused.")


class HealthSettings(BaseModel):
    """The `health:` section: the camera watchdog, and when a camera makes the daemon unhealthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stall_after: float = Field(
        60.0, gt=0,
        description="Seconds a live camera (rtsp/http) may go without a window before its capture is restarted, "
        "as one whose thread died is; restarts back off like reconnects (stream.retry_min to retry_max). Must "
        "exceed each live camera's stream.open_timeout + span + stride (the time to its first window).")
    down_after: float = Field(
        300.0, ge=0,
        description="Seconds a camera may be down (a live camera without windows, or any capture that keeps "
        "failing) before the daemon reports itself unhealthy, so that the systemd watchdog restarts it. "
        "0: a down camera never makes the daemon unhealthy.")
