"""`vlmwatch demo`: the whole pipeline on a fresh machine with nothing but PyPI.

Builds the tiny random InternVL (once, cached), writes a clip with a moving
object, samples 8 frames, and asks a description and a yes/no question with a
shared prefix, printing answers, timings and the modelled AX650N time.
The tiny model's text is meaningless: point --model at a real bundle for real
descriptions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

DEFAULT_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlmwatch"


def add_cli(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on a generated clip with a tiny random model",
                       description=__doc__)
    p.add_argument("--home", type=Path, default=DEFAULT_HOME, help=f"where the demo keeps its files ({DEFAULT_HOME})")
    p.add_argument("--model", type=Path, help="use this model bundle instead of the tiny random one")
    p.set_defaults(func=run)


def run(args) -> int:
    from daemon.bundle import locate, open_model
    from daemon.describe import read_video
    from daemon.engine import Engine, Prompt

    model_dir = args.model or tiny_model(args.home / "tiny-model")
    clip = write_demo_clip(args.home / "demo-clip.mp4")
    model = open_model(locate(model_dir))
    engine = Engine(model, max_new_tokens=24)
    frames = read_video(clip, 8)
    budget = engine.budget(len(frames))
    print(f"model: {model.name}  ({model.note or 'real model'})")
    print(f"clip: {clip}, 8 frames at {[f.index for f in frames]}; prompt prefix {budget.prefix_tokens} tokens,"
          f" {budget.question_room} left for a question")
    prompts = [Prompt("person", "Is there a person in the video? Answer yes or no.", ("yes", "no")),
               Prompt("description", "Describe what happens in the video.")]
    analysis = engine.ask(frames, prompts)
    for a in analysis.answers:
        shown = ", ".join(f"{c} {p:.3f}" for c, p in a.probabilities.items()) if a.probabilities else a.text
        print(f"[{a.prompt_id}] {shown}  ({a.stop_reason}, {len(a.tokens)} tokens)")
    print(f"host time: ViT {analysis.shared.vit_ms:.0f} ms, shared prefix {analysis.shared.prefill_ms:.0f} ms;"
          f" modelled AX650N time for the same work: {model.meter.ms / 1000:.1f} s")
    if model.note:
        print(f"note: {model.note}. For real descriptions: vlmwatch describe --model /path/to/InternVL3-2B"
              " (board layout or an ONNX bundle from 'vlmwatch export').", file=sys.stderr)
    return 0


def tiny_model(path: Path) -> Path:
    if not (path / "manifest.json").is_file():
        from daemon.tiny import make_tiny_model

        print(f"building the tiny random model in {path} (once) ...", flush=True)
        # 32 chunks of 16 tokens: room for 8 frames with InternVL's default system text.
        make_tiny_model(path, seed=0, prefill_len=16, kv_len=640, groups=32, progress=lambda line: None)
    return path


def write_demo_clip(path: Path, seconds: int = 16, fps: int = 10) -> Path:
    """A still room in which a bright box enters at 4 s and crosses the frame."""
    import cv2

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = 320, 240
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    room = np.full((h, w, 3), 90, np.uint8)
    cv2.rectangle(room, (0, 170), (w, h), (60, 80, 60), -1)  # floor
    for i in range(seconds * fps):
        img = room.copy()
        t = i / fps
        if t >= 4:
            x = int((t - 4) * 30)
            cv2.rectangle(img, (x, 100), (x + 40, 190), (40, 160, 230), -1)
        noise = rng.integers(-4, 5, img.shape, dtype=np.int16)
        out.write(np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    out.release()
    return path
