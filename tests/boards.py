"""Model folders in the board layout, for the fake `axengine` (tests/fake_axengine).

    board_layout(root, tokenizer)         # the full-size 2048 build: placeholder graph files, zeros out
    tiny_board_layout(root, tiny_model)   # the tiny bundle's ONNX graphs under the board's file names

A helper module like clips.py. In the tiny layout the fake runs the ONNX
graphs with ONNX Runtime through pyaxengine-like buffers, so the axengine
backend (and resident KV) computes real numbers comparable with the ONNX
bundle and transformers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

VOCAB, HIDDEN, LAYERS = 151674, 1536, 28
GRAPH_BYTES = 48 << 20  # a placeholder graph's size: sparse, so no disk; check-model takes it for a graph


def placeholder(path: Path, size: int = GRAPH_BYTES) -> None:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: zeros, no disk writes


def board_layout(root: Path, tokenizer: Path) -> Path:
    """The published board layout with placeholder graph files and a sparse full-size bf16 table."""
    llm = root / "internvl3_2b_axmodel"
    llm.mkdir(parents=True)
    for i in range(LAYERS):
        placeholder(llm / f"qwen2_p128_l{i}_together.axmodel")
    placeholder(llm / "qwen2_post.axmodel")
    placeholder(llm / "model.embed_tokens.weight.bfloat16.bin", VOCAB * HIDDEN * 2)
    (root / "vit_axmodel").mkdir()
    placeholder(root / "vit_axmodel" / "internvl3_2b_vit_slim.axmodel")
    shutil.copytree(tokenizer, root / "internvl3_2b_tokenizer")
    return root


def _spec(name: str, shape, dtype: str) -> dict:
    return {"name": name, "shape": [int(x) for x in shape], "dtype": dtype}


def _graph(src: Path, dst: Path, inputs: list[list[dict]], outputs: list[list[dict]]) -> None:
    shutil.copyfile(src, dst)
    dst.with_name(dst.name + ".fake.json").write_text(json.dumps({"inputs": inputs, "outputs": outputs}))


def tiny_board_layout(root: Path, tiny_model: Path) -> Path:
    """The tiny ONNX bundle laid out as the board's model folder, each graph with its declared groups."""
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    files, groups = manifest["files"], manifest["layer_groups"]
    table = np.load(tiny_model / files["embeddings"], mmap_mode="r")
    vocab, hidden = table.shape
    kv_dim = groups[0][0]["shape"][2]
    P = groups[1][2]["shape"][1]  # group 1's indices: [1, P]
    llm = root / "internvl3_2b_axmodel"
    llm.mkdir(parents=True)
    layer_outputs = [[_spec("new_K", [1, q, kv_dim], "float32"), _spec("new_V", [1, q, kv_dim], "float32"),
                      _spec("hidden", [1, q, hidden], "float32")] for q in [1] + [P] * (len(groups) - 1)]
    for i, name in enumerate(files["layers"]):
        _graph(tiny_model / name, llm / f"qwen2_p{P}_l{i}_together.axmodel", groups, layer_outputs)
    _graph(tiny_model / files["post"], llm / "qwen2_post.axmodel", [manifest["post_inputs"]],
           [[_spec("logits", [1, 1, vocab], "float32")]])
    np.save(llm / "model.embed_tokens.weight.npy", np.asarray(table))
    import onnxruntime as ort

    features = ort.InferenceSession(str(tiny_model / files["vit"]), providers=["CPUExecutionProvider"])
    (root / "vit_axmodel").mkdir()
    _graph(tiny_model / files["vit"], root / "vit_axmodel" / "internvl3_2b_vit_slim.axmodel",
           [manifest["vit_inputs"]], [[_spec("features", features.get_outputs()[0].shape, "float32")]])
    shutil.copytree(tiny_model / files["tokenizer"], root / "internvl3_2b_tokenizer")
    # As InternVL's config.json in the board's tokenizer folder: the layer count check-model expects.
    (root / "internvl3_2b_tokenizer" / "config.json").write_text(
        json.dumps({"llm_config": {"num_hidden_layers": len(files["layers"])}}))
    return root
