"""Shared pytest fixtures. Fixtures used by one test module live in that module."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random InternVL exported once per session (`vlmwatch make-tiny-model`, seed 0).

    The returned folder is an ONNX bundle (manifest.json, vit/layer/post graphs,
    embeddings.npy, tokenizer/) whose shape groups use prefill 16, KV 320 and 16
    groups; `hf/` beside it is the transformers checkpoint the graphs were
    exported from, the numerical reference. Treat it as read-only: it is shared.
    """
    from daemon.engine.export.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0, progress=lambda line: None)
