"""Modelled AX650N seconds per 8-frame window: shared prefix vs every prompt from scratch.

One window, a description (64 tokens) and two yes/no rule questions, through
the real engine on full-size sessions that compute nothing and are priced
with the published AX650N per-graph figures (DESIGN section 5). The
from-scratch column is what the reference demo does: ViT and the whole
prompt again for every question. Both run side by side in one process.

    python benchmarks/bench_window.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from fullsize import HIDDEN, VOCAB, sessions

from daemon.engine.bundle import Model, load_embeddings
from daemon.engine.engine import Engine
from daemon.engine.export.tiny import build_tokenizer
from daemon.engine.sessions import Meter
from daemon.types import Frame, Prompt

SYSTEM = "You watch a home camera."  # the stand-in tokenizer spells InternVL's Chinese system text longer
PROMPTS = [Prompt("person", "Is a person at the door? Answer yes or no.", ("yes", "no")),
           Prompt("package", "Is a package left? Answer yes or no.", ("yes", "no")),
           Prompt("description", "Describe what happens in the video.", max_new_tokens=64)]


def model(embeddings, tokenizer) -> Model:
    meter = Meter()
    layers, post, vit = sessions(meter)
    return Model("InternVL3-2B (modelled)", layers, post, vit, embeddings, tokenizer, meter)


def main() -> None:
    tokenizer = build_tokenizer()  # a real BPE tokenizer with InternVL's special tokens
    rng = np.random.default_rng(0)
    frames = [Frame("cam", float(i), i, rng.integers(0, 255, (720, 1280, 3), np.uint8)) for i in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (VOCAB, HIDDEN)).flush()
        table = load_embeddings(path, HIDDEN)

        shared = model(table, tokenizer)
        t0 = time.perf_counter()
        analysis = Engine(shared, system=SYSTEM).ask(frames, PROMPTS)
        shared_host = time.perf_counter() - t0

        scratch_ms, t0 = 0.0, time.perf_counter()
        for prompt in PROMPTS:
            m = model(table, tokenizer)
            Engine(m, system=SYSTEM).ask(frames, [prompt])
            scratch_ms += m.meter.ms
        scratch_host = time.perf_counter() - t0

    print(f"one 8-frame window ({analysis.prefix_tokens}-token prefix), 2 yes/no rules + a 64-token description,"
          " modelled on the AX650N:")
    print(f"  shared prefix : {shared.meter.ms / 1000:6.1f} s NPU  (host {shared_host:5.2f} s)")
    print(f"  from scratch  : {scratch_ms / 1000:6.1f} s NPU  (host {scratch_host:5.2f} s)")
    print(f"  ratio         : {scratch_ms / shared.meter.ms:6.2f}x less NPU time per window with the shared prefix")


if __name__ == "__main__":
    main()
