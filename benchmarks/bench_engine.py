"""Host-side cost of the engine at full InternVL3-2B size, next to the AX650N time it drives.

Sessions compute nothing (NullSession: declared shapes checked, zeros
returned), so what is timed is vlmwatch's own Python work per call: feeds,
masks, KV-cache writes, embedding lookups from a memory-mapped 151674 x 1536
table, logits and greedy sampling. The same calls are priced with the AX650N
cost model (ProfileSession): published NPU time per graph plus the host <->
device traffic of what each call moves. Both KV paths run side by side:
whole caches fed with every call (the reference demo's way) and resident KV.

    python benchmarks/bench_engine.py [--steps 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fullsize import BF16, HIDDEN, KV_DIM, KV_LEN, LAYERS, VOCAB, P, sessions

from daemon.engine.bundle import load_embeddings
from daemon.engine.engine import Sampling, sample
from daemon.engine.llm import LLM
from daemon.engine.sessions import Meter

PROMPT = 2156  # the reference demo's 8-frame video prompt


@dataclass(frozen=True)
class Run:
    """Per decode step (or per prefill chunk): measured host ms, modelled ms, of which traffic, and bytes moved."""

    host_ms: float
    modelled_ms: float
    npu_ms: float
    traffic_ms: float
    bytes: float


def _delta(meter: Meter, before: tuple, host_s: float, n: int) -> Run:
    ms, npu, traffic, moved = (meter.ms - before[0], meter.npu_ms - before[1], meter.host_ms - before[2],
                               meter.bytes - before[3])
    return Run(host_s * 1e3 / n, ms / n, npu / n, traffic / n, moved / n)


def _mark(meter: Meter) -> tuple:
    return meter.ms, meter.npu_ms, meter.host_ms, meter.bytes


def measure(kv: str, steps: int, table) -> tuple[Run, Run]:
    """(prefill per chunk, decode per step) for a PROMPT-token prompt and `steps` greedy steps."""
    meter = Meter()
    layers, post, _ = sessions(meter)
    llm = LLM(layers, post, kv)
    assert llm.kv_path == kv, f"asked for {kv} KV, got {llm.kv_path}"
    rng = np.random.default_rng(0)
    embeds = table[rng.integers(0, VOCAB, PROMPT)].astype(BF16)
    chunks = -(-PROMPT // P)
    t0, m0 = time.perf_counter(), _mark(meter)
    logits = llm.logits(llm.prefill(embeds, 0))
    prefill = _delta(meter, m0, time.perf_counter() - t0, chunks)
    greedy, pos = Sampling(), PROMPT
    t0, m0 = time.perf_counter(), _mark(meter)
    for _ in range(steps):
        logits = llm.decode(np.asarray(table[sample(logits, greedy, rng)], BF16), pos)
        pos += 1
    return prefill, _delta(meter, m0, time.perf_counter() - t0, steps)


def with_table(fn):
    """Call fn(table) with a sparse, memory-mapped full-size float32 embedding table."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (VOCAB, HIDDEN)).flush()
        return fn(load_embeddings(path, HIDDEN))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="decode steps to time")
    args = ap.parse_args()
    runs = with_table(lambda table: {kv: measure(kv, args.steps, table) for kv in ("copied", "resident")})
    print(f"full size: {LAYERS} layers, hidden {HIDDEN}, KV {KV_LEN}x{KV_DIM} bf16, prefill chunk {P};"
          f" prompt {PROMPT} tokens ({-(-PROMPT // P)} chunks), {args.steps} decode steps")
    print(f"{'':26}{'host (Python)':>14}{'modelled':>11}{'of it NPU':>11}{'traffic':>9}{'moved':>10}"
          f"{'host/modelled':>15}")
    for kv, (prefill, decode) in runs.items():
        for what, r in (("prefill chunk", prefill), ("decode step", decode)):
            print(f"  {kv + ' KV, ' + what:24}{r.host_ms:11.2f} ms{r.modelled_ms:8.1f} ms{r.npu_ms:8.1f} ms"
                  f"{r.traffic_ms:6.1f} ms{r.bytes / 1e6:7.2f} MB{100 * r.host_ms / r.modelled_ms:13.2f} %")
    print("  host (Python) is vlmwatch's own work on this machine (target < 5 % of a decode step);"
          " traffic is the modelled host <-> NPU copying and cache flushing on the board.")


if __name__ == "__main__":
    main()
