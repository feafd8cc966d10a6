"""Several NPUs: one engine and one worker thread each, and what is shared between them.

`model.devices` lists the NPUs (default: one). Each gets its own engine,
opened once by `daemon.service.build`, and its own worker; the worker is the
only thread that calls its engine (engines are not thread-safe). Windows go to
whichever NPU is free, a camera's questions to the NPU that holds its prefix
(see `daemon.service.worker`), summary steps to any NPU: `EngineInUse` stands
for the engine of the NPU running the current step.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from daemon.engine.engine import Engine
from daemon.service.worker import NpuWorker


@dataclass(frozen=True, eq=False)
class Npu:
    """One NPU: its position in `model.devices` (`index`, the queue's affinity), its name in metrics and
    logs (`npu<index>`), its engine and the worker thread that alone calls that engine."""

    index: int
    label: str
    engine: Engine
    worker: NpuWorker


class EngineInUse:
    """Stands for the engine of the NPU that runs the current summary step.

    A summary is a series of model calls, and each call may run on another NPU; the summarizer holds this
    in place of an engine. `using(engine)` binds the engine for the calling thread while a step runs;
    outside a step (planning, token counts) the first NPU's engine answers, which is the same model.
    """

    def __init__(self, engines: Sequence[Engine]) -> None:
        self._default = engines[0]
        self._local = threading.local()

    @contextlib.contextmanager
    def using(self, engine: Engine) -> Iterator[None]:
        previous = getattr(self._local, "engine", None)
        self._local.engine = engine
        try:
            yield
        finally:
            self._local.engine = previous

    @property
    def current(self) -> Engine:
        return getattr(self._local, "engine", None) or self._default

    def __getattr__(self, name: str):
        return getattr(self.current, name)
