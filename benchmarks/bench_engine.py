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

import ml_dtypes
import numpy as np

from daemon.bundle import load_embeddings
from daemon.engine import Sampling, sample
from daemon.llm import LLM
from daemon.sessions import Meter, NullSession, Port, ProfileSession

BF16, U32, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint32), np.dtype(np.float32)
HIDDEN, KV_DIM, KV_LEN, P, GROUPS, LAYERS, VOCAB = 1536, 256, 2559, 128, 17, 28, 151674
NPU_DECODE_MS = 86.969  # published: 2.686 ms x 28 layers + 11.455 ms post


def layer_ports() -> tuple[list[list[Port]], list[list[Port]]]:
    ins, outs = [], []
    for k in range(GROUPS + 1):
        q, past = (1, (1, KV_LEN, KV_DIM)) if k == 0 else (P, (1, 1, HIDDEN) if k == 1 else (1, P * (k - 1), KV_DIM))
        width = KV_LEN + 1 if k == 0 else P * k
        ins.append([Port("K_cache", past, BF16), Port("V_cache", past, BF16), Port("indices", (1, q), U32),
                    Port("input", (1, q, HIDDEN), BF16), Port("mask", (1, q, width), BF16)])
        outs.append([Port("k", (1, q, KV_DIM), BF16), Port("v", (1, q, KV_DIM), BF16),
                     Port("hidden", (1, q, HIDDEN), BF16)])
    return ins, outs


def build(meter: Meter) -> LLM:
    ins, outs = layer_ports()
    layers = [ProfileSession(NullSession(f"l{i}", ins, outs), "layer", meter) for i in range(LAYERS)]
    post = NullSession("post", [[Port("input", (1, 1, HIDDEN), BF16)]], [[Port("logits", (1, 1, VOCAB), F32)]])
    return LLM(layers, ProfileSession(post, "post", meter))


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
