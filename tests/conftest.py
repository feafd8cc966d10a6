"""Shared pytest fixtures. Fixtures used by one test module live in that module.

Test modules never import each other: what several of them need is here, or in
a helper module (clips.py, histories.py, mosquitto.py, rtsp_server.py).
"""

import importlib.util
import sys
from pathlib import Path

import pytest

TORCH_REASON = "compares with transformers, which needs torch: pip install 'vlmwatch[export]' (tests/run.sh does)"

def pytest_runtest_setup(item):
    """`@pytest.mark.torch` tests are collected everywhere and skipped with the reason where torch is absent."""
    if item.get_closest_marker("torch") is not None:
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"{' and '.join(missing)} not installed: this test {TORCH_REASON}")


# A real mosquitto: the `mosquitto`, `listen` and `pki` fixtures, for every test module.
pytest_plugins = ("mosquitto",)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random InternVL built once per session without torch (`vlmwatch demo`'s builder, seed 0).

    The returned folder is an ONNX bundle (manifest.json, vit/layer/post graphs,
    embeddings.npy, tokenizer/) whose shape groups use prefill 16, KV 320 and 16
    groups. Treat it as read-only: it is shared. Tests that compare with
    transformers use `tiny_reference` instead.
    """
    from daemon.engine.export.tiny import make_demo_model

    return make_demo_model(tmp_path_factory.mktemp("tiny_model"), seed=0, progress=lambda line: None)


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> Path:
    """The tiny model built and exported with transformers (`vlmwatch make-tiny-model`, seed 0): the same
    bundle layout as `tiny_model`, and `hf/` beside it, the checkpoint the graphs were exported from, the
    numerical reference. Skipped, saying why, where torch is not installed."""
    pytest.importorskip("torch", reason=TORCH_REASON)
    pytest.importorskip("transformers", reason=TORCH_REASON)
    from daemon.engine.export.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_reference"), seed=0, progress=lambda line: None)


@pytest.fixture
def axengine_tag() -> str:
    """The upstream pyaxengine build the fake behaves as; parametrize `axengine_tag` to choose another."""
    return "0.1.3.rc3"


@pytest.fixture
def axengine(monkeypatch, tmp_path_factory, axengine_tag):
    """The fake vendor `axengine` (tests/fake_axengine) as `import axengine` sees it, its records cleared.

    It behaves as upstream tag `axengine_tag` and is "installed" with that build's version (a dist-info
    first on sys.path, as a wheel leaves it)."""
    fake = Path(__file__).parent / "fake_axengine"
    spec = importlib.util.spec_from_file_location("fake_axengine_upstream", fake / "axengine" / "_upstream.py")
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)  # the tag table alone, without importing the package
    version = upstream.version_of(axengine_tag)
    for name in [m for m in sys.modules if m == "axengine" or m.startswith("axengine.")]:
        sys.modules.pop(name)
    dist = tmp_path_factory.mktemp("axengine_dist")
    (dist / f"axengine-{version}.dist-info").mkdir()
    (dist / f"axengine-{version}.dist-info" / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: axengine\nVersion: {version}\n")
    monkeypatch.setenv("FAKE_AXENGINE_TAG", axengine_tag)
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.syspath_prepend(str(dist))
    import axengine

    assert Path(axengine.__file__).is_relative_to(fake) and axengine.TAG == axengine_tag
    axengine.calls.clear()
    axengine.traffic_log.clear()
    axengine.sessions.clear()
    axengine.context_sets.clear()
    yield axengine
    for name in [m for m in sys.modules if m == "axengine" or m.startswith("axengine.")]:
        sys.modules.pop(name)


@pytest.fixture(scope="module")
def yard_clip(tmp_path_factory) -> Path:
    """40 s of a still, noisy yard; a box enters at 12 s, crosses, and leaves at 28 s."""
    from clips import Scene, Thing, write_scene

    scene = Scene(duration=40.0, things=(Thing(appear=12.0, leave=28.0, start=(20, 100), stop=(260, 100),
                                              move_from=12.0, move_to=28.0),))
    return write_scene(tmp_path_factory.mktemp("clip") / "yard.mp4", scene)


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory) -> Path:
    """Two minutes of a yard in which a box keeps moving: every window differs from the last."""
    from clips import Scene, Thing, write_scene

    scene = Scene(duration=120.0, things=(Thing(appear=0.0, leave=120.0, start=(20, 100), stop=(260, 100),
                                               move_from=0.0, move_to=120.0),))
    return write_scene(tmp_path_factory.mktemp("clip") / "long.mp4", scene)


@pytest.fixture
def daemon_config(tmp_path, tiny_model):
    """`daemon_config(source, **camera_options) -> Path`: a config.yaml in tmp_path running the tiny
    model on one camera, `yard`, with its history in tmp_path/state, without metrics."""

    def write(source, **camera) -> Path:
        extra = "".join(f"    {k}: {v}\n" for k, v in camera.items())
        path = tmp_path / "config.yaml"
        path.write_text(
            f"model:\n  dir: {tiny_model}\n  backend: onnxruntime\n  system: You watch a camera.\n"
            f"cameras:\n  - name: yard\n    source: {source}\n{extra}"
            f"prompts:\n  max_new_tokens: 8\n"
            f"state_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
        return path

    return write


@pytest.fixture(scope="session")
def board_model(tmp_path_factory) -> Path:
    """A tiny random model (numpy, no torch) whose limits are the AX650N "2048" build's: prefill chunks of
    128, 17 groups (prompts up to 2176 tokens), a KV cache of 2559 rows. Its frames are 16 tokens each
    (the real ViT gives 256), so it has room for more than 8 of them; everything else is the board's."""
    from daemon.engine.export.tiny import make_demo_model

    return make_demo_model(tmp_path_factory.mktemp("board_model"), seed=0, prefill_len=128, kv_len=2559, groups=17,
                           progress=lambda line: None)
