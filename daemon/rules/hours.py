"""A rule's active hours: `TimeRange`, and the parsers of what a rule file writes for it
(`22:00-06:00`, `[mon-fri, sun]`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = {**{d: i for i, d in enumerate(DAYS)},
             **{d: i for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday",
                                             "saturday", "sunday"))}}
TIME_RANGE = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")  # always fullmatch


@dataclass(frozen=True)
class TimeRange:
    """Minutes of the day [start, end) on `days` (0 = Monday). end < start runs past midnight,
    into the next morning: its days are the days it starts on."""

    start: int = 0
    end: int = 1440
    days: frozenset[int] = frozenset(range(7))

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute + local.second / 60.0
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        return ((today in self.days and minute >= self.start)
                or ((today - 1) % 7 in self.days and minute < self.end))


def parse_time_range(text: str) -> tuple[int, int]:
    """'22:00-06:00' -> minutes of the day (1320, 360); ValueError otherwise."""
    m = TIME_RANGE.fullmatch(text.strip())
    hint = "write HH:MM-HH:MM in 24-hour time, e.g. 22:00-06:00 (ranges may run past midnight)"
    if not m:
        raise ValueError(f"bad time range {text!r}: {hint}")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"bad time range {text!r}: {hint}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end % 1440:
        raise ValueError(f"bad time range {text!r}: it starts where it ends; for the whole day leave out time")
    return start, end


def parse_days(items: Iterable[str]) -> frozenset[int]:
    """['mon-fri', 'sun'] -> {0, 1, 2, 3, 4, 6}; ranges may wrap (fri-mon)."""
    days: set[int] = set()
    for item in items:
        first, _, last = str(item).strip().lower().partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise ValueError(f"unknown day {item!r}: use mon, tue, wed, thu, fri, sat, sun or a range such as mon-fri")
        a, b = DAY_NAMES[first], DAY_NAMES[last or first]
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)
