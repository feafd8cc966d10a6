"""The real daemon in the test process: built as `vlmwatch run` builds it, run on a thread.

    with running(cfg, board_speed_engine(tiny_model)) as app:
        ...                                   # app.metrics, app.queue, app.pipeline.chat
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from daemon.config import Config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.service.build import build_app

SYSTEM = "You watch a camera."


def board_speed_engine(model: Path, max_new_tokens: int = 2) -> Engine:
    """The tiny model whose every graph call takes as long as it would on an AX650N."""
    return Engine(open_model(locate(model), sleep=True), system=SYSTEM, max_new_tokens=max_new_tokens)


@contextmanager
def running(cfg: Config, engine: Engine | None = None):
    """The daemon started (its HTTP server listening), ticking on a thread; stopped, joined and closed on exit,
    and its exit code checked (0)."""
    app, closers = build_app(cfg, engine=engine)
    codes = []
    thread = threading.Thread(target=lambda: codes.append(app.loop()), name="daemon")
    try:
        app.start()
        thread.start()
        yield app
    finally:
        app.stop.set()
        if thread.is_alive():
            thread.join(60)
        for close in reversed(closers):
            close()
    assert codes == [0]
