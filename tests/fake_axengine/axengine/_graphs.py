"""What a fake .axmodel declares and computes.

A file without a .fake.json beside it (empty, or a sparse placeholder) is a
graph of the InternVL3-2B "2048" video build (docs/npu-contract.md: decode
group 0 plus prefill groups 1..17, hidden 1536, kv_dim 256, KV 2559, bfloat16
K/V/input/mask, uint32 indices) that computes nothing:
outputs are zeros, and the post graph's logits pick tokens from a fixed cycle
so decoding never stops early.

A file holding an ONNX graph (a tiny bundle's layer, post or ViT graph copied
under the board's file name) is executed with ONNX Runtime, with the shape
groups declared in `<file>.fake.json` ({"inputs": [[{name, shape, dtype}]],
"outputs": [...]}, one list per group): real numbers through the same buffers.
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
U32 = np.dtype(np.uint32)
F32 = np.dtype(np.float32)
HIDDEN, KV_DIM, KV_LEN, P, GROUPS, VOCAB, IMAGE_TOKENS = 1536, 256, 2559, 128, 17, 151674, 256
TOKEN_CYCLE = range(200, 250)  # what the fake post graph "generates"


class NodeArg:
    def __init__(self, name, dtype, shape):
        self.name, self.dtype, self.shape = name, np.dtype(dtype), list(shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


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


def _dtype(name: str) -> np.dtype:
    return BF16 if name == "bfloat16" else np.dtype(name)


class Graph:
    """Declared shape groups and a compute function: feeds by name -> outputs in declared order."""

    def __init__(self, path: str):
        self.name = os.path.basename(path)
        self.post_calls = 0
        if not os.path.exists(path + ".fake.json"):  # a placeholder of the full-size build (tests/boards.py)
            self.inputs, self.outputs = self._full_size(self.name)
            self._ort = None
        else:
            with open(path + ".fake.json") as f:
                spec = json.load(f)
            self.inputs, self.outputs = ([[NodeArg(d["name"], _dtype(d["dtype"]), d["shape"]) for d in g]
                                          for g in spec[key]] for key in ("inputs", "outputs"))
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = 1
            self._ort = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def _full_size(name: str):
        if "_together" in name:
            return [_layer_inputs(k) for k in range(GROUPS + 1)], [_layer_outputs(k) for k in range(GROUPS + 1)]
        if "post" in name:
            return [[NodeArg("input", BF16, [1, 1, HIDDEN])]], [[NodeArg("output", F32, [1, 1, VOCAB])]]
        if "vit" in name:
            return ([[NodeArg("image", F32, [1, 3, 448, 448])]],
                    [[NodeArg("output", F32, [1, IMAGE_TOKENS, HIDDEN])]])  # vit_slim: float32 out
        raise RuntimeError(f"fake axengine: unknown graph {name}")

    def compute(self, group: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        declared = self.outputs[group]
        if self._ort is None:
            outs = [np.zeros(o.shape, o.dtype) for o in declared]
            if "post" in self.name:
                outs[0][0, 0, TOKEN_CYCLE[self.post_calls % len(TOKEN_CYCLE)]] = 1.0
                self.post_calls += 1
            return outs
        outs = self._ort.run(None, feeds)
        for o, a in zip(declared, outs):
            assert list(a.shape) == o.shape and a.dtype == o.dtype, (
                f"fake axengine: {self.name} group {group} computed {a.shape} {a.dtype}, declared {o.shape} {o.dtype}")
        return outs
