"""The daemon's own sections: prompts, logging, retention, metrics, asks, health."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from daemon.config.base import Section


class PromptSettings(Section):
    description: str = Field("Describe what happens in the video.", min_length=1,
                             description="The question whose answer is each window's description.")
    max_new_tokens: int = Field(
        64, ge=1, description="Longest description in tokens: 64 is about the 255 characters a Home Assistant"
        " state holds; each further token is one more decode step (86.66 ms of NPU time on the AX650N).")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level (stderr/journald).")


class RetentionSettings(Section):
    """The `retention:` section: how long history is kept."""


    days: float = Field(30, gt=0, description="Days of history (windows, results, alerts, summaries) to keep; "
                        "older rows are pruned. Fractions are allowed (0.5 = 12 hours).")

    @property
    def keep_seconds(self) -> float:
        return self.days * 86400.0


class MetricsSettings(Section):
    """The `metrics:` section: the Prometheus endpoint."""


    enabled: bool = Field(True, description="Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics.")
    host: str = Field(
        "127.0.0.1", min_length=1,
        description="Address to listen on. Loopback by default, so only this machine can scrape; "
        "0.0.0.0 (or ::) exposes the endpoint to the network, which has no authentication.")
    port: int = Field(9108, ge=1, le=65535, description="TCP port of the metrics endpoint.")


class AskSettings(Section):
    """The `asks:` section: how much of the NPU questions (MQTT asks, HTTP chat completions) may take."""


    npu_share: float = Field(
        0.5, gt=0, le=1, description="Most of the NPU's busy time (over `share_seconds`) questions may take while "
        "camera windows wait; questions still go first below it. 1 = questions always first.")
    share_seconds: float = Field(60.0, ge=5, description="Seconds of NPU history the share is measured over.")
    per_minute: float = Field(
        6.0, ge=0, description="Questions a minute each client may ask: per camera for MQTT asks (its "
        "<camera>/ask topic), per API key or else per address for HTTP. 0 = no limit.")
    burst: int = Field(3, ge=1, description="Questions a client may ask at once before per_minute applies.")
    max_waiting: int = Field(16, ge=1, le=256, description="MQTT asks waiting for the NPU; more are refused.")


class HealthSettings(Section):
    """The `health:` section: the camera watchdog, and when a camera makes the daemon unhealthy."""


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
