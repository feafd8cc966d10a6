"""The window ledger: what became of every window, recorded through one call.

    window_id = ledger.settle(window, Outcome.SKIPPED, decision.reason)

A window is settled once (history row, metrics, the source's resume point, listeners); an analysed
one's resume point moves only with `answered`, once every answer is stored and queued. Listeners
run on the settling thread; what they raise reaches the caller's error policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from daemon.state.history import History
from daemon.types import Alert, Result, Window
from daemon.video import Source


class Outcome(Enum):
    ANALYSED = "analysed"
    SKIPPED = "skipped"  # the gate saw no change
    DROPPED = "dropped"  # a newer window of the camera replaced it in the NPU queue
    REFUSED = "refused"  # the model cannot take the window's prompts (a QuestionError)
    CANCELLED = "cancelled"  # the daemon stopped before the prefix was ready

    def stored(self, reason: str) -> str:
        """The reason as history keeps it: the gate's words, or the outcome's prefix and what happened."""
        return reason if self in (Outcome.ANALYSED, Outcome.SKIPPED) else f"{_PREFIX[self]}: {reason}"


_PREFIX = {Outcome.DROPPED: "dropped", Outcome.REFUSED: "error", Outcome.CANCELLED: "cancelled"}


@dataclass(frozen=True)
class Settled:
    """One window's outcome, as recorded."""

    window: Window
    outcome: Outcome
    reason: str  # as given (the gate's words, the error), without the stored prefix
    window_id: int  # its row in history
    at: float  # wall clock


@dataclass(frozen=True)
class Answered:
    """An analysed window's answers (stored and queued for MQTT) and the alerts its rules raised."""

    window: Window
    window_id: int
    results: tuple[Result, ...]
    alerts: tuple[Alert, ...]


class WindowCounts(Protocol):
    """The metrics a ledger keeps (daemon.service.metrics.Metrics)."""

    def window_analysed(self, camera: str) -> None: ...

    def window_skipped(self, camera: str) -> None: ...

    def window_dropped(self, camera: str, count: int = 1) -> None: ...


class WindowLedger:
    """Records each window's outcome in history, metrics and its source; thread-safe."""

    def __init__(self, history: History, metrics: WindowCounts, sources: Mapping[str, Source | None],
                 clock: Callable[[], float]) -> None:
        self.history, self.metrics, self.sources, self.clock = history, metrics, sources, clock
        self._settled: list[Callable[[Settled], None]] = []
        self._answered: list[Callable[[Answered], None]] = []
        self._lock = threading.Lock()

    def listen(self, on_settled: Callable[[Settled], None] | None = None,
               on_answered: Callable[[Answered], None] | None = None) -> None:
        """Be told of every settled window and every analysed window's answers (on the recording thread)."""
        with self._lock:
            if on_settled is not None:
                self._settled.append(on_settled)
            if on_answered is not None:
                self._answered.append(on_answered)

    def settle(self, window: Window, outcome: Outcome, reason: str = "") -> int:
        """Record what became of `window`; its id in history."""
        at = self.clock()
        window_id = self.history.record_window(window, outcome is Outcome.ANALYSED, outcome.stored(reason), at)
        self._count(window.camera, outcome)
        if outcome not in (Outcome.CANCELLED, Outcome.ANALYSED):
            self._resume_after(window)
        settled = Settled(window, outcome, reason, window_id, at)
        for listener in self._listeners(self._settled):
            listener(settled)
        return window_id

    def cut_short(self, window: Window, window_id: int) -> None:
        """An analysed window whose answers a shutdown cut short: history says so (cancelled), and its resume
        point stays before it, so it is analysed again, not recorded twice as analysed."""
        self.history.mark_window(window_id, False, Outcome.CANCELLED.stored("shutting down during its answers"))

    def answered(self, window: Window, window_id: int, results: Sequence[Result], alerts: Sequence[Alert]) -> None:
        """An analysed window's answers are stored and queued: its source may resume after it; tell the
        listeners."""
        self._resume_after(window)
        answered = Answered(window, window_id, tuple(results), tuple(alerts))
        for listener in self._listeners(self._answered):
            listener(answered)

    def _count(self, camera: str, outcome: Outcome) -> None:
        if outcome is Outcome.ANALYSED:
            self.metrics.window_analysed(camera)
        elif outcome is Outcome.SKIPPED:
            self.metrics.window_skipped(camera)
        elif outcome is Outcome.DROPPED:
            self.metrics.window_dropped(camera)

    def _resume_after(self, window: Window) -> None:
        source = self.sources.get(window.camera)
        if source is not None:
            source.recorded(window)

    def _listeners(self, listeners: list) -> list:
        with self._lock:
            return list(listeners)
