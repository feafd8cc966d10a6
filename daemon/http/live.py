"""What the web page needs from the running daemon, beyond history: a small read-only contract.

`daemon.service.pageview.LiveView` implements `Live` over the running App (cameras'
latest pictures and states, the NPUs); tests may pass any object with these methods.
Everything here is a snapshot taken when asked; nothing the page does changes the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

Point = tuple[float, float]


@dataclass(frozen=True)
class LiveCamera:
    name: str
    state: str  # starting | up | restarting | down | ended (the camera watchdog's word)
    error: str | None  # why the capture last failed or was restarted
    picture_start: float | None  # start of the window the latest picture comes from (None: no picture yet)
    masks: tuple[tuple[Point, ...], ...]  # the configured gate.masks
    zones: tuple[tuple[str, tuple[Point, ...]], ...]  # the configured zones


@dataclass(frozen=True)
class LiveNpu:
    label: str  # npu0, npu1, ...
    load: float  # busy share of the last minute, 0..1
    kv_path: str  # how the engine keeps its KV cache (engine.kv_path)


class Live(Protocol):
    timezone: str  # IANA name of the configured zone (the system's when none is configured)

    def cameras(self) -> list[LiveCamera]: ...

    def picture(self, camera: str) -> bytes | None: ...  # JPEG of the camera's latest analysed window

    def frames(self, camera: str, start: float) -> list[bytes] | None: ...  # JPEGs of a recent window, if kept

    def npus(self) -> list[LiveNpu]: ...

    def queue_depth(self) -> int: ...
