"""The daemon's own configuration sections: cameras, prompts, retention, metrics, logging.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from daemon.mqtt.triggers.settings import TriggerSettings
from daemon.settings import NAME_RE, Section
from daemon.video.settings import PolygonField, SourceSettings

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
ZONE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # zone names: as rule ids, they reach MQTT payloads


class CameraPrompts(Section):
    description: str | None = Field(None, description="This camera's description question (overrides prompts.description).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest description for this camera.")


class CameraSettings(SourceSettings):
    """One camera: a name, a source, the window/gate/connection settings of its source, prompt overrides."""

    name: str = Field(pattern=NAME_RE, description="Unique name: lower-case letters, digits, '_' and '-'.")
    source: str = Field(min_length=1, description="rtsp://, rtsps://, http(s):// (MJPEG) URL, a video file or a folder.")
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

    @field_validator("zones", mode="before")
    @classmethod
    def _zone_names(cls, zones):
        for name in zones if isinstance(zones, dict) else ():
            if not ZONE_RE.match(str(name)):
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
    max_new_tokens: int = Field(128, ge=1, description="Longest description in tokens.")


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
