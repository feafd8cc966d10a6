"""A stand-in for the vendor `axengine` package, for contract tests only.

It declares the InternVL3-2B "2048" video build exactly as the board does
(DESIGN section 3: decode group 0 plus prefill groups 1..17, hidden 1536,
kv_dim 256, KV 2559, bfloat16 K/V/input/mask, uint32 indices) and checks
every call the way pyaxengine does: exact shapes and dtypes, a known shape
group, and output_names=None. It computes nothing: outputs are zeros, and the
post graph's logits pick tokens from a fixed cycle so decoding never stops early.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
U32 = np.dtype(np.uint32)
F32 = np.dtype(np.float32)
HIDDEN, KV_DIM, KV_LEN, P, GROUPS, VOCAB, IMAGE_TOKENS = 1536, 256, 2559, 128, 17, 151674, 256
TOKEN_CYCLE = range(200, 250)  # what the fake post graph "generates"

calls: list[tuple[str, int]] = []  # (file name, shape group) of every run, for the tests
sessions: list["InferenceSession"] = []


class NodeArg:
    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, dtype, shape


def _layer_inputs(k: int) -> list[NodeArg]:
    if k == 0:
        return [NodeArg("K_cache", BF16, [1, KV_LEN, KV_DIM]), NodeArg("V_cache", BF16, [1, KV_LEN, KV_DIM]),
                NodeArg("indices", U32, [1, 1]), NodeArg("input", BF16, [1, 1, HIDDEN]),
                NodeArg("mask", BF16, [1, 1, KV_LEN + 1])]
    past = [1, 1, HIDDEN] if k == 1 else [1, P * (k - 1), KV_DIM]
    return [NodeArg("K_cache", BF16, past), NodeArg("V_cache", BF16, past), NodeArg("indices", U32, [1, P]),
            NodeArg("input", BF16, [1, P, HIDDEN]), NodeArg("mask", BF16, [1, P, P * k])]


def _layer_outputs(k: int) -> list[NodeArg]:
    q = 1 if k == 0 else P
    return [NodeArg("K_cache_out", BF16, [1, q, KV_DIM]), NodeArg("V_cache_out", BF16, [1, q, KV_DIM]),
            NodeArg("output", BF16, [1, q, HIDDEN])]


def _graph(path: str):
    name = os.path.basename(path)
    if "_together" in name:
        return [_layer_inputs(k) for k in range(GROUPS + 1)], [_layer_outputs(k) for k in range(GROUPS + 1)]
    if "post" in name:
        return [[NodeArg("input", BF16, [1, 1, HIDDEN])]], [[NodeArg("output", F32, [1, 1, VOCAB])]]
    if "vit" in name:
        return ([[NodeArg("image", F32, [1, 3, 448, 448])]],
                [[NodeArg("output", BF16, [1, IMAGE_TOKENS, HIDDEN])]])
    raise RuntimeError(f"fake axengine: unknown graph {name}")


class InferenceSession:
    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        if not os.path.isfile(path_or_bytes):
            raise RuntimeError(f"fake axengine: no such model {path_or_bytes}")
        self.path, self.providers, self.provider_options = path_or_bytes, providers, provider_options
        self.name = os.path.basename(path_or_bytes)
        self._inputs, self._outputs = _graph(path_or_bytes)
        self._shape_count = len(self._inputs)
        self.post_calls = 0
        sessions.append(self)

    def get_inputs(self, shape_group: int = 0):
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._inputs[shape_group]  # IndexError at == count, as the real one

    def get_outputs(self, shape_group: int = 0):
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._outputs[shape_group]

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        if output_names is not None:
            raise ValueError("fake axengine: pass output_names=None (a subset fails on the board)")
        if not 0 <= shape_group < self._shape_count:
            raise ValueError(f"Invalid shape group: {shape_group}")
        declared = self._inputs[shape_group]
        missing = [a.name for a in declared if a.name not in input_feed]
        if missing:
            raise ValueError(f"Required inputs ({missing}) are missing from input feed.")
        for a in declared:
            npy = input_feed[a.name]
            assert list(a.shape) == list(npy.shape) and a.dtype == npy.dtype, (
                f"model inputs({a.name}) expect shape {a.shape} and dtype {a.dtype}, "
                f"however gets input with shape {npy.shape} and dtype {npy.dtype}")
        calls.append((self.name, shape_group))
        outs = [np.zeros(o.shape, o.dtype) for o in self._outputs[shape_group]]
        if "post" in self.name:
            outs[0][0, 0, TOKEN_CYCLE[self.post_calls % len(TOKEN_CYCLE)]] = 1.0
            self.post_calls += 1
        return outs
