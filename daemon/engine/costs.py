"""What NPU work costs on an AX650N: published graph times plus host <-> NPU traffic, calibrated.

Graph times are the InternVL3-2B.axera README's (docs/board.md). Host
traffic is what pyaxengine's `run()` does per call (read in its source,
axengine/_axe.py, every tag from 0.1.2rc0 to 0.1.3.rc3):

    copied       every fed array memmoved into the input's buffer, every output copied back out
    flushed      AX_SYS_MflushCache over each fed input's *whole* buffer (nSize: the largest group's size)
    invalidated  AX_SYS_MinvalidateCache over each output's whole buffer

On a decode layer call with whole caches fed that is ~2.63 MB copied,
~3.57 MB flushed and ~0.52 MB invalidated. Resident KV (resident.py) copies
and flushes only the bytes it writes and invalidates only the bytes it
reads. On the M.2 card nothing is flushed: buffers are device memory filled
by axclrtMemcpy (copies only).

One rate prices every byte of the three kinds. It is fitted so that the
reference demo's decode on the 2048 build (whole caches every step)
reproduces its logged speed: 2156-token prompt, tokens 2156 -> 2280 in 18 s
(~6.9 tok/s). One figure fits one rate: copies and cache maintenance are not
priced separately, and the card's PCIe copies are priced at the SoC's rate
until a board owner's `vlmwatch bench` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# Published AX650N figures for InternVL3-2B, milliseconds per call.
VIT_MS = 364.870
POST_MS = 11.455
DECODE_LAYER_MS = 2.686
PREFILL_LAYER_MS = (7.483, 10.089, 12.815, 15.235, 18.527, 20.751, 23.520, 25.932, 29.124,
                    31.727, 34.708, 36.982, 39.950, 42.418, 45.933, 48.577, 52.405)  # groups 1..17
LAYERS = 28  # InternVL3-2B's decoder layers
DECODE_TOKEN_MS = DECODE_LAYER_MS * LAYERS + POST_MS  # 86.663 ms: what the model uses (per-graph figures)
README_DECODE_TOKEN_MS = 86.969  # the README table's "Decoder" column; its per-graph figures sum to 86.663

# The reference demo on the 2048 build (seed README, video run): decode from 2156 to 2280 tokens in 18 s.
REFERENCE_PROMPT, REFERENCE_END, REFERENCE_SECONDS = 2156, 2280, 18.0
REFERENCE_TOK_S = (REFERENCE_END - REFERENCE_PROMPT) / REFERENCE_SECONDS  # 6.89 tok/s


@dataclass(frozen=True)
class Traffic:
    """Bytes one call (or several) moves between host and NPU memory, by kind."""

    copied: int = 0
    flushed: int = 0
    invalidated: int = 0

    @property
    def total(self) -> int:
        return self.copied + self.flushed + self.invalidated

    def __add__(self, other: "Traffic") -> "Traffic":
        return Traffic(self.copied + other.copied, self.flushed + other.flushed,
                       self.invalidated + other.invalidated)


def run_traffic(fed: Sequence[int], fed_buffers: Sequence[int], out: Sequence[int], out_buffers: Sequence[int],
                card: bool = False) -> Traffic:
    """pyaxengine `run()`: fed arrays copied in, outputs copied out; on the SoC whole buffers flushed/invalidated."""
    copied = sum(fed) + sum(out)
    if card:
        return Traffic(copied)
    return Traffic(copied, sum(fed_buffers), sum(out_buffers))


def exact_traffic(written: int, read: int, card: bool = False) -> Traffic:
    """Resident buffers: exactly the bytes written are copied (and flushed), the bytes read invalidated and copied."""
    if card:
        return Traffic(written + read)
    return Traffic(written + read, written, read)


def reference_step(kv_len: int = 2559, kv_dim: int = 256, hidden: int = 1536, vocab: int = 151674,
                   prefill: int = 128, groups: int = 17) -> Traffic:
    """One decode step of the reference demo on the 2048 build: whole caches fed to every layer, then the post graph."""
    bf16 = 2
    cache = kv_len * kv_dim * bf16
    fed = [cache, cache, 4, hidden * bf16, (kv_len + 1) * bf16]  # K, V, indices, input, mask (decode group)
    # each input's buffer holds its largest group: the decode caches, prefill indices/input, group 17's mask
    buffers = [cache, cache, prefill * 4, prefill * hidden * bf16, prefill * prefill * groups * bf16]
    out = [kv_dim * bf16, kv_dim * bf16, hidden * bf16]
    out_buffers = [prefill * kv_dim * bf16, prefill * kv_dim * bf16, prefill * hidden * bf16]
    layer = run_traffic(fed, buffers, out, out_buffers)
    post = run_traffic([hidden * bf16], [hidden * bf16], [vocab * 4], [vocab * 4])
    return Traffic(layer.copied * LAYERS, layer.flushed * LAYERS, layer.invalidated * LAYERS) + post


HOST_MS_PER_STEP = 1000.0 / REFERENCE_TOK_S - DECODE_TOKEN_MS  # ~58.5 ms of traffic per reference step
HOST_BYTES_PER_MS = reference_step().total / HOST_MS_PER_STEP  # ~3.2 GB/s


def host_ms(traffic: Traffic) -> float:
    """Modelled host time of `traffic` (copies and cache maintenance alike)."""
    return traffic.total / HOST_BYTES_PER_MS


def modelled_ms(role: str, group: int) -> float:
    """What one call of a graph with this role costs on the AX650N's NPU (without host traffic)."""
    if role == "vit":
        return VIT_MS
    if role == "post":
        return POST_MS
    if group == 0:
        return DECODE_LAYER_MS
    if group <= len(PREFILL_LAYER_MS):
        return PREFILL_LAYER_MS[group - 1]
    step = PREFILL_LAYER_MS[-1] - PREFILL_LAYER_MS[-2]  # beyond the table: the trend goes on
    return PREFILL_LAYER_MS[-1] + step * (group - len(PREFILL_LAYER_MS))


def calibration_lines() -> list[str]:
    """The calibration, as `vlmwatch bench` and benchmarks/bench_board.py print it."""
    step = reference_step()
    return [
        "cost model: published AX650N NPU time per graph + host <-> NPU traffic (pyaxengine run())",
        f"  NPU alone: {DECODE_LAYER_MS} ms x {LAYERS} layers + {POST_MS} ms post = {DECODE_TOKEN_MS:.3f} ms/token"
        f" (used); the README's table says {README_DECODE_TOKEN_MS} ms/token",
        f"  reference demo, 2048 build, whole caches fed: tokens {REFERENCE_PROMPT} -> {REFERENCE_END} in"
        f" {REFERENCE_SECONDS:g} s = {REFERENCE_TOK_S:.2f} tok/s",
        f"  its traffic per token: {step.copied / 1e6:.1f} MB copied + {step.flushed / 1e6:.1f} MB flushed"
        f" + {step.invalidated / 1e6:.1f} MB invalidated = {step.total / 1e6:.1f} MB",
        f"  -> {1000 / REFERENCE_TOK_S:.1f} ms/token - {DECODE_TOKEN_MS:.2f} ms NPU = {HOST_MS_PER_STEP:.1f} ms of"
        f" traffic per token -> {HOST_BYTES_PER_MS * 1000 / 1e9:.2f} GB/s, applied to every byte any call moves",
    ]
