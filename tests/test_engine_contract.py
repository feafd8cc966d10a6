"""The NPU path through `import axengine`, against the board's exact session contract.

A fake `axengine` package (tests/fake_axengine) declares the full-size
InternVL3-2B 2048 video build and checks every feed the way pyaxengine does.
"""

import sys

import numpy as np
import pytest
from boards import board_layout

from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.types import Frame, Prompt

LAYERS = 28


def frames(n):
    rng = np.random.default_rng(0)
    return [Frame("cam", float(i), i, rng.integers(0, 255, (120, 160, 3), np.uint8)) for i in range(n)]


def test_eight_frames_and_twenty_decode_steps_pass_every_board_check(axengine, tiny_model, tmp_path):
    root = board_layout(tmp_path / "model", tiny_model / "tokenizer")
    model = open_model(locate(root))
    assert all(s.providers == ["AxEngineExecutionProvider"] for s in axengine.sessions)
    engine = Engine(model, system="You watch a camera.", max_new_tokens=20)
    g = engine.llm.geo
    assert (g.hidden, g.kv_dim, g.kv_len, g.prefill_len, g.groups) == (1536, 256, 2559, 128, 17)

    analysis = engine.ask(frames(8), [Prompt("describe", "Describe the video.")])
    answer = analysis.answers[0]

    assert answer.stop_reason == "length" and len(answer.tokens) == 20
    assert list(answer.tokens) == list(axengine.TOKEN_CYCLE)[:20]
    n_prompt = answer.prompt_tokens
    assert 2048 < n_prompt <= 2176  # 8 x 256 image tokens: the 2048 build's range
    chunks = -(-n_prompt // 128)
    layer_calls = [grp for name, grp in axengine.calls if "_together" in name]
    assert sorted(set(layer_calls) - {0}) == list(range(1, chunks + 1))
    assert layer_calls.count(0) == 19 * LAYERS  # the 20th token needs no forward pass
    assert sum(1 for name, _ in axengine.calls if "vit" in name) == 8


def test_m2_card_uses_axclrt_provider_with_device_id(axengine, tiny_model, tmp_path):
    root = board_layout(tmp_path / "model", tiny_model / "tokenizer")
    open_model(locate(root), device_id=1)
    assert axengine.sessions and all(
        s.providers == ["AXCLRTExecutionProvider"] and s.provider_options == [{"device_id": 1}]
        for s in axengine.sessions)


def test_shape_bug_fails_like_the_board(axengine, tiny_model, tmp_path):
    root = board_layout(tmp_path / "model", tiny_model / "tokenizer")
    model = open_model(locate(root))
    layer = model.layers[0]
    feeds = {p.name: np.zeros(p.shape, p.dtype) for p in layer.inputs(2)}
    feeds["mask"] = np.zeros((1, 128, 128), feeds["mask"].dtype)  # group 1's mask sent to group 2
    with pytest.raises(AssertionError, match=r"model inputs\(mask\) expect shape \[1, 128, 256\]"):
        layer.run(feeds, 2)


def test_missing_axengine_says_how_to_install_it(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "axengine", None)  # import raises ImportError
    root = board_layout(tmp_path / "model", tiny_model / "tokenizer")
    from daemon.errors import ModelError

    with pytest.raises(ModelError) as err:
        open_model(locate(root))
    assert "the axengine backend needs the vendor NPU runtime, which is not available here" in str(err.value)
    assert "pip install axengine-<version>-py3-none-any.whl" in str(err.value)
    assert "on any other machine run an ONNX bundle (vlmwatch export) with the onnxruntime backend" in str(err.value)


def test_check_config_reads_the_board_limits_from_two_graphs_only(axengine, tiny_model, tmp_path):
    from daemon.config.model import ModelSettings
    from daemon.engine.prompt_fit import Limits, probe

    root = board_layout(tmp_path / "model", tiny_model / "tokenizer")
    fit = probe(ModelSettings(dir=root, system="You watch a camera."))
    assert [s.name for s in axengine.sessions] == ["qwen2_p128_l0_together.axmodel", "internvl3_2b_vit_slim.axmodel"]
    assert fit.limits == Limits(max_prompt=2176, kv_len=2559, prefill_len=128)  # the 2048 video build
    assert not axengine.calls  # nothing ran on the NPU
    engine = Engine(open_model(locate(root)), system="You watch a camera.")
    assert (fit.limits, fit.budget(8)) == (engine.limits, engine.budget(8))
    question = Prompt("q", "Is anyone at the door?", ("yes", "no"))
    assert fit.prompt_tokens(8, question.question) == engine.prompt_tokens(8, question.question)
