"""`vlmwatch bench`: time every graph of a model on this machine (board, M.2 card or ONNX Runtime).

    vlmwatch bench --model DIR [--device-id N] [--json]

Times the ViT, every prefill group, a decode step per layer and the post
graph, then decode tok/s and seconds per 8-frame window for the copied and
the resident KV path, side by side with the cost model's AX650N figures and
the published ones. Takes a minute or two on a board (after loading the
model). On an AX650N or an M.2 card, please paste its output into an issue:
it is how the cost model learns the truth.
"""

from __future__ import annotations

import argparse
import json
import sys

from daemon.cli.describe import add_model_args, model_settings
from daemon.errors import UsageError


def add_cli(sub) -> None:
    p = sub.add_parser("bench", help="time the model's graphs on this machine, beside the published figures",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--reps", type=int, default=3, help="timed calls per graph and group, best kept (default 3)")
    p.add_argument("--steps", type=int, default=8, help="decode steps timed per KV path (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from daemon.engine.bench import Bench, table
    from daemon.engine.bundle import choose_backend, locate, open_model
    from daemon.engine.costs import calibration_lines

    if args.reps < 1 or args.steps < 1:
        raise UsageError(f"--reps and --steps must be at least 1, got {args.reps} and {args.steps}")
    settings = model_settings(args)
    files = locate(settings.dir, settings.tokenizer, settings.vit)
    backend = choose_backend(files, settings.backend, "--backend")
    model = open_model(files, backend, settings.device_id, backend_key="--backend")
    provider = backend if settings.device_id is None else f"{backend} (M.2 card {settings.device_id})"
    bench = Bench(model, provider, args.reps, args.steps,
                  progress=lambda line: print(f"bench: {line}", file=sys.stderr, flush=True))
    report = bench.run()
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print("\n".join(calibration_lines()))
        print()
        print(table(report))
    return 0
