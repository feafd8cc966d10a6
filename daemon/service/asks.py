"""MQTT asks: an ad-hoc question on a camera's latest analysed window, its prefix reused.

`admit` runs on paho's thread and only queues (or refuses with `Busy`);
`answer` runs on the NPU worker that holds the camera's prefix.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection

from daemon.errors import Busy, QuestionError
from daemon.service.metrics import Metrics
from daemon.service.publishing import Publishing
from daemon.service.windows import LatestWindows, make_result
from daemon.service.workers import Npu
from daemon.service.workqueue import AskJob, RateLimiter, WorkQueue
from daemon.state.history import History
from daemon.types import Prompt


class AskHandler:
    def __init__(self, cameras: Collection[str], latest: LatestWindows, queue: WorkQueue, limiter: RateLimiter,
                 history: History, metrics: Metrics, stop: threading.Event, *, publisher: Publishing | None,
                 max_new_tokens: int, clock: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self.cameras, self.latest, self.queue, self.limiter = cameras, latest, queue, limiter
        self.history, self.metrics, self.stop, self.publisher = history, metrics, stop, publisher
        self.max_new_tokens, self.clock, self.monotonic = max_new_tokens, clock, monotonic

    def admit(self, request) -> None:
        """Queue an MQTT ask (paho's thread). Raising sends the asker an error reply (`Busy` for a client
        over its rate limit or a full queue)."""
        if request.camera not in self.cameras:
            raise ValueError(f"unknown camera {request.camera!r}")
        wait = self.limiter.take(f"mqtt:{request.camera}", self.monotonic())
        if wait > 0:
            self.metrics.ask_refused("mqtt", "rate")
            raise Busy(f"too many questions on camera {request.camera}: {self.limiter.describe()}; ask again in"
                       f" {math.ceil(wait)} s", wait, "rate")
        latest = self.latest.get(request.camera)
        if not self.queue.put_ask(AskJob(request.camera, request, latest.npu if latest else None)):
            self.metrics.ask_refused("mqtt", "queue")
            raise Busy("too many questions are waiting for the NPU; ask again in a minute", 60.0, "queue")

    def answer(self, job: AskJob, npu: Npu) -> None:
        """Answer on `npu`'s engine. The queue gives the job to the NPU that held the prefix when it was
        asked; had a newer window moved to another NPU since, this engine prefills it again: slower,
        same answer."""
        request = job.request
        latest = self.latest.get(job.camera)
        if latest is None:
            raise QuestionError(f"camera {job.camera} has no analysed window yet; ask again later")
        prompt = Prompt(f"ask-{request.id}", request.question, tuple(request.choices),
                        max_new_tokens=self.max_new_tokens)
        answer = npu.engine.answer(latest.prefix, prompt, stop=self.stop)
        result = make_result(latest.window, request.question, answer, npu.engine, self.clock())
        self.history.record_result(None, result)
        if self.publisher is not None:
            self.publisher.reply(request, result)

    def refused(self, job: AskJob, error: str) -> None:
        """Tell the asker why its question was not answered."""
        if self.publisher is not None:
            self.publisher.reply_error(job.request, error)
