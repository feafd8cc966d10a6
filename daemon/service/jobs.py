"""What an NPU worker does with a job: the handler of its kind, then one policy for every engine error:
`Cancelled` stores nothing; a `QuestionError` is the asker's reply (a window is settled as refused);
a state file that cannot be written stops the daemon (`fail`); anything else stops the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from daemon.errors import Cancelled, PublishError, QuestionError, StateError, StorageError, VlmwatchError
from daemon.service.asks import AskHandler
from daemon.service.cameras import Camera
from daemon.service.chat import ChatService
from daemon.service.events import EventService
from daemon.service.ledger import Outcome, WindowLedger
from daemon.service.metrics import Metrics
from daemon.service.windows import WindowHandler
from daemon.service.workers import Npu
from daemon.service.workqueue import (AskJob, ChatJob, Job, StoryJob, SummaryJob, WindowJob, WorkQueue, describe,
                                     kind_of)

log = logging.getLogger(__name__)
STORAGE_ERRORS = (StateError, StorageError, PublishError)  # a state file (history, outbox, ...) cannot be written


def summary_step(job: SummaryJob, npu: Npu, queue: WorkQueue) -> None:
    """One model call of a summary on this NPU's engine, then back in line behind the windows that arrived
    meanwhile (the next call may run on another NPU); with the summary list full, finish it here."""
    if not job.run.step(npu.engine):
        return
    while not queue.put_summary(job):
        if not job.run.step(npu.engine):
            return


class JobRunner:
    """Hands each job to its kind's handler, on the engine of the NPU that took it."""

    def __init__(self, cameras: Mapping[str, Camera], windows: WindowHandler, asks: AskHandler,
                 chat: ChatService | None, queue: WorkQueue, ledger: WindowLedger, metrics: Metrics,
                 stop: threading.Event, fail: Callable[[VlmwatchError], None], events: EventService | None = None) -> None:
        self.cameras, self.windows, self.asks, self.chat, self.events = cameras, windows, asks, chat, events
        self.queue, self.ledger, self.metrics, self.stop, self.fail = queue, ledger, metrics, stop, fail

    def handle(self, job: Job, npu: Npu) -> None:
        started = time.monotonic()
        try:
            self._run(job, npu)
        except Cancelled:
            log.info("%s: cancelled by shutdown; nothing was published for it", describe(job))
        except QuestionError as exc:
            # An asker's question refused is the asker's business (the reply says why); a window's or a
            # summary's prompt that does not fit is the configuration's, which someone must fix.
            log.log(logging.INFO if isinstance(job, AskJob) else logging.ERROR, "%s: %s", describe(job), exc)
            self._refused(job, exc)
        except STORAGE_ERRORS as exc:
            self.fail(exc)
        finally:
            self.metrics.npu_job(npu.label, kind_of(job), time.monotonic() - started)

    def _run(self, job: Job, npu: Npu) -> None:
        if isinstance(job, StoryJob):  # before WindowJob, which it extends
            if self.events is None:
                raise TypeError("an event's story reached the NPU, but events are not enabled")
            self.events.tell_story(job, npu)
        elif isinstance(job, WindowJob):
            self.windows.analyse(job, npu, self.cameras[job.window.camera].settings)
        elif isinstance(job, AskJob):
            self.asks.answer(job, npu)
        elif isinstance(job, ChatJob):
            if self.chat is None:
                raise TypeError("an HTTP chat job reached the NPU, but http is not enabled")
            self.chat.answer(job, self.stop, npu.engine)
        elif isinstance(job, SummaryJob):
            summary_step(job, npu, self.queue)
        else:
            raise TypeError(f"the NPU queue handed out an unknown job: {job!r}")

    def _refused(self, job: Job, exc: QuestionError) -> None:
        try:
            if isinstance(job, AskJob):
                self.asks.refused(job, str(exc))
            elif isinstance(job, WindowJob) and not isinstance(job, StoryJob):
                self.ledger.settle(job.window, Outcome.REFUSED, str(exc))
        except STORAGE_ERRORS as failure:
            self.fail(failure)
