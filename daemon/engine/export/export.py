"""Export a transformers-native InternVL checkpoint to a vlmwatch ONNX bundle.

The bundle mirrors the Axera per-layer NPU contract (docs/npu-contract.md) so
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.engine.export.graphs import (
    LlmDims,
    export_layer,
    export_post,
    export_vit,
    llm_dims,
    vit_image_size,
)
from daemon.errors import ModelError, UsageError

BUNDLE_FORMAT = "vlmwatch-onnx"
BUNDLE_VERSION = 1
Progress = Callable[[str], None]


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


def require_torch(what: str) -> None:
    """Say how to install the exporter's torch instead of failing with a traceback."""
    try:
        import torch  # noqa: F401
        import onnx  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"{what} needs torch, onnx and transformers ({exc.name} is not installed):"
            " pip install -e '.[export]' in vlmwatch's environment (a CPU-only torch is enough)"
        ) from None


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
def bundle_manifest(
    name: str, note: str, dims: LlmDims, image_size: int, prefill_len: int, kv_len: int, groups: int,
    image_tokens: int,
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
        "vit_outputs": [_spec("features", [1, image_tokens, dims.hidden])],  # read by check-model, not the engine
        "post_inputs": [_spec("input", [1, 1, dims.hidden])],
        "layer_groups": layer_group_inputs(dims, prefill_len, kv_len, groups),
    }


def compact_shapes(text: str) -> str:
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
    manifest = bundle_manifest(name, note, dims, vit_image_size(model), prefill_len, kv_len, groups, tokens)
    (out / "manifest.json").write_text(compact_shapes(json.dumps(manifest, indent=2)) + "\n")
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
    require_torch("vlmwatch export")
    import torch
    from transformers import AutoTokenizer, InternVLForConditionalGeneration

    try:
        model = InternVLForConditionalGeneration.from_pretrained(str(hf_dir), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the checkpoint in {hf_dir}: {exc}") from exc
    return model.eval(), tokenizer


def add_geometry_args(parser: argparse.ArgumentParser, prefill_len: int, kv_len: int, groups: int) -> None:
    """--prefill-len, --kv-len, --groups: the bundle's shape groups (shared with make-tiny-model)."""
    parser.add_argument("--prefill-len", type=int, metavar="N", default=prefill_len,
                        help="tokens per prefill chunk (default %(default)s)")
    parser.add_argument("--kv-len", type=int, metavar="N", default=kv_len,
                        help="KV cache rows for decode (default %(default)s)")
    parser.add_argument("--groups", type=int, metavar="N", default=groups,
                        help="number of prefill shape groups (default %(default)s)")
