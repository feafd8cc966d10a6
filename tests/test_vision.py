"""The prefix's token rows, looked up once per frame count, give the answers a fresh engine gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.config.model import ModelSettings
from daemon.engine.engine import open_engine
from daemon.engine.export.tiny import make_demo_model
from daemon.types import Frame, Prompt
from daemon.video.frames import FrameMaker

PROMPT = Prompt("description", "Describe what happens.", max_new_tokens=8)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    return make_demo_model(tmp_path_factory.mktemp("demo_model"), progress=lambda line: None)


def frames(seed: int, make: FrameMaker) -> tuple[Frame, ...]:
    rng = np.random.default_rng(seed)
    return tuple(make("cam", float(i), i, rng.integers(0, 255, (180, 320, 3), np.uint8)) for i in range(4))


def test_later_windows_answer_as_a_fresh_engine_does(demo_model):
    engine = open_engine(ModelSettings(dir=demo_model, system="Cam."))
    make = FrameMaker(0, engine.vision.fit)
    engine.ask(frames(2, make), [PROMPT])  # the prefix's token rows are looked up here ...
    later = frames(3, make)
    fresh = open_engine(ModelSettings(dir=demo_model, system="Cam."))
    assert engine.ask(later, [PROMPT]).answers[0].tokens == fresh.ask(later, [PROMPT]).answers[0].tokens
    assert engine.ask(later[:2], [PROMPT]).answers[0].tokens == fresh.ask(later[:2], [PROMPT]).answers[0].tokens
