"""The ViT's input made ahead (Frame.vit_input, on the capture thread) gives the features and answers
the worker would have made itself; the prefix's token rows, looked up once, give the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.config.model import ModelSettings
from daemon.engine.engine import open_engine
from daemon.engine.export.tiny import make_demo_model
from daemon.types import Frame, Prompt, Window
from daemon.video.frames import FrameMaker, Preparer

PROMPT = Prompt("description", "Describe what happens.", max_new_tokens=8)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    return make_demo_model(tmp_path_factory.mktemp("demo_model"), progress=lambda line: None)


def frames(seed: int, make: FrameMaker) -> tuple[Frame, ...]:
    rng = np.random.default_rng(seed)
    return tuple(make("cam", float(i), i, rng.integers(0, 255, (180, 320, 3), np.uint8)) for i in range(4))


def test_prepared_frames_give_the_same_features_and_answers(demo_model):
    engine, fresh = (open_engine(ModelSettings(dir=demo_model, system="Cam.")) for _ in range(2))
    make = FrameMaker(0, engine.vision.fit)
    plain = frames(1, make)
    prepared = Preparer(engine.vision.prepare)(Window("cam", 0.0, 4.0, plain)).frames
    for a, b in zip(plain, prepared):
        assert b.vit_input is not None
        assert np.array_equal(fresh.vision.features(a), engine.vision.features(b))
    assert engine.vision.runs == 4
    assert fresh.ask(plain, [PROMPT]).answers[0].tokens == engine.ask(prepared, [PROMPT]).answers[0].tokens


def test_later_windows_answer_as_a_fresh_engine_does(demo_model):
    engine = open_engine(ModelSettings(dir=demo_model, system="Cam."))
    make = FrameMaker(0, engine.vision.fit)
    engine.ask(frames(2, make), [PROMPT])  # the prefix's token rows are looked up here ...
    later = frames(3, make)
    fresh = open_engine(ModelSettings(dir=demo_model, system="Cam."))
    assert engine.ask(later, [PROMPT]).answers[0].tokens == fresh.ask(later, [PROMPT]).answers[0].tokens
    assert engine.ask(later[:2], [PROMPT]).answers[0].tokens == fresh.ask(later[:2], [PROMPT]).answers[0].tokens
