"""`vlmwatch make-tiny-model`: the tiny random InternVL the tests use, with its transformers reference (torch).

The demo builds the same architecture without torch (`make_demo_model`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from daemon.engine.export.export import (
    add_geometry_args,
)
from daemon.engine.export.tiny import make_tiny_model


def run_make_tiny_model(args: argparse.Namespace) -> int:
    start = time.monotonic()
    out = make_tiny_model(args.out, args.seed, args.prefill_len, args.kv_len, args.groups,
                          progress=lambda line: print(line, flush=True))
    print(f"wrote the ONNX bundle to {out}/ and the transformers checkpoint to {out / 'hf'}/ "
          f"in {time.monotonic() - start:.1f} s")
    print("This model is RANDOM: its text is meaningless. Use it for tests and demos, never for descriptions.")
    return 0


def add_cli(sub: Any) -> None:
    parser = sub.add_parser(
        "make-tiny-model",
        help="build a tiny random InternVL and its ONNX bundle (for tests; its text is meaningless)",
        description="Build, offline and in seconds, a tiny random InternVL (2 LLM layers, hidden 64) with a small "
        "BPE tokenizer; write the transformers checkpoint to OUT/hf and its ONNX bundle to OUT.",
    )
    parser.add_argument("out", metavar="OUT", help="output folder (new, empty or a previous tiny model)")
    parser.add_argument("--seed", type=int, metavar="N", default=0, help="the same seed gives the same weights")
    add_geometry_args(parser, prefill_len=16, kv_len=320, groups=16)
    parser.set_defaults(func=run_make_tiny_model)
