"""daemon/engine/export/onnx_graphs.py: the torch-free graph writer is the same model as the torch exporter.

One tiny InternVL with every weight perturbed (so biases, norm weights and the
ViT's layer scales are not their initial constants) is written both ways: the
torch exporter (`export_bundle`) and the numpy/onnx writer (`write_bundle`) on
the same state dict. Every graph must agree on random inputs in every kind of
shape group, and the engine on the numpy bundle must produce transformers' own
greedy tokens. The demo's model (`make_demo_model`) must build and answer with
torch and transformers unimportable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.engine.export.export import export_bundle
from daemon.engine.export.onnx_graphs import shapes_from_config, write_bundle
from daemon.engine.export.tiny import build_model, build_tokenizer, random_weights, tiny_config, write_tokenizer
from daemon.types import Frame, Prompt

ROOT = Path(__file__).resolve().parent.parent
P, KV, G = 16, 160, 8
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def perturbed():
    import torch

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=3)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=noise) * 0.05)
    return model, tokenizer


@pytest.fixture(scope="module")
def bundles(perturbed, tmp_path_factory) -> dict[str, Path]:
    model, tokenizer = perturbed
    root = tmp_path_factory.mktemp("two_ways")
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    quiet = lambda line: None  # noqa: E731
    return {
        "torch": export_bundle(model, tokenizer, root / "torch", P, KV, G, "torch", progress=quiet),
        "numpy": write_bundle(weights, model.config.to_dict(), write_tokenizer, root / "numpy", P, KV, G, "numpy",
                              progress=quiet),
    }


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_both(bundles, name: str, feeds: dict) -> tuple[list, list]:
    return session(bundles["torch"] / name).run(None, feeds), session(bundles["numpy"] / name).run(None, feeds)


@pytest.mark.torch
def test_vit_graphs_agree(bundles):
    image = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    (want,), (got,) = run_both(bundles, "vit.onnx", {"image": image})
    assert got.shape == want.shape == (1, 16, 64)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.torch
@pytest.mark.parametrize("past, q, width", [(0, P, 64), (2 * P, P, 32), (41, 1, 32)],
                         ids=["group1-placeholder", "group3-prefill", "decode"])
def test_layer_graphs_agree_in_every_kind_of_group(bundles, past, q, width):
    rng = np.random.default_rng(past)
    rows = max(past, 1) + 3  # a longer cache than the past: the graphs must slice, not take it whole
    feeds = {
        "K_cache": rng.normal(size=(1, rows, width)).astype(np.float32),
        "V_cache": rng.normal(size=(1, rows, width)).astype(np.float32),
        "indices": (np.arange(past, past + q, dtype=np.uint32) + 1000)[None],  # large positions: RoPE matters
        "input": rng.normal(size=(1, q, 64)).astype(np.float32),
        "mask": np.where(rng.random((1, q, past + q)) < 0.3, -65536.0, 0.0).astype(np.float32),
    }
    for layer in ("layer_00.onnx", "layer_01.onnx"):
        want, got = run_both(bundles, layer, feeds)
        assert [g.shape for g in got] == [w.shape for w in want] == [(1, q, 32), (1, q, 32), (1, q, 64)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, **TOL)


@pytest.mark.torch
def test_post_graphs_and_embeddings_agree(bundles):
    hidden = np.random.default_rng(1).normal(size=(1, 3, 64)).astype(np.float32)
    (want,), (got,) = run_both(bundles, "post.onnx", {"input": hidden})
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_array_equal(np.load(bundles["numpy"] / "embeddings.npy"),
                                  np.load(bundles["torch"] / "embeddings.npy"))


@pytest.mark.torch
def test_manifests_declare_the_same_groups(bundles):
    want, got = (json.loads((bundles[k] / "manifest.json").read_text()) for k in ("torch", "numpy"))
    assert {k: v for k, v in got.items() if k != "name"} == {k: v for k, v in want.items() if k != "name"}
    assert got["vit_outputs"] == [{"name": "features", "shape": [1, 16, 64], "dtype": "float32"}]


@pytest.mark.torch
def test_engine_on_the_numpy_bundle_gives_transformers_greedy_tokens(bundles, perturbed):
    import torch

    from daemon.engine.vision import preprocess

    hf, _ = perturbed
    engine = Engine(open_model(locate(bundles["numpy"])), system="You watch a camera.", max_new_tokens=16)
    rng = np.random.default_rng(5)
    frames = [Frame("cam", float(i), i, rng.integers(0, 255, (48, 64, 3), np.uint8)) for i in range(3)]
    answer = engine.ask(frames, [Prompt("q", "Describe what happens in the video.")]).answers[0]
    ids = engine.prompts.prefix(3) + engine.prompts.suffix("Describe what happens in the video.")
    pixels = torch.from_numpy(np.concatenate([preprocess(f.image, engine.vision.size) for f in frames]))
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          pixel_values=pixels, max_new_tokens=16, do_sample=False,
                          eos_token_id=sorted(engine.prompts.stop_ids), pad_token_id=0)
    want = [t for t in out[0, len(ids):].tolist()]
    while want and want[-1] in engine.prompts.stop_ids:
        want.pop()
    assert answer.prompt_tokens == len(ids) > 2 * P
    assert list(answer.tokens) == want and want


@pytest.mark.torch
def test_the_demo_model_has_the_tiny_models_architecture():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    config = tiny_config(len(tokenizer))
    assert shapes_from_config(config) == shapes_from_config(model.config.to_dict())
    shapes = {k: tuple(v.shape) for k, v in random_weights(config, seed=0).items()}
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items()}


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"{name} is blocked: the demo must not need it", name=name)
sys.meta_path.insert(0, Block())
"""


def test_demo_model_builds_and_answers_without_torch_or_transformers(tmp_path):
    script = BLOCK_TORCH + f"""
import numpy as np
from daemon.engine.bundle import locate, open_model
from daemon.engine.engine import Engine
from daemon.engine.export.tiny import make_demo_model
from daemon.types import Frame, Prompt
out = make_demo_model({str(tmp_path / 'demo')!r}, groups=32, kv_len=640, progress=lambda line: None)
engine = Engine(open_model(locate(out)), max_new_tokens=4)
frames = [Frame("cam", float(i), i, np.zeros((48, 64, 3), np.uint8)) for i in range(8)]
answer = engine.ask(frames, [Prompt("q", "Describe what happens in the video.")]).answers[0]
print(answer.prompt_tokens, len(answer.tokens), answer.stop_reason)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    prompt_tokens, tokens, reason = done.stdout.split()
    assert int(prompt_tokens) > 8 * 16 and reason in ("stop", "length") and int(tokens) <= 4


def test_without_torch_the_exporters_say_how_to_install_it(tmp_path):
    script = BLOCK_TORCH + "from daemon.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run([sys.executable, "-c", script, "make-tiny-model", str(tmp_path / "tiny")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("vlmwatch: error: make-tiny-model (it writes the transformers reference too) needs torch,"
                           " onnx and transformers (torch is not installed): pip install -e '.[export]' in vlmwatch's"
                           " environment (a CPU-only torch is enough)\n")
