"""Durations, time zones and ISO-8601 strings: one parser and one formatter for every
command, config field and rule file.

    parse_duration("1h30m")                 # 5400.0
    zone_of(None)                           # the system's zone; zone_of("Europe/Berlin"), zone_info(name)
    iso(ts)                                 # '2025-06-02T08:00:00.250+00:00' (UTC, milliseconds)
    iso(ts, zone, timespec="seconds")       # in a zone; zone None: the system's
"""

from __future__ import annotations

import re
from datetime import datetime, timezone, tzinfo

# ----------------------------------------------------------------------------- durations

UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
DURATION_HINT = "write a number and a unit (s, m, h, d, w), e.g. 2h, 24h, 7d or 1h30m"


def parse_duration(text: str, what: str | None = "duration", *, allow_zero: bool = False) -> float:
    """Seconds of a duration: one or more `<number><unit>` parts, added up.

    Units are s, m, h, d and w (case-insensitive); numbers may have decimals; no
    spaces inside: '90s', '15m', '1.5h', '1h30m', '1d2h', '7d', '1w'. A bare number
    is refused (seconds or minutes?). Zero is refused unless `allow_zero` (a rule's
    cooldown may be 0s). ValueError says what was given, as "`what` 'text'", and
    what to write.
    """
    subject = f"{what} {text!r}" if what else repr(text)
    s = str(text).strip().lower()
    parts = _PART.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{subject} is not a duration: {DURATION_HINT}")
    seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds == 0 and not allow_zero:
        raise ValueError(f"{subject} must be longer than zero")
    return seconds


# ----------------------------------------------------------------------------- time zones


def zone_info(name: str) -> tzinfo:
    """The IANA zone `name`; ValueError saying what to write when there is none."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC") from None


def zone_of(name: str | None) -> tzinfo:
    """`zone_info(name)`, or the system's zone (as APScheduler picks it, via tzlocal) when unset."""
    if name:
        return zone_info(name)
    from tzlocal import get_localzone

    return get_localzone()


# ----------------------------------------------------------------------------- ISO-8601


def iso(ts: float, zone: tzinfo | None = timezone.utc, timespec: str = "milliseconds") -> str:
    """POSIX seconds -> ISO-8601 with an explicit offset: in UTC by default, else in `zone`
    (None: the system's zone). `timespec` as for `datetime.isoformat`."""
    when = datetime.fromtimestamp(ts, zone) if zone is not None else datetime.fromtimestamp(ts).astimezone()
    return when.isoformat(timespec=timespec)
