"""daemon/export.py and daemon/tiny.py: real exported graphs run with ONNX Runtime against transformers.

The reference is the tiny model's own transformers checkpoint (`tiny_reference/hf`):
its token sequence goes through the layer graphs chunk by chunk (prefill
groups 1, 2 and 3, then decode steps in group 0) with the KV cache carried
over, and every layer's new K, new V and hidden output must equal what
transformers computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main

pytestmark = pytest.mark.torch  # the transformers exporter's graphs against transformers

P, KV, G = 16, 320, 16  # make-tiny-model's default geometry
H, KVD, V, T, S = 64, 32, 1012, 16, 64  # hidden, kv dim, vocab, image tokens per frame, image size
BLOCK = -65536.0
TOL = dict(rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def manifest(tiny_reference: Path) -> dict:
    return json.loads((tiny_reference / "manifest.json").read_text())


@pytest.fixture(scope="module")
def hf(tiny_reference: Path):
    from transformers import InternVLForConditionalGeneration

    return InternVLForConditionalGeneration.from_pretrained(str(tiny_reference / "hf")).eval()


def open_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the machine's cores are shared
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def graphs(tiny_reference: Path, manifest: dict) -> dict:
    files = manifest["files"]
    return {
        "vit": open_session(tiny_reference / files["vit"]),
        "layers": [open_session(tiny_reference / f) for f in files["layers"]],
        "post": open_session(tiny_reference / files["post"]),
    }


@pytest.fixture(scope="module")
def reference(hf) -> dict:
    """transformers on 3 prefill chunks + 4 decode tokens: every layer's output, K, V, and the logits."""
    import torch

    ids = np.random.default_rng(7).integers(0, 1000, size=3 * P + 4)  # ordinary tokens only
    lm = hf.model.language_model
    outputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda mod, args, out: outputs.append(out)) for layer in lm.layers]
    try:
        with torch.no_grad():
            result = hf(input_ids=torch.tensor(ids)[None], use_cache=True)
    finally:
        for hook in hooks:
            hook.remove()

    def rows(x):  # [1, nkv, N, hd] -> [N, kvd]
        return x[0].transpose(0, 1).reshape(len(ids), -1).numpy()

    return {
        "ids": ids,
        "hidden": [o[0].numpy() for o in outputs],  # per layer [N, H]
        "keys": [rows(layer.keys) for layer in result.cache.layers],
        "values": [rows(layer.values) for layer in result.cache.layers],
        "logits": result.logits[0].numpy(),  # [N, V]
    }


def run_layer(session, group: list[dict], feeds: dict) -> list[np.ndarray]:
    """Run a layer graph after checking the feeds against the group's declared shapes, as the NPU would."""
    for spec in group:
        value = feeds[spec["name"]]
        assert list(value.shape) == spec["shape"] and value.dtype == np.dtype(spec["dtype"]), spec
    return session.run(None, feeds)


def causal_mask(start: int, q: int) -> np.ndarray:
    """[1, q, start + q]: token t (absolute position start + t) sees positions <= its own."""
    cols = np.arange(start + q)[None, :]
    rows = start + np.arange(q)[:, None]
    return np.where(cols <= rows, 0.0, BLOCK).astype(np.float32)[None]


# ---------------------------------------------------------------- the bundle


def test_manifest_matches_the_bundle_spec(tiny_reference: Path, manifest: dict):
    layers = ["layer_00.onnx", "layer_01.onnx"]
    assert manifest["format"] == "vlmwatch-onnx" and manifest["version"] == 1
    assert "meaningless" in manifest["note"]
    assert manifest["files"] == {"vit": "vit.onnx", "layers": layers, "post": "post.onnx",
                                 "embeddings": "embeddings.npy", "tokenizer": "tokenizer"}
    for name in ["vit.onnx", "post.onnx", "embeddings.npy", "tokenizer/tokenizer.json", *layers]:
        assert (tiny_reference / name).is_file(), name
    assert manifest["vit_inputs"] == [{"name": "image", "shape": [1, 3, S, S], "dtype": "float32"}]
    assert manifest["post_inputs"] == [{"name": "input", "shape": [1, 1, H], "dtype": "float32"}]

    def group(k_shape, q, width):
        return [{"name": "K_cache", "shape": k_shape, "dtype": "float32"},
                {"name": "V_cache", "shape": k_shape, "dtype": "float32"},
                {"name": "indices", "shape": [1, q], "dtype": "uint32"},
                {"name": "input", "shape": [1, q, H], "dtype": "float32"},
                {"name": "mask", "shape": [1, q, width], "dtype": "float32"}]

    expected = [group([1, KV, KVD], 1, KV + 1), group([1, 1, H], P, P)]
    expected += [group([1, P * (k - 1), KVD], P, P * k) for k in range(2, G + 1)]
    assert manifest["layer_groups"] == expected


def test_graph_inputs_are_named_and_typed_as_declared(tiny_reference: Path, graphs: dict):
    import onnx

    model = onnx.load(str(tiny_reference / "layer_00.onnx"))
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert types["indices"] == onnx.TensorProto.UINT32
    session = graphs["layers"][0]
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("K_cache", "tensor(float)"), ("V_cache", "tensor(float)"), ("indices", "tensor(uint32)"),
        ("input", "tensor(float)"), ("mask", "tensor(float)")]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [
        ("new_K", [1, "q", KVD]), ("new_V", [1, "q", KVD]), ("hidden", [1, "q", H])]
    assert [i.name for i in graphs["vit"].get_inputs()] == ["image"]
    assert [i.name for i in graphs["post"].get_inputs()] == ["input"]


def test_embeddings_are_the_input_embedding_table(tiny_reference: Path, hf):
    table = np.load(tiny_reference / "embeddings.npy")
    assert table.dtype == np.float32 and table.shape == (V, H)
    np.testing.assert_array_equal(table, hf.get_input_embeddings().weight.detach().numpy())


def test_layers_reproduce_transformers_through_prefill_groups_and_decode(
    tiny_reference: Path, manifest: dict, graphs: dict, reference: dict
):
    groups, layers = manifest["layer_groups"], graphs["layers"]
    rng = np.random.default_rng(0)
    embeddings = np.load(tiny_reference / "embeddings.npy")
    # Rows the caller has not filled hold garbage: the mask alone must keep them out.
    k_cache = rng.normal(size=(len(layers), KV, KVD)).astype(np.float32)
    v_cache = rng.normal(size=(len(layers), KV, KVD)).astype(np.float32)

    def step(group: int, pos: np.ndarray, mask: np.ndarray, past) -> np.ndarray:
        x = embeddings[reference["ids"][pos]][None]  # [1, q, H]
        for i, session in enumerate(layers):
            feeds = {"K_cache": past(k_cache, i), "V_cache": past(v_cache, i),
                     "indices": pos[None].astype(np.uint32), "input": x, "mask": mask}
            new_k, new_v, x = run_layer(session, groups[group], feeds)
            np.testing.assert_allclose(new_k[0], reference["keys"][i][pos], **TOL)
            np.testing.assert_allclose(new_v[0], reference["values"][i][pos], **TOL)
            np.testing.assert_allclose(x[0], reference["hidden"][i][pos], **TOL)
            k_cache[i, pos], v_cache[i, pos] = new_k[0], new_v[0]
        return x

    placeholder = rng.normal(size=(1, 1, H)).astype(np.float32)  # group 1 ignores it
    for k in (1, 2, 3):  # prefill: no past, then 1 and 2 chunks of past
        start = P * (k - 1)
        past = (lambda c, i: placeholder) if k == 1 else (lambda c, i, n=start: c[i, :n][None])
        x = step(k, np.arange(start, start + P), causal_mask(start, P), past)
        logits = graphs["post"].run(None, {"input": x})[0]
        np.testing.assert_allclose(logits[0], reference["logits"][start:start + P], **TOL)
    for p in range(3 * P, len(reference["ids"])):  # decode into a partly filled cache
        mask = np.full((1, 1, KV + 1), BLOCK, np.float32)
        mask[..., :p] = 0.0
        mask[..., KV] = 0.0  # the new token itself
        x = step(0, np.array([p]), mask, lambda c, i: c[i][None])
        logits = graphs["post"].run(None, {"input": x})[0]
        np.testing.assert_allclose(logits[0], reference["logits"][p:p + 1], **TOL)


def test_vit_graph_equals_transformers_image_features(graphs: dict, hf):
    import torch

    image = np.random.default_rng(1).normal(size=(1, 3, S, S)).astype(np.float32)
    (features,) = graphs["vit"].run(None, {"image": image})
    with torch.no_grad():
        expected = hf.model.get_image_features(pixel_values=torch.from_numpy(image)).pooler_output.numpy()
    assert features.shape == (1, T, H)
    np.testing.assert_allclose(features, expected, **TOL)


# ---------------------------------------------------------------- the tiny model


def test_tiny_model_has_internvl_special_tokens(tiny_reference: Path, hf):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_reference / "tokenizer"))
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
    ids = tokenizer.convert_tokens_to_ids(specials)
    assert ids == list(range(1000, 1012))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert hf.config.image_token_id == tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert hf.config.text_config.vocab_size == len(tokenizer) == V
    assert hf.generation_config.eos_token_id == [1002, 1000]
    text = "Frame1: <img><IMG_CONTEXT></img>\nIs the door open?<|im_end|>"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_same_seed_same_weights(tiny_reference: Path, hf):
    from daemon.engine.export.tiny import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    again, other = build_model(tokenizer, seed=0).state_dict(), build_model(tokenizer, seed=1).state_dict()
    for name, value in hf.state_dict().items():
        assert np.array_equal(again[name].numpy(), value.numpy()), name
    assert not np.array_equal(other["lm_head.weight"].numpy(), again["lm_head.weight"].numpy())


# ---------------------------------------------------------------- the command


def test_export_command_writes_and_rewrites_a_bundle(tiny_reference: Path, tmp_path: Path, graphs: dict, capsys):
    out = tmp_path / "bundle"
    argv = ["export", "--hf-model", str(tiny_reference / "hf"), "--out", str(out),
            "--prefill-len", "8", "--kv-len", "64", "--groups", "3"]
    assert main(argv) == 0
    assert main(argv) == 0  # a previous bundle may be overwritten
    assert "[4/4] post.onnx" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert [g[4]["shape"] for g in manifest["layer_groups"]] == [[1, 1, 65], [1, 8, 8], [1, 8, 16], [1, 8, 24]]
    rng = np.random.default_rng(2)
    feeds = {"K_cache": rng.normal(size=(1, 5, KVD)).astype(np.float32),
             "V_cache": rng.normal(size=(1, 5, KVD)).astype(np.float32),
             "indices": np.array([[5, 6]], np.uint32), "input": rng.normal(size=(1, 2, H)).astype(np.float32),
             "mask": causal_mask(5, 2)}
    fresh = open_session(out / "layer_01.onnx").run(None, feeds)
    for got, expected in zip(fresh, graphs["layers"][1].run(None, feeds)):
        np.testing.assert_allclose(got, expected, **TOL)


def error_of(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_missing_hf_model_dir(tmp_path: Path, capsys):
    missing = tmp_path / "InternVL3-2B-hf"
    code, err = error_of(["export", "--hf-model", str(missing), "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err == (
        f"vlmwatch: error: --hf-model {missing} does not exist; pass the folder of a transformers-native InternVL "
        "checkpoint (such as InternVL3-2B-hf) holding config.json, *.safetensors and the tokenizer\n"
    )


def test_remote_code_checkpoint_is_refused(tmp_path: Path, capsys):
    (tmp_path / "InternVL3-2B").mkdir()
    (tmp_path / "InternVL3-2B" / "config.json").write_text('{"model_type": "internvl_chat"}')
    argv = ["export", "--hf-model", str(tmp_path / "InternVL3-2B"), "--out", str(tmp_path / "o")]
    code, err = error_of(argv, capsys)
    assert code == 2
    assert err == (
        f"vlmwatch: error: {tmp_path / 'InternVL3-2B' / 'config.json'} has model_type 'internvl_chat', not "
        "'internvl'; use the transformers-native checkpoint (the '-hf' repository, e.g. "
        "OpenGVLab/InternVL3-2B-hf), not the remote-code one\n"
    )


def test_kv_len_too_small_for_the_groups(tiny_reference: Path, tmp_path: Path, capsys):
    code, err = error_of(["export", "--hf-model", str(tiny_reference / "hf"), "--out", str(tmp_path / "out"),
                          "--prefill-len", "128", "--kv-len", "2048", "--groups", "17"], capsys)
    assert code == 2
    assert err == (
        "vlmwatch: error: --groups 17 x --prefill-len 128 = 2176 prompt tokens do not fit --kv-len 2048; "
        "raise --kv-len to at least 2176 or lower --groups\n"
    )


def test_out_dir_that_is_not_a_bundle_is_left_alone(tiny_reference: Path, tmp_path: Path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = error_of(["export", "--hf-model", str(tiny_reference / "hf"), "--out", str(tmp_path)], capsys)
    assert code == 2
    assert err == (
        f"vlmwatch: error: --out {tmp_path} is not empty and is not a vlmwatch bundle (it holds notes.txt); "
        "choose a new or empty directory, or remove it first\n"
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"
