"""Durations, time zones and ISO-8601 strings: one parser and one formatter for every
command and config field.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


def zone_info(name: str):
    """ZoneInfo for an IANA name; ValueError saying what to write otherwise."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC") from None


def iso(ts: float) -> str:
    """POSIX seconds -> ISO-8601 in UTC with an explicit offset, millisecond precision."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, what: str = "duration") -> float:
    """'90s', '30m', '2h', '1h30m', '7d', '1w' -> seconds; ValueError saying what is accepted."""
    s = text.strip().lower()
    parts = _DURATION.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{what} {text!r} is not a duration: write a number and a unit (s, m, h, d, w),"
                         " e.g. 2h, 24h, 7d or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{what} {text!r} must be longer than zero")
    return seconds


def zone_of(name: str | None) -> tzinfo:
    """An IANA zone, or the system's (as APScheduler picks it) when unset."""
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    from tzlocal import get_localzone

    return get_localzone()
