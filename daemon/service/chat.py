"""The HTTP API's side of the NPU queue (`daemon.http.server.Backend`): requests rate-limited per client
and checked before they are queued (a refused request costs no NPU time), then waiting with MQTT asks
within the same share of NPU time. `answer` runs on the NPU thread and streams to the request's sink.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from typing import Callable

from daemon.config.http import HttpSettings
from daemon.engine.constrain import grammars_of
from daemon.engine.engine import Engine, Sampling
from daemon.errors import Busy, Cancelled, PromptTooLongError, QuestionError
from daemon.http.messages import Completion, Generated, ResponseFormat, Sink
from daemon.http.profiles import TEMPLATES, recognise, render
from daemon.service.metrics import Metrics
from daemon.service.workqueue import ChatJob, RateLimiter, WorkQueue
from daemon.types import Prompt

log = logging.getLogger(__name__)
CHARS_PER_TOKEN = 64  # no real text packs more into one token: longer questions cannot fit, whatever they say


class EitherStop:
    """Set when any of its events is: a request's own cancel and the daemon's stop, for the engine."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def frame_budget(engine: Engine, most: int) -> int:
    """How many frames (images) one request may have: at most `most`, and the prefix must leave room."""
    if engine.vision is None:
        return 0
    n = 0
    while n < most and engine.prompt_tokens(n + 1, "") < engine.limits.max_prompt:
        n += 1
    return n


class ChatService:
    def __init__(self, engine: Engine, queue: WorkQueue, limiter: RateLimiter, metrics: Metrics,
                 settings: HttpSettings, healthy: Callable[[], bool], clock: Callable[[], float] = time.monotonic):
        self.engine, self.queue, self.limiter, self.metrics = engine, queue, limiter, metrics
        self.settings, self._healthy, self._clock = settings, healthy, clock
        self.model = engine.name
        self._frames = frame_budget(engine, settings.max_images)
        self._typical = 10.0  # seconds one request keeps the NPU busy (moving average): for Retry-After
        self._reported: set[tuple] = set()  # (client, images used, sent, profile) already logged

    # -- the HTTP server's thread (daemon.http.server.Backend) ------------------------------

    def healthy(self) -> bool:
        return self._healthy()

    def max_images(self) -> int:
        return self._frames

    def admit(self, client: str) -> None:
        wait = self.limiter.take(client, self._clock())
        if wait > 0:
            self.metrics.ask_refused("http", "rate")
            raise Busy(f"rate limit: requests per client {self.limiter.describe()} (asks.per_minute); retry in "
                       f"{math.ceil(wait)} s", wait, "rate")

    def fit(self, completion: Completion) -> Completion:
        """The request as the model will answer it: a recognised client's prompt rewritten by its profile
        (and its reply schema enforced), else as sent; QuestionError (PromptTooLongError with both numbers)
        before any NPU time is spent."""
        c, n = completion, len(completion.frames)
        profiles = self.settings.profiles
        match = recognise(c.turns, n, lambda name: profiles.get(name).enabled) if c.turns else None
        if match is not None:
            template = profiles.get(match.profile).prompt or TEMPLATES[match.profile]
            question = render(match, template, lambda text: self._fits(n, text))
            if question is None:
                first = render(match, template, lambda text: True).split("\n")[0]
                self.engine.check(n, Prompt("http", first), what=f"shortest prompt of profile {match.profile}")
                raise PromptTooLongError(f"profile {match.profile}'s prompt does not fit beside {n} frames")
            fmt = c.response_format or (ResponseFormat(match.schema, match.profile) if match.schema else None)
            c = replace(c, question=question, profile=match.profile, response_format=fmt)
        else:
            limit = self.engine.limits.max_prompt
            if len(c.question) > CHARS_PER_TOKEN * limit:  # not worth tokenizing (megabytes of text)
                raise PromptTooLongError(f"the request's text is {len(c.question)} characters, far more than the "
                                         f"model's largest prefill of {limit} tokens holds; send a shorter question")
            self.engine.check(n, Prompt("http", c.question), what="request's prompt")
        if c.response_format is not None:
            room = self.engine.limits.kv_len - self.engine.prompt_tokens(n, c.question)
            grammars = grammars_of(self.engine)
            grammars.check(c.response_format.schema, min(c.max_tokens, room))
            grammars.prepare()  # on this (HTTP) thread: the first NPU's gets the tables ready-made
        return c

    def _fits(self, n_frames: int, text: str) -> bool:
        try:
            self.engine.check(n_frames, Prompt("http", text))
        except QuestionError:
            return False
        return True

    def submit(self, completion: Completion, client: str, sink: Sink) -> Callable[[], None]:
        """Queue the request; Busy when too many wait. Returns `cancel`, a no-op once it was answered."""
        self._report_fit(client, completion)
        job = ChatJob(client, completion, sink)
        if not self.queue.put_ask(job):
            self.metrics.ask_refused("http", "queue")
            retry = self._typical * (self.queue.waiting(ChatJob) + 1)
            raise Busy(f"{self.settings.max_waiting} requests are already waiting for the NPU (http.max_waiting);"
                       f" retry in {math.ceil(retry)} s", retry, "queue")

        def cancel() -> None:
            if job.done.is_set() or job.cancel.is_set():
                return
            job.cancel.set()  # the engine stops at its next step; a waiting job is taken out of line
            self.queue.withdraw(job)
            self.metrics.http_cancelled.inc()
            log.info("HTTP API: request from %s cancelled (the client went away or gave up waiting)", client)

        return cancel

    def _report_fit(self, client: str, c: Completion) -> None:
        """Log, once per client, what was done to fit its requests (a client sends the same kind again)."""
        seen = (client, len(c.frames), c.images_sent, c.profile)
        if (len(c.frames) < c.images_sent or c.profile) and seen not in self._reported:
            if len(self._reported) < 1024:
                self._reported.add(seen)
            log.info("HTTP API: %s sends %d images, the model takes %d (an even sample, first and last kept)%s",
                     client, c.images_sent, len(c.frames),
                     f"; its prompt is rewritten by profile {c.profile}" if c.profile else "")

    # -- the NPU worker's thread ----------------------------------------------------------

    def answer(self, job: ChatJob, stop: threading.Event, engine: Engine) -> None:
        """Answer one request on `engine` (the NPU whose worker took it); every outcome goes to its sink.
        Errors other than the client's own cancellation are raised on for `daemon.service.jobs` (a
        QuestionError is logged, anything else is fatal)."""
        if job.cancel.is_set():
            job.done.set()
            return  # its client left while it waited
        c, sink, t0 = job.request, job.sink, time.monotonic()
        either = EitherStop(stop, job.cancel)
        prompt = Prompt("http", c.question, max_new_tokens=c.max_tokens)
        try:
            sink.started()
            fmt = c.response_format
            constrain = None if fmt is None else grammars_of(engine).start(fmt.schema)
            prefix = engine.prefill(c.frames, [prompt], stop=either)
            answer = engine.answer(prefix, prompt, on_token=lambda _id, text: sink.token(text), stop=either,
                                   sampling=self.sampling(c), stop_texts=c.stop, constrain=constrain)
        except Cancelled as exc:
            sink.failed(exc)
            if not job.cancel.is_set():
                raise  # the daemon is stopping
            return
        except BaseException as exc:
            sink.failed(exc)
            raise
        finally:
            job.done.set()
            self._typical = 0.8 * self._typical + 0.2 * (time.monotonic() - t0)
        self.metrics.observe_timings(prefix.timings)
        self.metrics.observe_timings(answer.timings)
        self.metrics.http_completion(answer.prompt_tokens, len(answer.tokens))
        sink.finished(Generated(answer.text, answer.prompt_tokens, len(answer.tokens),
                                "length" if answer.stop_reason == "length" else "stop",
                                prefix.timings.modelled_npu_ms + answer.timings.modelled_npu_ms,
                                len(c.frames), c.images_sent, c.profile))

    def sampling(self, c: Completion) -> Sampling | None:
        """The request's sampling over the daemon's (`model.sampling`); None: the daemon's own."""
        if c.temperature is None and c.top_p is None and c.seed is None:
            return None
        base = self.engine.sampling
        return Sampling(temperature=base.temperature if c.temperature is None else c.temperature, top_k=base.top_k,
                        top_p=base.top_p if c.top_p is None else c.top_p,
                        seed=base.seed if c.seed is None else c.seed % 2**64)  # OpenAI seeds may be negative
