"""ONNX Runtime sessions: the thread pool is explicit (threads from `model.threads`, never spinning)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config.model import ModelSettings
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import open_engine
from daemon.engine.export.tiny import make_demo_model


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    return make_demo_model(tmp_path_factory.mktemp("demo_model"), progress=lambda line: None)


def pool(session) -> tuple[int, int, str, str]:
    opts = session.inner._sess.get_session_options()
    return (opts.intra_op_num_threads, opts.inter_op_num_threads,
            opts.get_session_config_entry("session.intra_op.allow_spinning"),
            opts.get_session_config_entry("session.inter_op.allow_spinning"))


def test_every_graph_gets_one_thread_and_no_spinning_by_default(demo_model):
    model = open_model(locate(demo_model), "onnxruntime")
    for session in [*model.layers, model.post, model.vit]:
        assert pool(session) == (1, 1, "0", "0")


def test_model_threads_reaches_every_graph(demo_model):
    engine = open_engine(ModelSettings(dir=demo_model, threads=2))
    for session in [*engine.model.layers, engine.model.post, engine.model.vit]:
        assert pool(session) == (2, 1, "0", "0")


def test_negative_threads_are_refused_with_the_key():
    with pytest.raises(ValueError, match="threads"):
        ModelSettings(dir=Path("."), threads=-1)
