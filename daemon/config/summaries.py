"""The `summaries:` section: one scheduled summary job each.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from daemon.config.base import Name, Section, Timezone
from daemon.times import parse_duration

SINCE_LAST = "since_last"


class SummarySettings(Section):
    id: Name = Field(description="Job name (1-64 lower-case letters, digits, '_' and '-'); MQTT topic "
                    "<base>/summary/<id>.")
    cron: str = Field(description="Five-field cron expression, e.g. '0 20 * * *'.")
    cameras: list[str] | None = Field(None, description="Cameras to summarise; default all.")
    period: str = Field(SINCE_LAST, description="A duration such as 2h, 24h or 7d ending at the run's scheduled"
                        " time, or since_last: from the end of the previous run.")
    prompt: str = Field("Summarise what happened.", min_length=1, description="The summary question.")
    max_new_tokens: int = Field(200, ge=1, description="Longest summary in tokens.")
    timezone: Timezone = Field(None, description="IANA zone of the cron expression; default the config's"
                                 " top-level timezone, else the system's.")
    misfire_grace: str = Field("1h", description="How late a run may still start when the daemon was stopped or"
                               " busy at its time (runs missed meanwhile are merged into one); later, it is skipped.")

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        parse_period(v)
        return v

    @field_validator("misfire_grace")
    @classmethod
    def _grace(cls, v: str) -> str:
        parse_duration(v, "misfire_grace")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        # cron's weekday numbers (0 = Sunday), not APScheduler 3's
        from daemon.config.cron import CronSchedule

        if len(v.split()) != 5:
            raise ValueError(f"cron {v!r} must have five fields (minute hour day month weekday)")
        try:
            CronSchedule.from_crontab(v)
        except ValueError as exc:
            message = str(exc)
            raise ValueError(message if message.startswith("cron ") else f"invalid cron {v!r}: {exc}") from None
        return v


def parse_period(text: str) -> float | None:
    """A job's `period`: None for since_last, else seconds."""
    if text.strip() == SINCE_LAST:
        return None
    try:
        return parse_duration(text, "period")
    except ValueError as exc:
        raise ValueError(f"{exc}; or since_last for everything since the previous run") from None
