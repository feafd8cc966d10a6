"""A slow NPU and a fast camera: bounded memory, counted drops, the newest window next."""

import threading
import time

import numpy as np

from daemon.config import Config
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.service.build import assemble
from daemon.service.metrics import Metrics
from daemon.state.history import History
from daemon.types import Frame, Window
from daemon.video import SourceBase


class FastSource(SourceBase):
    """Produces windows as fast as the consumer takes them (like a file replayed at full speed)."""

    def __init__(self, name, count):
        self.name, self.count, self.produced = name, count, 0

    def windows(self, stop):
        rng = np.random.default_rng(1)
        for i in range(self.count):
            if stop.is_set():
                return
            frames = tuple(Frame(self.name, 8.0 * i + j, 2 * i + j, rng.integers(0, 255, (32, 32, 3), np.uint8))
                           for j in range(2))
            self.produced += 1
            yield Window(self.name, 8.0 * i, 8.0 * i + 8, frames)


def test_slow_engine_drops_stale_windows_and_analyses_the_newest(tmp_path, tiny_model):
    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model)},
        "cameras": [{"name": "cam", "source": "unused.mp4", "frames": 2, "gate": {"enabled": False}}],
        "prompts": {"max_new_tokens": 2}, "state_dir": str(tmp_path),
        "events": {"enabled": False}})  # windows only: an event's story would be a queued job of its own
    # sleep=True: every graph call takes as long as it would on the AX650N (~0.9 s per 2-frame window)
    engine = Engine(open_model(locate(tiny_model), sleep=True), system="Watch.", max_new_tokens=2)
    source = FastSource("cam", 40)
    metrics = Metrics()
    depths = []
    with History(tmp_path / "history.sqlite").open() as history:
        app = assemble(cfg, engine, {"cam": source}, history, metrics=metrics)
        sampler_stop = threading.Event()

        def sample_depth():
            while not sampler_stop.wait(0.01):
                depths.append(app.queue.depth)

        sampler = threading.Thread(target=sample_depth)
        sampler.start()
        t0 = time.monotonic()
        assert app.run(once=True) == 0
        sampler_stop.set()
        sampler.join()
        windows = history.windows(0, time.time() + 1)

    assert source.produced == 40 and len(windows) == 40  # every window is accounted for
    analysed = sorted((w for w in windows if w.analysed), key=lambda w: w.recorded)
    dropped = [w for w in windows if not w.analysed]
    assert all(w.reason == "dropped: a newer window replaced it" for w in dropped)
    assert len(analysed) < 10 and len(dropped) == 40 - len(analysed)
    assert analysed[-1].start == 8.0 * 39  # the newest window is the one analysed last
    assert max(depths) <= 1  # one pending window per camera, however fast the source
    assert metrics.windows_dropped.labels(camera="cam")._value.get() == len(dropped)
    assert time.monotonic() - t0 < 30


def test_a_recording_reads_its_next_window_only_once_the_npu_can_queue_it(tmp_path, tiny_model, yard_clip):
    """Frames are the daemon's memory: a file paced by the NPU holds one window in flight and one pending,
    never a third it read ahead while waiting."""
    from daemon.config.cameras import SourceSettings
    from daemon.video.file import FileSource

    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model)},
        "cameras": [{"name": "yard", "source": str(yard_clip), "frames": 2, "gate": {"enabled": False}}],
        "prompts": {"max_new_tokens": 2}, "state_dir": str(tmp_path)})
    engine = Engine(open_model(locate(tiny_model), sleep=True), system="Watch.", max_new_tokens=2)
    depths = []

    class Watched(FileSource):
        def windows(self, stop):
            for window in super().windows(stop):
                depths.append(app.queue.depth)  # windows waiting for the NPU when this one was read
                yield window

    source = Watched("yard", yard_clip, SourceSettings(frames=2, gate={"enabled": False}))
    with History(tmp_path / "history.sqlite").open() as history:
        app = assemble(cfg, engine, {"yard": source}, history)
        assert app.run(once=True) == 0
        windows = history.windows(0, time.time() + 1)
    assert len(depths) == 5 and all(w.analysed for w in windows) and len(windows) == 5
    assert depths == [0] * 5
