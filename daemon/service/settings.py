"""The daemon's own configuration sections: cameras, prompts, retention, metrics, logging.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from daemon.settings import NAME_RE, Section
from daemon.video.settings import SourceSettings

URL_SCHEMES = ("rtsp", "rtsps", "http", "https")


class CameraPrompts(Section):
    description: str | None = Field(None, description="This camera's description question (overrides prompts.description).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest description for this camera.")


class CameraSettings(SourceSettings):
    """One camera: a name, a source, the window/gate/connection settings of its source, prompt overrides."""

    name: str = Field(pattern=NAME_RE, description="Unique name: lower-case letters, digits, '_' and '-'.")
    source: str = Field(min_length=1, description="rtsp://, rtsps://, http(s):// (MJPEG) URL, a video file or a folder.")
    prompts: CameraPrompts = Field(default_factory=CameraPrompts, description="Per-camera prompt overrides.")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
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
