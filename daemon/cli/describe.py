"""`vlmwatch describe`: ask the model one question about a video, images or nothing.

    vlmwatch describe --model DIR -q "Describe the video." clip.mp4
    vlmwatch describe --model DIR -q "Is there a person?" --choices yes,no a.jpg b.jpg
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from daemon.cli.jsonout import json_stdout
from daemon.config.model import ModelSettings, SamplingSettings
from daemon.errors import UsageError
from daemon.video.clips import load_frames


def add_cli(sub) -> None:
    p = sub.add_parser("describe", help="ask the model about a video file, images, or text only",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("-q", "--question", required=True, help="the question to ask")
    p.add_argument("--frames", type=int, default=8, help="frames sampled from a video (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer in tokens (default 256)")
    p.add_argument("--choices", help="comma-separated answers to score instead of generating, e.g. yes,no")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--seed", type=int, help="seed for sampling")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="one video file, or image files taken as the frames of one window; none: text only")
    p.set_defaults(func=run)


def add_model_args(p) -> None:
    p.add_argument("--model", required=True, type=Path, help="model folder (board, demo or ONNX layout)")
    p.add_argument("--backend", choices=["axengine", "onnxruntime"],
                   help="runtime (default: axengine for .axmodel files, onnxruntime for ONNX bundles)")
    p.add_argument("--device-id", type=int, help="M.2 card number (AXCLRT provider); omit on the board")
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder (reference demo layout only)")
    p.add_argument("--vit", type=Path, help="ViT graph file (reference demo layout only)")
    p.add_argument("--system", help="system text (default: InternVL's own)")
    p.add_argument("--kv", choices=["auto", "resident", "copied"], default="auto",
                   help="KV cache on the NPU: auto (default) keeps it in the runtime's buffers when pyaxengine"
                        " allows, resident requires that, copied feeds whole caches with every call")


def model_settings(args, **sampling) -> ModelSettings:
    """The `model:` settings the command-line options describe; a bad value names its option."""
    try:
        return ModelSettings(dir=args.model, backend=args.backend, device_id=args.device_id,
                             tokenizer=args.tokenizer, vit=args.vit, system=args.system, kv=args.kv,
                             sampling=SamplingSettings(**sampling))
    except ValidationError as exc:
        err = exc.errors()[0]
        option = "--" + str(err["loc"][-1]).replace("_", "-")
        raise UsageError(f"{option}: {err['msg']} (got {err.get('input')!r})") from None


def run(args) -> int:
    from daemon.engine.engine import open_engine
    from daemon.types import Prompt

    if args.frames < 1:
        raise UsageError(f"--frames must be at least 1, got {args.frames}")
    choices = tuple(c.strip() for c in args.choices.split(",") if c.strip()) if args.choices else ()
    if args.choices is not None and len(choices) < 2:
        raise UsageError(f"--choices needs at least two comma-separated answers, got {args.choices!r}")
    frames = load_frames(args.sources, args.frames)
    settings = model_settings(args, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              seed=args.seed)
    with json_stdout(args.json) as out:  # the vendor runtime prints on fd 1: keep it out of the JSON
        engine = open_engine(settings, max_new_tokens=args.max_new_tokens, backend_key="--backend")
        if engine.model.note:
            print(f"note: {engine.model.note}", file=sys.stderr)
        on_token = None if args.json or choices else (lambda _id, piece: print(piece, end="", flush=True))
        analysis = engine.ask(frames, [Prompt("question", args.question, choices)], on_token)
        answer = analysis.answers[0]
        if args.json:
            from daemon.video.decoders import decoding

            found = {**answer_json(analysis, answer, engine.model.meter.ms, engine.kv_path),
                     "video": decoding().as_json()}
            del engine, analysis  # sessions let go while fd 1 still points at stderr
            print(json.dumps(found, ensure_ascii=False), file=out)
        elif choices:
            print("\n".join(choice_lines(answer.choice, answer.probabilities)))
        else:
            print()
    return 0


def normalised(probabilities: dict[str, float]) -> dict[str, float]:
    """Each choice's share of the probability the choices got together."""
    total = sum(probabilities.values())
    return {c: (p / total if total > 0 else 1 / len(probabilities)) for c, p in probabilities.items()}


def choice_lines(choice: str, probabilities: dict[str, float]) -> list[str]:
    """Which choice won, then each choice's share next to its raw probability."""
    shares, width = normalised(probabilities), max(map(len, probabilities))
    lines = [f"answer: {choice}"]
    for c, p in probabilities.items():
        mark = "  <- answer" if c == choice else ""
        lines.append(f"  {c:<{width}}  {shares[c]:6.1%} of the choices  (raw {p:.4f}){mark}")
    lines.append(f"raw: the model's probability that its answer starts with the choice;"
                 f" the choices got {sum(probabilities.values()):.1%} of it together")
    return lines


def answer_json(analysis, answer, modelled_ms: float, kv: str) -> dict:
    s, t = analysis.shared, answer.timings
    decode_s = t.decode_ms / 1e3
    return {
        "text": answer.text,
        "tokens": list(answer.tokens),
        "prompt_tokens": answer.prompt_tokens,
        "stop_reason": answer.stop_reason,
        "choice": answer.choice,
        "choices": answer.probabilities,
        "choices_normalised": normalised(answer.probabilities) if answer.probabilities else None,
        "timings": {"vit_ms": round(s.vit_ms, 3), "prefill_ms": round(s.prefill_ms + t.prefill_ms, 3),
                    "decode_ms": round(t.decode_ms, 3),
                    "tokens_per_s": round(t.generated / decode_s, 2) if decode_s > 0 else None},
        "modelled_npu_ms": round(modelled_ms, 3),
        "kv": kv,
    }
