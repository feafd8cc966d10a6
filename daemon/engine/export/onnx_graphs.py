"""The bundle's graphs written directly with `onnx.helper` from numpy weights: no torch.

The same contract as `graphs.py` (which traces transformers' own modules):

    vit.onnx      image [1, 3, S, S] -> features [1, T, H]       InternViT + pixel shuffle + projector
    layer_NN.onnx K_cache, V_cache, indices, input, mask -> new_K, new_V, hidden   (docs/npu-contract.md)
    post.onnx     input [1, q, H] -> logits [1, q, V]             final RMSNorm + lm_head

Weights are a dict keyed by transformers' InternVLForConditionalGeneration
state-dict names, so a real checkpoint's tensors and the demo's random ones go
through the same code, and tests can check both exporters agree numerically.
Only numpy and onnx are needed: `vlmwatch demo` builds its model with these on
a machine without torch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from daemon.engine.export.export import (
    Progress,
    bundle_manifest,
    check_bundle_numbers,
    compact_shapes,
    layer_files,
    prepare_out_dir,
)
from daemon.engine.export.graphs import OPSET, LlmDims
from daemon.errors import ModelError

Weights = Mapping[str, np.ndarray]
VIT = "model.vision_tower."
LM = "model.language_model."
PROJECTOR = "model.multi_modal_projector."


@dataclass(frozen=True)
class Shapes:
    """What the graphs are made of, read from a transformers InternVL config (config.json as a dict)."""

    llm: LlmDims
    text_eps: float
    rope_theta: float
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_eps: float
    image_size: int
    patch_size: int
    downsample_ratio: float

    @property
    def image_tokens(self) -> int:
        side = self.image_size // self.patch_size
        return int(side * self.downsample_ratio) ** 2


def shapes_from_config(config: Mapping[str, Any]) -> Shapes:
    """Read sizes from an InternVLConfig dict (transformers' defaults where a key is absent)."""
    text, vision = config["text_config"], config["vision_config"]
    rope = text.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ModelError(f"rope type {rope.get('rope_type')!r}: the numpy graph writer supports 'default' only;"
                         " use 'vlmwatch export' (torch) for this checkpoint")
    if vision.get("norm_type", "layer_norm") != "layer_norm" or vision.get("use_qk_norm", False):
        raise ModelError("the numpy graph writer supports InternViT with layer_norm and no qk norm only")
    image, patch = vision.get("image_size", 448), vision.get("patch_size", 14)
    image = image[0] if isinstance(image, (list, tuple)) else image
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    heads = text["num_attention_heads"]
    return Shapes(
        llm=LlmDims(layers=text["num_hidden_layers"], hidden=text["hidden_size"], heads=heads,
                    kv_heads=text.get("num_key_value_heads", heads),
                    head_dim=text.get("head_dim") or text["hidden_size"] // heads, vocab=text["vocab_size"]),
        text_eps=text.get("rms_norm_eps", 1e-6), rope_theta=rope.get("rope_theta", text.get("rope_theta", 10000.0)),
        vision_hidden=vision["hidden_size"], vision_layers=vision["num_hidden_layers"],
        vision_heads=vision["num_attention_heads"], vision_eps=vision.get("layer_norm_eps", 1e-6),
        image_size=int(image), patch_size=int(patch), downsample_ratio=config.get("downsample_ratio", 0.5),
    )


class Graph:
    """A tiny graph builder: every helper adds nodes and returns the name of its output."""

    def __init__(self, weights: Weights) -> None:
        self.weights, self.nodes, self.inits, self._n = weights, [], {}, 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or self._name(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "c") -> str:
        name = self._name(hint)
        self.inits[name] = np.asarray(value, dtype=dtype)
        return name

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64, "shape")

    def weight(self, key: str, transpose: bool = False) -> str:
        """An initializer from the weights; a Linear's [out, in] matrix is stored as [in, out] for MatMul."""
        if key not in self.inits:
            if key not in self.weights:
                raise ModelError(f"the weights have no tensor {key!r}")
            value = np.asarray(self.weights[key], np.float32)
            self.inits[key] = np.ascontiguousarray(value.T if transpose else value)
        return key

    def linear(self, x: str, prefix: str) -> str:
        y = self.op("MatMul", x, self.weight(f"{prefix}.weight", transpose=True))
        return self.op("Add", y, self.weight(f"{prefix}.bias")) if f"{prefix}.bias" in self.weights else y

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op("LayerNormalization", x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias"),
                       axis=-1, epsilon=eps)

    def rms_norm(self, x: str, key: str, eps: float) -> str:
        # x / sqrt(mean(x^2) + eps) * weight, as Qwen2RMSNorm (in float32)
        mean = self.op("ReduceMean", self.op("Mul", x, x), axes=[-1], keepdims=1)
        rstd = self.op("Reciprocal", self.op("Sqrt", self.op("Add", mean, self.const(eps))))
        return self.op("Mul", self.op("Mul", x, rstd), self.weight(key))

    def gelu(self, x: str) -> str:
        # exact GELU (transformers' "gelu"): 0.5 x (1 + erf(x / sqrt 2)); opset 17 has no Gelu op
        erf = self.op("Erf", self.op("Mul", x, self.const(1 / math.sqrt(2))))
        return self.op("Mul", self.op("Mul", x, self.const(0.5)), self.op("Add", erf, self.const(1.0)))

    def silu(self, x: str) -> str:
        return self.op("Mul", x, self.op("Sigmoid", x))

    def save(self, path: Path, name: str, inputs: list, outputs: list) -> None:
        import onnx
        from onnx import helper, numpy_helper

        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, name, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="vlmwatch")
        model.ir_version = 8  # readable by every ONNX Runtime the onnx extra allows
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def _value(name: str, elem: int, dims: list) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, dims)


def write_vit(weights: Weights, s: Shapes, path: Path) -> int:
    """vit.onnx: image [1, 3, S, S] -> features [1, T, H]. Returns T."""
    from onnx import TensorProto

    g, d, heads = Graph(weights), s.vision_hidden, s.vision_heads
    hd, side = d // heads, s.image_size // s.patch_size
    x = g.op("Conv", "image", g.weight(f"{VIT}embeddings.patch_embeddings.projection.weight"),
             g.weight(f"{VIT}embeddings.patch_embeddings.projection.bias"),
             kernel_shape=[s.patch_size] * 2, strides=[s.patch_size] * 2)  # [1, d, side, side]
    x = g.op("Transpose", g.op("Reshape", x, g.ints(1, d, side * side)), perm=[0, 2, 1])  # [1, N, d]
    x = g.op("Concat", g.weight(f"{VIT}embeddings.cls_token"), x, axis=1)  # [1, N+1, d]
    x = g.op("Add", x, g.weight(f"{VIT}embeddings.position_embeddings"))
    split_heads = g.ints(1, -1, heads, hd)
    for i in range(s.vision_layers):
        p = f"{VIT}encoder.layer.{i}."
        h = g.layer_norm(x, p + "layernorm_before", s.vision_eps)
        q, k, v = (g.op("Transpose", g.op("Reshape", g.linear(h, f"{p}attention.{n}_proj"), split_heads),
                        perm=perm) for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])))
        scores = g.op("Mul", g.op("MatMul", q, k), g.const(hd ** -0.5))  # [1, heads, L, L]
        attn = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)  # [1, heads, L, hd]
        attn = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]), g.ints(1, -1, d))
        attn = g.linear(attn, p + "attention.projection_layer")
        x = g.op("Add", x, g.op("Mul", attn, g.weight(p + "lambda_1")))
        h = g.layer_norm(x, p + "layernorm_after", s.vision_eps)
        h = g.linear(g.gelu(g.linear(h, p + "mlp.fc1")), p + "mlp.fc2")
        x = g.op("Add", x, g.op("Mul", h, g.weight(p + "lambda_2")))
    if f"{VIT}layernorm.weight" in weights:  # use_mean_pooling=False models end with a LayerNorm
        x = g.layer_norm(x, f"{VIT}layernorm", s.vision_eps)
    x = g.op("Slice", x, g.ints(1), g.ints(side * side + 1), g.ints(1))  # drop CLS: [1, N, d]
    # pixel shuffle 0.5, as InternVLModel.pixel_shuffle: [1, w, h, c] -> [1, w/2, h/2, 4c]
    half = int(side * s.downsample_ratio)
    x = g.op("Reshape", x, g.ints(1, side, half, 2 * d))
    x = g.op("Transpose", x, perm=[0, 2, 1, 3])
    x = g.op("Reshape", x, g.ints(1, half, half, 4 * d))
    x = g.op("Transpose", x, perm=[0, 2, 1, 3])
    x = g.op("Reshape", x, g.ints(1, half * half, 4 * d))
    x = g.layer_norm(x, PROJECTOR + "layer_norm", 1e-5)  # nn.LayerNorm's default eps
    x = g.linear(g.gelu(g.linear(x, PROJECTOR + "linear_1")), PROJECTOR + "linear_2")
    g.op("Identity", x, out="features")
    tokens, hidden = half * half, s.llm.hidden
    g.save(path, "vit", [_value("image", TensorProto.FLOAT, [1, 3, s.image_size, s.image_size])],
           [_value("features", TensorProto.FLOAT, [1, tokens, hidden])])
    return tokens


def write_layer(weights: Weights, index: int, s: Shapes, path: Path) -> None:
    """layer_NN.onnx: one Qwen2 decoder layer with an explicit KV cache (the NPU per-layer contract)."""
    from onnx import TensorProto

    g, d, p = Graph(weights), s.llm, f"{LM}layers.{index}."
    hd, rep = d.head_dim, d.heads // d.kv_heads
    # past_len = mask width - q: the cache rows this chunk attends to besides its own
    q_len = g.op("Slice", g.op("Shape", "input"), g.ints(1), g.ints(2), g.ints(0))
    past = g.op("Sub", g.op("Slice", g.op("Shape", "mask"), g.ints(2), g.ints(3), g.ints(0)), q_len)  # [1] int64
    x = g.rms_norm("input", p + "input_layernorm.weight", s.text_eps)
    q = g.op("Transpose", g.op("Reshape", g.linear(x, p + "self_attn.q_proj"), g.ints(1, -1, d.heads, hd)),
             perm=[0, 2, 1, 3])  # [1, nh, q, hd]
    k = g.op("Transpose", g.op("Reshape", g.linear(x, p + "self_attn.k_proj"), g.ints(1, -1, d.kv_heads, hd)),
             perm=[0, 2, 1, 3])  # [1, nkv, q, hd]
    g.op("Identity", g.linear(x, p + "self_attn.v_proj"), out="new_V")  # [1, q, kvd]
    # RoPE by absolute position: angle = position * inv_freq, cos/sin of [angles, angles]
    inv_freq = 1.0 / (s.rope_theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd))
    positions = g.op("Unsqueeze", g.op("Cast", "indices", to=TensorProto.FLOAT), g.ints(-1))  # [1, q, 1]
    angles = g.op("Mul", positions, g.const(inv_freq.astype(np.float32)[None, None, :]))  # [1, q, hd/2]
    angles = g.op("Unsqueeze", g.op("Concat", angles, angles, axis=-1), g.ints(1))  # [1, 1, q, hd]
    cos, sin = g.op("Cos", angles), g.op("Sin", angles)

    def rotate(t: str) -> str:  # t * cos + rotate_half(t) * sin
        lo = g.op("Slice", t, g.ints(0), g.ints(hd // 2), g.ints(-1))
        hi = g.op("Slice", t, g.ints(hd // 2), g.ints(hd), g.ints(-1))
        turned = g.op("Concat", g.op("Neg", hi), lo, axis=-1)
        return g.op("Add", g.op("Mul", t, cos), g.op("Mul", turned, sin))

    q, k = rotate(q), rotate(k)
    g.op("Reshape", g.op("Transpose", k, perm=[0, 2, 1, 3]), g.ints(1, -1, d.kv_dim), out="new_K")  # [1, q, kvd]

    def with_past(cache: str, new: str) -> str:
        # cache rows :past_len (group 1's placeholder gives none), then this chunk: [1, W, kvd] -> [1, nh, W, hd]
        rows = g.op("Slice", cache, g.ints(0, 0, 0), g.op("Concat", g.ints(1), past, g.ints(d.kv_dim), axis=0),
                    g.ints(0, 1, 2))
        full = g.op("Reshape", g.op("Concat", rows, new, axis=1), g.ints(1, -1, d.kv_heads, 1, hd))
        full = g.op("Expand", full, g.ints(1, 1, 1, rep, 1))  # GQA: each kv head serves `rep` query heads
        return g.op("Transpose", g.op("Reshape", full, g.ints(1, -1, d.heads, hd)), perm=[0, 2, 1, 3])

    keys, values = with_past("K_cache", "new_K"), with_past("V_cache", "new_V")
    scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", keys, perm=[0, 1, 3, 2])), g.const(hd ** -0.5))
    scores = g.op("Add", scores, g.op("Unsqueeze", "mask", g.ints(1)))  # [1, nh, q, W]
    attn = g.op("MatMul", g.op("Softmax", scores, axis=-1), values)  # [1, nh, q, hd]
    attn = g.op("Reshape", g.op("Transpose", attn, perm=[0, 2, 1, 3]), g.ints(1, -1, d.heads * hd))
    h = g.op("Add", "input", g.linear(attn, p + "self_attn.o_proj"))
    x = g.rms_norm(h, p + "post_attention_layernorm.weight", s.text_eps)
    gate, up = g.linear(x, p + "mlp.gate_proj"), g.linear(x, p + "mlp.up_proj")
    g.op("Add", h, g.linear(g.op("Mul", g.silu(gate), up), p + "mlp.down_proj"), out="hidden")
    f, u32 = TensorProto.FLOAT, TensorProto.UINT32
    g.save(path, f"layer_{index}", [
        _value("K_cache", f, [1, "cache_len", "cache_width"]), _value("V_cache", f, [1, "cache_len", "cache_width"]),
        _value("indices", u32, [1, "q"]), _value("input", f, [1, "q", d.hidden]), _value("mask", f, [1, "q", "width"]),
    ], [_value("new_K", f, [1, "q", d.kv_dim]), _value("new_V", f, [1, "q", d.kv_dim]),
        _value("hidden", f, [1, "q", d.hidden])])


def write_post(weights: Weights, s: Shapes, path: Path) -> None:
    """post.onnx: input [1, q, H] -> logits [1, q, V] (final RMSNorm and lm_head)."""
    from onnx import TensorProto

    g = Graph(weights)
    x = g.rms_norm("input", f"{LM}norm.weight", s.text_eps)
    g.op("MatMul", x, g.weight("lm_head.weight", transpose=True), out="logits")
    g.save(path, "post", [_value("input", TensorProto.FLOAT, [1, "q", s.llm.hidden])],
           [_value("logits", TensorProto.FLOAT, [1, "q", s.llm.vocab])])


def write_bundle(
    weights: Weights, config: Mapping[str, Any], write_tokenizer: Callable[[Path], None], out_dir: Path | str,
    prefill_len: int, kv_len: int, groups: int, name: str, note: str = "", progress: Progress = print,
) -> Path:
    """The whole ONNX bundle from numpy weights, like `export.export_bundle` but without torch.

    `write_tokenizer(folder)` writes the tokenizer files. The manifest comes
    last, so a directory with a manifest is a complete bundle.
    """
    check_bundle_numbers(prefill_len, kv_len, groups)
    out, s = Path(out_dir), shapes_from_config(config)
    prepare_out_dir(out)
    start = time.monotonic()
    tokens = write_vit(weights, s, out / "vit.onnx")
    for i, file in enumerate(layer_files(s.llm)):
        write_layer(weights, i, s, out / file)
    write_post(weights, s, out / "post.onnx")
    table = np.asarray(weights[f"{LM}embed_tokens.weight"], np.float32)  # [V, H]
    np.save(out / "embeddings.npy", np.ascontiguousarray(table))
    write_tokenizer(out / "tokenizer")
    manifest = bundle_manifest(name, note, s.llm, s.image_size, prefill_len, kv_len, groups, tokens)
    (out / "manifest.json").write_text(compact_shapes(json.dumps(manifest, indent=2)) + "\n")
    progress(f"wrote {out} ({s.llm.layers} layers, {tokens} image tokens per frame) in"
             f" {time.monotonic() - start:.1f} s")
    return out
