"""Cron expressions read as cron reads them, on APScheduler 3's trigger: weekdays
numbered from Sunday, day-of-month or weekday, fixed-time jobs once in a
repeated hour. Pure: fire times from a time, no scheduler.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

_TICK = timedelta(microseconds=1)


class CronSchedule(CronTrigger):
    """A crontab expression as cron means it, on APScheduler's CronTrigger.

    Two differences from `CronTrigger.from_crontab`: weekday numbers follow
    cron (0 and 7 are Sunday; APScheduler 3 counts from Monday), and a
    fixed-time job does not fire at both 02:30s when the clocks go back.
    """

    fixed_time = False

    @classmethod
    def from_crontab(cls, expr: str, timezone=None) -> CronSchedule:
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"cron {expr!r} must have five fields (minute hour day month weekday)")
        minute, hour, day, month, weekday = fields
        weekday = cron_weekdays(weekday)
        if day != "*" and weekday != "*":
            raise ValueError(f"cron {expr!r} restricts both the day of the month and the weekday: cron runs when either"
                             " matches, this scheduler only when both do; use two jobs, or * for one of them")
        trigger = cls(minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=timezone)
        trigger.fixed_time = not (minute.startswith("*") or hour.startswith("*"))  # cron's own rule
        return trigger

    def get_next_fire_time(self, previous_fire_time, now):
        t = super().get_next_fire_time(previous_fire_time, now)
        while t is not None and self.fixed_time and _second_of_repeated_hour(t, self.timezone):
            t = super().get_next_fire_time(t, t)
        return t


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def cron_weekdays(field: str) -> str:
    """Cron's weekday field with numbers (0/7 = Sunday) as names, which APScheduler reads the same way."""
    days: list[str] = []
    for part in field.lower().split(","):
        base, _, step = part.partition("/")
        if not (base == "*" or re.fullmatch(r"\d+(-\d+)?", base)):
            days.append(part)  # names (mon, mon-fri): APScheduler agrees with cron on those
            continue
        first, _, last = ("0-7" if base == "*" else base).partition("-")
        a, b = int(first), int(last or (7 if step else first))
        if max(a, b) > 7 or a > b:
            raise ValueError(f"weekday {part!r} is out of range: use 0-7 (0 and 7 are Sunday) or sun-sat")
        if base == "*" and not step:
            return "*"
        days += [_WEEKDAYS[d] for d in range(a, b + 1, int(step or 1)) if _WEEKDAYS[d] not in days]
    return "*" if len(set(days)) == 7 else ",".join(days)


def _second_of_repeated_hour(t: datetime, zone) -> bool:
    local = t.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def next_fires(trigger: BaseTrigger, after: datetime, n: int) -> list[datetime]:
    """The next `n` fire times at or after `after`."""
    out: list[datetime] = []
    t = trigger.get_next_fire_time(None, after)
    while t is not None and len(out) < n:
        out.append(t)
        t = trigger.get_next_fire_time(t, t)
    return out


def previous_fire(trigger: BaseTrigger, at_or_before: datetime) -> datetime | None:
    """The last fire time at or before the given time (searching back up to about a year)."""
    lookback = timedelta(hours=1)
    while lookback < timedelta(days=800):
        last, t = None, trigger.get_next_fire_time(None, at_or_before - lookback)
        while t is not None and t <= at_or_before:
            last, t = t, trigger.get_next_fire_time(t, t)
        if last is not None:
            return last
        lookback *= 2
    return None


def first_missed(trigger: BaseTrigger, last_fire: datetime, now: datetime) -> datetime | None:
    """The first fire after `last_fire` that is already due at `now`: where a catch-up starts."""
    t = trigger.get_next_fire_time(last_fire, last_fire + _TICK)
    return t if t is not None and t <= now else None
