"""The full-size InternVL3-2B "2048" video build as NullSessions: declared shapes, no compute.

Shared by the benchmarks so that what they time is vlmwatch's own host work
at the real sizes (docs/npu-contract.md).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from daemon.engine.sessions import Meter, NullSession, Port, ProfileSession

BF16, U32, F32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint32), np.dtype(np.float32)
HIDDEN, KV_DIM, KV_LEN, P, GROUPS, LAYERS, VOCAB, IMAGE, IMAGE_TOKENS = 1536, 256, 2559, 128, 17, 28, 151674, 448, 256


def layer_ports() -> tuple[list[list[Port]], list[list[Port]]]:
    """Inputs and outputs of one decoder-layer graph, per shape group (0 decode, 1..17 prefill)."""
    ins, outs = [], []
    for k in range(GROUPS + 1):
        q, past = (1, (1, KV_LEN, KV_DIM)) if k == 0 else (P, (1, 1, HIDDEN) if k == 1 else (1, P * (k - 1), KV_DIM))
        width = KV_LEN + 1 if k == 0 else P * k
        ins.append([Port("K_cache", past, BF16), Port("V_cache", past, BF16), Port("indices", (1, q), U32),
                    Port("input", (1, q, HIDDEN), BF16), Port("mask", (1, q, width), BF16)])
        outs.append([Port("k", (1, q, KV_DIM), BF16), Port("v", (1, q, KV_DIM), BF16),
                     Port("hidden", (1, q, HIDDEN), BF16)])
    return ins, outs


def sessions(meter: Meter) -> tuple[list, ProfileSession, ProfileSession]:
    """28 layer sessions, the post graph and the ViT, each priced with the AX650N figures."""
    ins, outs = layer_ports()
    layers = [ProfileSession(NullSession(f"l{i}", ins, outs), "layer", meter) for i in range(LAYERS)]
    post = NullSession("post", [[Port("input", (1, 1, HIDDEN), BF16)]], [[Port("logits", (1, 1, VOCAB), F32)]])
    vit = NullSession("vit", [[Port("image", (1, 3, IMAGE, IMAGE), F32)]],
                      [[Port("features", (1, IMAGE_TOKENS, HIDDEN), BF16)]])
    return layers, ProfileSession(post, "post", meter), ProfileSession(vit, "vit", meter)
