"""Modelled AX650N seconds per 8-frame window, three ways of feeding the NPU side by side.

One window, two yes/no rule questions and a 64-token description, through
the real engine on full-size sessions that compute nothing and are priced
with the AX650N cost model (published per-graph NPU times plus host <-> NPU
traffic, calibrated on the reference demo; daemon/engine/sessions.py):

  (a) the reference demo's approach: every prompt from scratch (ViT and the
      whole prompt again per question), whole K/V caches fed with every call;
  (b) vlmwatch before issue 15: the prefix shared by every prompt, whole
      caches fed, the prefix's partial last chunk prefilled again per prompt;
  (c) now: the prefix shared, the KV cache resident in the runtime's buffers,
      the partial chunk prefilled once, short suffixes through the decode graph.

    python benchmarks/bench_window.py
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fullsize import HIDDEN, IMAGE_TOKENS, VOCAB, sessions

from daemon.engine.bundle import Model, load_embeddings, load_tokenizer
from daemon.engine.engine import Engine
from daemon.engine.export.tiny import write_tokenizer
from daemon.engine.prompt import PromptBuilder
from daemon.engine.sessions import VIT_MS, Meter
from daemon.types import Frame, Prompt

SYSTEM = "You watch a home camera."  # the stand-in tokenizer spells InternVL's Chinese system text longer
PROMPTS = [Prompt("person", "Is a person at the door? Answer yes or no.", ("yes", "no")),
           Prompt("package", "Is a package left? Answer yes or no.", ("yes", "no")),
           Prompt("description", "Describe what happens in the video.", max_new_tokens=64)]
APPROACHES = {
    "a": "reference demo: every prompt from scratch, whole caches fed",
    "b": "before: shared prefix, whole caches fed, partial chunk per prompt",
    "c": "now: shared prefix, resident KV, partial chunk once",
}


@dataclass(frozen=True)
class Window:
    """Modelled milliseconds for one window, split by where they go."""

    vit_ms: float
    llm_ms: float  # prefill and decode on the NPU
    traffic_ms: float  # host <-> NPU copies and cache flushes
    host_s: float  # what the run took on this machine (no NPU work: vlmwatch's own overhead)
    prefix_tokens: int

    @property
    def total_ms(self) -> float:
        return self.vit_ms + self.llm_ms + self.traffic_ms


def model(embeddings, tokenizer, meter: Meter) -> Model:
    layers, post, vit = sessions(meter)
    return Model("InternVL3-2B (modelled)", layers, post, vit, embeddings, tokenizer, meter)


def window(approach: str, frames, table, tokenizer) -> Window:
    meter, t0 = Meter(), time.perf_counter()
    if approach == "a":  # a fresh engine per prompt: nothing shared, not even the ViT features
        for prompt in PROMPTS:
            engine = Engine(model(table, tokenizer, meter), system=SYSTEM, kv="copied")
            tokens = engine.ask(frames, [prompt]).prefix_tokens
    else:
        kv, reuse_tail = ("copied", False) if approach == "b" else ("resident", True)
        engine = Engine(model(table, tokenizer, meter), system=SYSTEM, kv=kv, reuse_tail=reuse_tail)
        tokens = engine.ask(frames, PROMPTS).prefix_tokens
    vit = meter.count("vit") * VIT_MS
    return Window(vit, meter.npu_ms - vit, meter.host_ms, time.perf_counter() - t0, tokens)


def stand_in_tokenizer():
    """The tiny model's BPE with InternVL's special tokens, loaded as the daemon loads one (no transformers)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        return load_tokenizer(Path(tmp))


def windows() -> dict[str, Window]:
    """The three approaches on the same 1280x720 frames, in one process."""
    tokenizer = stand_in_tokenizer()  # a real BPE tokenizer with InternVL's special tokens
    rng = np.random.default_rng(0)
    frames = [Frame("cam", float(i), i, rng.integers(0, 255, (720, 1280, 3), np.uint8)) for i in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (VOCAB, HIDDEN)).flush()
        table = load_embeddings(path, HIDDEN)
        return {a: window(a, frames, table, tokenizer) for a in APPROACHES}


def suffix_tokens() -> list[int]:
    prompts = PromptBuilder(stand_in_tokenizer(), IMAGE_TOKENS, SYSTEM)
    return [len(prompts.suffix(p.question)) for p in PROMPTS]


def print_windows(results: dict[str, Window]) -> None:
    tokens = next(iter(results.values())).prefix_tokens
    print(f"one 8-frame window ({tokens}-token prefix), 2 yes/no rules + a 64-token description,"
          " modelled AX650N seconds:")
    print(f"  {'':72}{'ViT':>6}{'LLM':>7}{'traffic':>9}{'total':>8}")
    for a, w in results.items():
        print(f"  ({a}) {APPROACHES[a]:67}{w.vit_ms / 1e3:6.1f}{w.llm_ms / 1e3:7.1f}{w.traffic_ms / 1e3:9.1f}"
              f"{w.total_ms / 1e3:8.1f}")
    a, b, c = (results[k].total_ms for k in "abc")
    print(f"  now against the reference demo: {a / c:.2f}x less NPU worker time; against before: {b / c:.2f}x")


if __name__ == "__main__":
    print_windows(windows())
