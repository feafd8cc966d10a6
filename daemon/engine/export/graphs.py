"""The graphs of an ONNX bundle, written out from a transformers InternVL's own modules.

Layer graphs implement the per-layer NPU contract (docs/npu-contract.md) by
hand from each layer's weights: explicit K/V cache in, new K/V out, an
additive mask, absolute positions as uint32. The ViT graph is transformers'
own image-feature path; the post graph is the final norm and the LM head.
torch and onnx are imported inside functions: the board has neither.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.errors import ModelError

OPSET = 17
# Rope types whose frequencies do not depend on the sequence length, so one
# traced graph is right at every position.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class LlmDims:
    """The language model's sizes that the bundle's shapes are made of."""

    layers: int
    hidden: int  # H
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int  # V

    @property
    def kv_dim(self) -> int:  # kvd
        return self.kv_heads * self.head_dim


def llm_dims(model: Any) -> LlmDims:
    """Read the sizes from an InternVLForConditionalGeneration and refuse what the contract cannot express."""
    text = model.config.text_config
    rope_type = (getattr(text, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        raise ModelError(
            f"the language model uses rope type {rope_type!r}, whose frequencies change with the sequence "
            f"length; the per-layer graphs support {', '.join(STATIC_ROPE_TYPES)}"
        )
    sliding = [i for i, t in enumerate(getattr(text, "layer_types", None) or []) if t != "full_attention"]
    if sliding:
        raise ModelError(
            f"decoder layers {sliding} use sliding-window attention, which the layer contract's mask "
            "does not express; export a checkpoint with use_sliding_window=false"
        )
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return LlmDims(
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        heads=text.num_attention_heads,
        kv_heads=text.num_key_value_heads,
        head_dim=head_dim,
        vocab=model.get_output_embeddings().weight.shape[0],
    )


def _graph_modules() -> Any:
    """torch modules that present transformers sub-modules in the bundle's contract (built on first use)."""
    import torch
    from torch import nn

    def rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    class LayerGraph(nn.Module):
        """One Qwen2 decoder layer with an explicit KV cache (the NPU per-layer contract)."""

        def __init__(self, layer: nn.Module, rotary: nn.Module, dims: LlmDims) -> None:
            super().__init__()
            self.layer, self.rotary, self.dims = layer, rotary, dims

        def forward(self, k_cache, v_cache, indices, hidden, mask):
            # k_cache, v_cache: [1, C, kvd] (group 1: [1, 1, H] placeholder); indices: [1, q] int64
            # hidden: [1, q, H]; mask: [1, q, W] additive, W = past_len + q
            d, layer, attn = self.dims, self.layer, self.layer.self_attn
            past_len = mask.shape[2] - hidden.shape[1]
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).reshape(1, -1, d.heads, d.head_dim).transpose(1, 2)  # [1, nh, q, hd]
            k = attn.k_proj(x).reshape(1, -1, d.kv_heads, d.head_dim).transpose(1, 2)  # [1, nkv, q, hd]
            v = attn.v_proj(x)  # [1, q, kvd]
            cos, sin = self.rotary(hidden, indices)  # [1, q, hd]: the model's own rotary module
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            new_k = k.transpose(1, 2).reshape(1, -1, d.kv_dim)  # [1, q, kvd]
            keys = torch.cat((k_cache[:, :past_len, : d.kv_dim], new_k), dim=1)  # [1, W, kvd]
            values = torch.cat((v_cache[:, :past_len, : d.kv_dim], v), dim=1)  # [1, W, kvd]
            keys, values = self._heads(keys), self._heads(values)  # [1, nh, W, hd]
            scores = torch.matmul(q, keys.transpose(2, 3)) * (d.head_dim**-0.5) + mask.unsqueeze(1)
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # [1, nh, q, W]
            out = torch.matmul(probs, values).transpose(1, 2).reshape(1, -1, d.heads * d.head_dim)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            return new_k, v, hidden

        def _heads(self, x):
            # [1, W, kvd] -> [1, nh, W, hd]; each kv head serves heads/kv_heads query heads (GQA)
            d = self.dims
            x = x.reshape(1, -1, d.kv_heads, 1, d.head_dim).expand(-1, -1, -1, d.heads // d.kv_heads, -1)
            return x.reshape(1, -1, d.heads, d.head_dim).transpose(1, 2)

    class VitGraph(nn.Module):
        """pixel values -> vision tower -> pixel shuffle -> projector, via transformers' get_image_features."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, image):
            # image: [1, 3, S, S] -> [1, T, H]
            return self.model.get_image_features(pixel_values=image, return_dict=True).pooler_output

    class PostGraph(nn.Module):
        """The language model's final RMSNorm and lm_head."""

        def __init__(self, norm: nn.Module, lm_head: nn.Module) -> None:
            super().__init__()
            self.norm, self.lm_head = norm, lm_head

        def forward(self, hidden):
            # hidden: [1, q, H] -> logits [1, q, V]
            return self.lm_head(self.norm(hidden))

    return LayerGraph, VitGraph, PostGraph


def _onnx_export(module: Any, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        # transformers' shape checks make the tracer warn that Python values become
        # constants; the graphs whose shapes vary are written here, not traced from it.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # about dynamo=False, which is deliberate
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: fast, and dynamic axes are plain names
        )


def finish_layer_graph(path: Path, dims: LlmDims) -> None:
    """Make the graph input `indices` uint32 (as on the NPU) feeding a Cast to int64, and name the output shapes.

    The TorchScript exporter rejects uint32 inputs, so the graph is exported
    with int64 indices and edited here.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    (indices,) = [i for i in graph.input if i.name == "indices"]
    indices.type.tensor_type.elem_type = onnx.TensorProto.UINT32
    for node in graph.node:
        node.input[:] = ["indices_int64" if name == "indices" else name for name in node.input]
    graph.node.insert(0, onnx.helper.make_node("Cast", ["indices"], ["indices_int64"], to=onnx.TensorProto.INT64))
    # The exporter names output dims after internal nodes; declare the contract instead.
    widths = {"new_K": dims.kv_dim, "new_V": dims.kv_dim, "hidden": dims.hidden}
    for output in graph.output:
        shape = output.type.tensor_type.shape
        shape.ClearField("dim")
        shape.dim.add().dim_value = 1
        shape.dim.add().dim_param = "q"
        shape.dim.add().dim_value = widths[output.name]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_layer(model: Any, index: int, dims: LlmDims, path: Path) -> None:
    """Write layer_{index}.onnx: (K_cache, V_cache, indices, input, mask) -> (new K, new V, hidden)."""
    import torch

    layer_graph, _, _ = _graph_modules()
    lm = model.model.language_model
    module = layer_graph(lm.layers[index], lm.rotary_emb, dims).eval()
    # Example: 3 past rows in a wider, longer cache, so the slices are traced as real slices.
    past, q, cache_rows = 3, 2, 4
    example = (
        torch.zeros(1, cache_rows, dims.hidden),  # K_cache
        torch.zeros(1, cache_rows, dims.hidden),  # V_cache
        torch.arange(past, past + q).unsqueeze(0),  # indices: [1, q] int64
        torch.zeros(1, q, dims.hidden),  # input
        torch.zeros(1, q, past + q),  # mask
    )
    cache_axes = {1: "cache_len", 2: "cache_width"}
    axes = {
        "K_cache": cache_axes,
        "V_cache": cache_axes,
        "indices": {1: "q"},
        "input": {1: "q"},
        "mask": {1: "q", 2: "width"},
        "new_K": {1: "q"},
        "new_V": {1: "q"},
        "hidden": {1: "q"},
    }
    inputs = ["K_cache", "V_cache", "indices", "input", "mask"]
    _onnx_export(module, example, path, inputs, ["new_K", "new_V", "hidden"], axes)
    finish_layer_graph(path, dims)


def vit_image_size(model: Any) -> int:
    size = model.config.vision_config.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    if size[0] != size[1]:
        raise ModelError(
            f"the vision tower takes {size[0]}x{size[1]} images; the bundle supports square tiles only"
        )
    return int(size[0])


def export_vit(model: Any, path: Path) -> int:
    """Write vit.onnx: image [1, 3, S, S] -> features [1, T, H]. Returns T."""
    import torch

    _, vit_graph, _ = _graph_modules()
    size = vit_image_size(model)
    image = torch.zeros(1, 3, size, size)
    embeddings = model.model.vision_tower.embeddings
    # Under tracing transformers always interpolates the position embeddings
    # (a bicubic Resize); at the native size that is the identity, so use them as they are.
    embeddings.interpolate_pos_encoding = lambda emb, height, width: embeddings.position_embeddings
    try:
        module = vit_graph(model).eval()
        with torch.no_grad():
            tokens = module(image).shape[1]
        _onnx_export(module, (image,), path, ["image"], ["features"], {})
    finally:
        del embeddings.interpolate_pos_encoding
    return int(tokens)


def export_post(model: Any, path: Path) -> None:
    """Write post.onnx: input [1, q, H] -> logits [1, q, V]."""
    import torch

    _, _, post_graph = _graph_modules()
    module = post_graph(model.model.language_model.norm, model.get_output_embeddings()).eval()
    hidden = torch.zeros(1, 2, llm_dims(model).hidden)
    _onnx_export(module, (hidden,), path, ["input"], ["logits"], {"input": {1: "q"}, "logits": {1: "q"}})
