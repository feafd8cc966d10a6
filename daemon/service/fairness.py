"""Fair use of the one NPU: the share of NPU time questions may take, and per-client rate limits.

Both are pure bookkeeping that take `now` (seconds on any monotonic clock), so
tests drive them with a made-up clock:

    share = NpuShare(horizon=60)
    share.record("ask", seconds=3.0, now=10.0)
    share.fraction("ask", now=10.0)           # 1.0: asks used all the busy time so far

    limits = RateLimiter(per_minute=6, burst=3)
    limits.take("mqtt:porch", now=0.0)        # 0.0: allowed; otherwise seconds until the next is

Questions (MQTT asks, HTTP chat completions) go before camera windows, which
is what makes them feel interactive, but a flood of them must not starve the
windows (issue 11: 60 asks/s published one description in 40 s). The queue
therefore serves a waiting window whenever questions took more than their
share of the NPU's busy time over the last `horizon` seconds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict, deque


class NpuShare:
    """NPU busy time by job kind over a sliding window of `horizon` seconds."""

    def __init__(self, horizon: float = 60.0):
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self.horizon = horizon
        self._spans: deque[tuple[float, str, float]] = deque()  # (end, kind, seconds), oldest first
        self._busy: dict[str, float] = defaultdict(float)

    def record(self, kind: str, seconds: float, now: float) -> None:
        """A job of `kind` kept the NPU busy for `seconds`, ending at `now`."""
        seconds = max(0.0, seconds)
        self._spans.append((now, kind, seconds))
        self._busy[kind] += seconds
        self._forget(now)

    def fraction(self, kind: str, now: float) -> float:
        """The part (0..1) of the busy time within the horizon that went to `kind`; 0 when idle."""
        self._forget(now)
        total = sum(self._busy.values())
        return self._busy[kind] / total if total > 0 else 0.0

    def seconds(self, kind: str, now: float) -> float:
        self._forget(now)
        return self._busy[kind]

    def _forget(self, now: float) -> None:
        while self._spans and self._spans[0][0] < now - self.horizon:
            _, kind, seconds = self._spans.popleft()
            self._busy[kind] = max(0.0, self._busy[kind] - seconds)


class RateLimiter:
    """A token bucket per client: `burst` questions at once, then `per_minute` a minute.

    `per_minute` 0 turns limiting off. At most `max_clients` buckets are kept
    (the least recently seen are forgotten, which only ever lets a client
    ask sooner), so a stream of new client addresses cannot grow memory.
    Thread-safe: MQTT's network thread and the HTTP server call it.
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 4096):
        if per_minute < 0 or burst < 1:
            raise ValueError(f"need per_minute >= 0 and burst >= 1, got {per_minute} and {burst}")
        self.rate, self.burst, self.max_clients = per_minute / 60.0, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def describe(self) -> str:
        """The limit in words, for refusals: 'at most 6 a minute (bursts of 3)'."""
        return f"at most {self.rate * 60:g} a minute (bursts of {self.burst})"

    def take(self, client: str, now: float) -> float:
        """Take one question for `client`: 0.0 when allowed, else the seconds until one is."""
        if not self.enabled:
            return 0.0
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait
