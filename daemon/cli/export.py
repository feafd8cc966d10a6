"""`vlmwatch export`: a transformers InternVL checkpoint to an ONNX bundle.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon.engine.export.export import (
    add_geometry_args,
    check_bundle_numbers,
    check_hf_dir,
    check_out_dir,
    export_bundle,
    load_hf_model,
)


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
