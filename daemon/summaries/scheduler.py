"""When summaries run: APScheduler 3 cron triggers that only queue work for the NPU thread.

    scheduler = SummaryScheduler(cfg.summaries, runlog)
    scheduler.start(submit)     # submit(job, Fire) queues the model work; never runs it here

Missed runs coalesce, runs later than `misfire_grace` are skipped, and the `RunLog` catches up a
run missed while stopped without running a fire twice.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable, Sequence

from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from daemon.config.summaries import SummarySettings
from daemon.config.cron import _TICK, CronSchedule, first_missed, previous_fire
from daemon.summaries.runner import Fire, RunLog
from daemon.times import parse_duration, zone_of

log = logging.getLogger(__name__)


Submit = Callable[[SummarySettings, Fire], bool]  # True when the work was queued
TriggerFor = Callable[[SummarySettings], BaseTrigger]


def cron_trigger(job: SummarySettings) -> CronSchedule:
    return CronSchedule.from_crontab(job.cron, timezone=zone_of(job.timezone))


class SummaryScheduler:
    """One APScheduler job per configured summary; `trigger_for` makes each job's trigger (tests may shift it)."""

    def __init__(self, jobs: Sequence[SummarySettings], runlog: RunLog | None, *, trigger_for: TriggerFor = cron_trigger,
                 clock: Callable[[], float] = time.time):
        self.jobs = {job.id: job for job in jobs}
        self.runlog, self.trigger_for, self.clock = runlog, trigger_for, clock
        self._triggers: dict[str, BaseTrigger] = {}
        self._scheduler: BackgroundScheduler | None = None
        self._submit: Submit | None = None

    def start(self, submit: Submit) -> None:
        """Add every job (with a catch-up of runs missed while stopped) and start the scheduler thread."""
        if not self.jobs:
            return
        self._submit = submit
        scheduler = BackgroundScheduler(timezone=timezone.utc)
        scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        for job in self.jobs.values():
            trigger = self._triggers[job.id] = self.trigger_for(job)
            options = {}
            last = self.runlog.last(job.id) if self.runlog else None
            missed = first_missed(trigger, _utc(last.fire), now) if last else None
            if missed is not None:
                log.info("summary %s: a run was due at %s while vlmwatch was stopped; catching up", job.id,
                         missed.isoformat(timespec="seconds"))
                options["next_run_time"] = missed  # APScheduler coalesces every run since then into one
            scheduler.add_job(self._fire, trigger, args=(job.id,), id=job.id, name=f"summary {job.id}",
                              coalesce=True, max_instances=1,
                              misfire_grace_time=int(parse_duration(job.misfire_grace)), **options)
        scheduler.start()
        self._scheduler = scheduler
        for job_id, at in self.next_fire_times().items():
            log.info("summary %s: next run at %s", job_id, at.isoformat(timespec="seconds") if at else "never")

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)  # joins the scheduler thread; fires only queue work
            self._scheduler = None

    def next_fire_times(self) -> dict[str, datetime | None]:
        if self._scheduler is None:
            return {}
        return {j.id: j.next_run_time for j in self._scheduler.get_jobs()}

    def fire_for(self, job_id: str, now: float) -> Fire:
        """The due run a fire at `now` stands for: the schedule's latest time at or before `now`."""
        trigger = self._triggers[job_id]
        at = previous_fire(trigger, datetime.fromtimestamp(now, timezone.utc))
        if at is None:  # the trigger fired, so it has a time at or before now; be safe anyway
            return Fire(job_id, now, None)
        before = previous_fire(trigger, at - _TICK)
        return Fire(job_id, at.timestamp(), before.timestamp() if before else None)

    def _fire(self, job_id: str) -> None:
        """Runs on APScheduler's executor: hand the work to the NPU queue and return."""
        fire = self.fire_for(job_id, self.clock())
        if not self._submit(self.jobs[job_id], fire):
            log.warning("summary %s: the NPU queue already holds too many summaries; the run for %s is dropped",
                        job_id, _utc(fire.at).astimezone().isoformat(timespec="seconds"))

    def _missed(self, event: JobExecutionEvent) -> None:
        job = self.jobs.get(event.job_id)
        if job is not None:
            log.warning("summary %s: the run due at %s started more than misfire_grace (%s) late and is skipped;"
                        " a since_last period is covered by the next run", job.id,
                        event.scheduled_run_time.isoformat(timespec="seconds"), job.misfire_grace)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)
