"""What the daemon publishes, as a protocol: `daemon.mqtt.publisher.Publisher` is its implementation,
tests pass recorders. Complete, so that no capability is found with `hasattr`."""

from __future__ import annotations

from typing import Any, Protocol

from daemon.state.recovery import Publishing as Recovering
from daemon.types import CameraStatus, Event, Result


class Publishing(Recovering, Protocol):
    error: Any  # a PublishError once the broker refused us for good (credentials, TLS), else None

    def reply(self, request: Any, result: Result) -> None: ...

    def reply_error(self, request: Any, error: str) -> None: ...

    def publish_npu(self, load: float, queue: int, ts: float) -> object: ...

    def publish_camera_status(self, status: CameraStatus) -> None: ...

    def publish_rule_state(self, camera: str, rule: str, on: bool) -> None: ...

    def publish_event(self, kind: str, event: Event, message_id: str | None = None, before: Event | None = None,
                      snapshot: bytes | None = None) -> str: ...

    def stats(self) -> Any: ...

    def start(self) -> None: ...  # connects in the background; ConfigError for an unreadable password or TLS file

    def stop(self, timeout: float = ...) -> None: ...
