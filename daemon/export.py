"""Export a transformers-native InternVL checkpoint to a vlmwatch ONNX bundle.

The bundle mirrors the Axera per-layer NPU contract (DESIGN.md section 3) so
that one engine drives both backends: a ViT graph, one graph per decoder layer
whose dynamic axes cover every shape group, a post graph (final norm +
lm_head), the embedding table as .npy and the tokenizer. Graphs are float32:
ONNX Runtime's CPU kernels have no bfloat16 MatMul.

The layer graphs are written out by hand from each transformers layer's own
weights instead of tracing the transformers attention code, because that code
carries cache objects and mask builders that do not export cleanly and do not
speak the contract (explicit K/V cache in, new K/V out, additive mask).

torch, onnx and transformers are imported inside functions: the daemon on the
board has none of them.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.errors import ModelError, UsageError

BUNDLE_FORMAT = "vlmwatch-onnx"
BUNDLE_VERSION = 1
OPSET = 17
# Rope types whose frequencies do not depend on the sequence length, so one
# traced graph is right at every position.
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")

Progress = Callable[[str], None]


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


def check_bundle_numbers(prefill_len: int, kv_len: int, groups: int) -> None:
    """The prefill groups must fit the KV cache: groups * prefill_len <= kv_len."""
    for flag, value in (("--prefill-len", prefill_len), ("--kv-len", kv_len), ("--groups", groups)):
        if value < 1:
            raise UsageError(f"{flag} {value} must be a positive integer")
    if groups * prefill_len > kv_len:
        raise UsageError(
            f"--groups {groups} x --prefill-len {prefill_len} = {groups * prefill_len} prompt tokens "
            f"do not fit --kv-len {kv_len}; raise --kv-len to at least {groups * prefill_len} or lower --groups"
        )


def _spec(name: str, shape: list[int], dtype: str = "float32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype}


def layer_group_inputs(dims: LlmDims, prefill_len: int, kv_len: int, groups: int) -> list[list[dict[str, Any]]]:
    """Declared inputs of every shape group: [decode, prefill without past, prefill with k-1 chunks past, ...]."""
    H, kvd, P, KV = dims.hidden, dims.kv_dim, prefill_len, kv_len
    decode = [
        _spec("K_cache", [1, KV, kvd]),
        _spec("V_cache", [1, KV, kvd]),
        _spec("indices", [1, 1], "uint32"),
        _spec("input", [1, 1, H]),
        _spec("mask", [1, 1, KV + 1]),
    ]
    result = [decode]
    for k in range(1, groups + 1):
        past = [1, 1, H] if k == 1 else [1, P * (k - 1), kvd]  # group 1: a placeholder the graph ignores
        result.append(
            [
                _spec("K_cache", past),
                _spec("V_cache", list(past)),
                _spec("indices", [1, P], "uint32"),
                _spec("input", [1, P, H]),
                _spec("mask", [1, P, P * k]),
            ]
        )
    return result


# ---------------------------------------------------------------- output dir

_BUNDLE_NAMES = ("manifest.json", "vit.onnx", "post.onnx", "embeddings.npy", "tokenizer")


def _is_bundle_file(path: Path) -> bool:
    name = path.name
    return name in _BUNDLE_NAMES or (name.startswith("layer_") and name.endswith(".onnx"))


def check_out_dir(out_dir: Path, keep: tuple[str, ...] = ()) -> list[Path]:
    """Refuse an output directory that holds anything but a previous bundle; return that bundle's entries.

    `keep` names extra entries that may sit beside a bundle and are left alone
    (make-tiny-model keeps its `hf/` reference checkpoint there).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file; pass a directory for the bundle")
    if not out_dir.exists():
        return []
    entries = sorted(p for p in out_dir.iterdir() if p.name not in keep)
    foreign = [p.name for p in entries if not _is_bundle_file(p)]
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        raise UsageError(
            f"--out {out_dir} is not empty and is not a vlmwatch bundle "
            f"(it holds {', '.join(foreign[:3])}{more}); "
            "choose a new or empty directory, or remove it first"
        )
    return entries


def prepare_out_dir(out_dir: Path, keep: tuple[str, ...] = ()) -> None:
    """Create `out_dir`, or clear the previous bundle in it so no stale layer file survives."""
    for path in check_out_dir(out_dir, keep):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------- graphs


@functools.cache
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


# ---------------------------------------------------------------- bundle


def bundle_manifest(
    name: str, note: str, dims: LlmDims, image_size: int, prefill_len: int, kv_len: int, groups: int
) -> dict[str, Any]:
    """manifest.json: the files and every graph's declared inputs (the engine's loader reads exactly this)."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "name": name,
        "note": note,
        "files": {
            "vit": "vit.onnx",
            "layers": layer_files(dims),
            "post": "post.onnx",
            "embeddings": "embeddings.npy",
            "tokenizer": "tokenizer",
        },
        "vit_inputs": [_spec("image", [1, 3, image_size, image_size])],
        "post_inputs": [_spec("input", [1, 1, dims.hidden])],
        "layer_groups": layer_group_inputs(dims, prefill_len, kv_len, groups),
    }


def _compact_shapes(text: str) -> str:
    """Put each list of integers (a shape) on one line: the manifest is read by people too."""
    return re.sub(r"\[\s*(\d+(?:,\s*\d+)*)\s*\]", lambda m: "[" + re.sub(r",\s*", ", ", m.group(1)) + "]", text)


def layer_files(dims: LlmDims) -> list[str]:
    return [f"layer_{i:02d}.onnx" for i in range(dims.layers)]


def export_bundle(
    model: Any,
    tokenizer: Any,
    out_dir: Path | str,
    prefill_len: int,
    kv_len: int,
    groups: int,
    name: str,
    note: str = "",
    progress: Progress = print,
    keep: tuple[str, ...] = (),
) -> Path:
    """Export `model` (InternVLForConditionalGeneration, float32) and `tokenizer` into `out_dir`.

    Writes the manifest last, so a directory with a manifest is a complete bundle.
    Returns `out_dir` as a Path.
    """
    import numpy as np

    check_bundle_numbers(prefill_len, kv_len, groups)
    out = Path(out_dir)
    dims = llm_dims(model)
    prepare_out_dir(out, keep)
    model = model.float().eval()
    total = dims.layers + 2
    start = time.monotonic()

    def step(n: int, what: str) -> None:
        progress(f"[{n}/{total}] {what} ({time.monotonic() - start:.1f} s)")

    tokens = export_vit(model, out / "vit.onnx")
    step(1, f"vit.onnx: {tokens} image tokens per frame")
    for i, file in enumerate(layer_files(dims)):
        export_layer(model, i, dims, out / file)
        step(i + 2, file)
    export_post(model, out / "post.onnx")
    step(total, "post.onnx")
    table = model.get_input_embeddings().weight.detach().float().numpy()  # [V, H]
    np.save(out / "embeddings.npy", np.ascontiguousarray(table, dtype=np.float32))
    tokenizer.save_pretrained(str(out / "tokenizer"))
    manifest = bundle_manifest(name, note, dims, vit_image_size(model), prefill_len, kv_len, groups)
    (out / "manifest.json").write_text(_compact_shapes(json.dumps(manifest, indent=2)) + "\n")
    progress(f"wrote {out} (embeddings [{table.shape[0]}, {table.shape[1]}], tokenizer, manifest.json)")
    return out


def check_hf_dir(hf_dir: Path) -> None:
    """Fail fast, without importing transformers, on a folder that is no transformers-native InternVL."""
    if hf_dir.is_file():
        raise ModelError(
            f"--hf-model {hf_dir} is a file; pass the checkpoint's folder (the one holding config.json)"
        )
    if not hf_dir.is_dir():
        raise ModelError(
            f"--hf-model {hf_dir} does not exist; pass the folder of a transformers-native InternVL "
            "checkpoint (such as InternVL3-2B-hf) holding config.json, *.safetensors and the tokenizer"
        )
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise ModelError(f"--hf-model {hf_dir} has no config.json; it is not a transformers checkpoint")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "internvl":
        raise ModelError(
            f"{config_path} has model_type {model_type!r}, not 'internvl'; use the transformers-native "
            "checkpoint (the '-hf' repository, e.g. OpenGVLab/InternVL3-2B-hf), not the remote-code one"
        )


def load_hf_model(hf_dir: Path) -> tuple[Any, Any]:
    """Load a transformers-native InternVL checkpoint (model in float32, tokenizer)."""
    check_hf_dir(hf_dir)
    import torch
    from transformers import AutoTokenizer, InternVLForConditionalGeneration

    try:
        model = InternVLForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the checkpoint in {hf_dir}: {exc}") from exc
    return model.eval(), tokenizer


def run_export(args: argparse.Namespace) -> int:
    check_bundle_numbers(args.prefill_len, args.kv_len, args.groups)
    hf_dir = Path(args.hf_model)
    check_hf_dir(hf_dir)
    check_out_dir(Path(args.out))  # fail before minutes of loading, not after
    print(f"loading {hf_dir} ...", flush=True)
    model, tokenizer = load_hf_model(hf_dir)
    name = args.name or hf_dir.resolve().name
    note = f"exported from {hf_dir.resolve()} by vlmwatch export"
    export_bundle(
        model, tokenizer, Path(args.out), args.prefill_len, args.kv_len, args.groups, name, note,
        progress=lambda line: print(line, flush=True),
    )
    return 0


def add_geometry_args(parser: argparse.ArgumentParser, prefill_len: int, kv_len: int, groups: int) -> None:
    """--prefill-len, --kv-len, --groups: the bundle's shape groups (shared with make-tiny-model)."""
    parser.add_argument("--prefill-len", type=int, metavar="N", default=prefill_len,
                        help="tokens per prefill chunk (default %(default)s)")
    parser.add_argument("--kv-len", type=int, metavar="N", default=kv_len,
                        help="KV cache rows for decode (default %(default)s)")
    parser.add_argument("--groups", type=int, metavar="N", default=groups,
                        help="number of prefill shape groups (default %(default)s)")


def add_cli(sub: Any) -> None:
    parser = sub.add_parser(
        "export",
        help="convert a transformers InternVL checkpoint into an ONNX bundle",
        description="Convert a transformers-native InternVL checkpoint (e.g. InternVL3-2B-hf) into an ONNX "
        "bundle in the per-layer NPU contract, runnable with ONNX Runtime. Takes minutes on the real model.",
    )
    parser.add_argument("--hf-model", required=True, metavar="DIR", help="transformers checkpoint folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="bundle folder (new, empty or a previous bundle)")
    add_geometry_args(parser, prefill_len=128, kv_len=2559, groups=17)
    parser.add_argument("--name", default=None, help="model name in the manifest (default: the folder name)")
    parser.set_defaults(func=run_export)
