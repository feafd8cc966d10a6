"""Host-side cost of the engine at full InternVL3-2B size, next to the NPU time it drives.

Sessions cost nothing (NullSession: declared shapes checked, zeros returned),
so what is timed is vlmwatch's own work per call: feeds, masks, KV-cache
writes, embedding lookups from a memory-mapped 151674 x 1536 table, logits
and greedy sampling. The same calls are priced with the published AX650N
figures (ProfileSession), so the two columns compare directly.

    python benchmarks/bench_engine.py [--steps 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from fullsize import BF16, HIDDEN, KV_DIM, KV_LEN, LAYERS, VOCAB, P, sessions

from daemon.engine.bundle import load_embeddings
from daemon.engine.engine import Sampling, sample
from daemon.engine.llm import LLM
from daemon.engine.sessions import Meter


def build(meter: Meter) -> LLM:
    layers, post, _ = sessions(meter)
    return LLM(layers, post)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="decode steps to time")
    args = ap.parse_args()
    meter = Meter()
    llm = build(meter)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (VOCAB, HIDDEN)).flush()
        table = load_embeddings(path, HIDDEN)
        rng = np.random.default_rng(0)
        prompt = 2156  # the reference demo's 8-frame video prompt
        embeds = table[rng.integers(0, VOCAB, prompt)].astype(BF16)

        t0, m0 = time.perf_counter(), meter.ms
        hidden = llm.prefill(embeds, 0)
        logits = llm.logits(hidden)
        prefill_ms, prefill_npu = (time.perf_counter() - t0) * 1e3, meter.ms - m0
        chunks = -(-prompt // P)

        greedy = Sampling()
        t0, m0 = time.perf_counter(), meter.ms
        pos = prompt
        for _ in range(args.steps):
            tok = sample(logits, greedy, rng)
            logits = llm.decode(np.asarray(table[tok], BF16), pos)
            pos += 1
        decode_ms, decode_npu = (time.perf_counter() - t0) * 1e3 / args.steps, (meter.ms - m0) / args.steps

    print(f"full size: {LAYERS} layers, hidden {HIDDEN}, KV {KV_LEN}x{KV_DIM} bf16, prefill chunk {P}")
    print(f"prefill {prompt} tokens ({chunks} chunks): host {prefill_ms:8.2f} ms total,"
          f" {prefill_ms / chunks:6.2f} ms/chunk | modelled NPU {prefill_npu:9.1f} ms"
          f" -> host overhead {100 * prefill_ms / prefill_npu:5.2f}%")
    print(f"decode ({args.steps} steps):          host {decode_ms:8.3f} ms/step"
          f"               | modelled NPU {decode_npu:9.3f} ms/step"
          f" -> host overhead {100 * decode_ms / decode_npu:5.2f}% (target < 5%)")


if __name__ == "__main__":
    main()
