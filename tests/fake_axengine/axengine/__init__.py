"""A stand-in for the vendor `axengine` package (pyaxengine), for tests only.

It mirrors pyaxengine's structure where vlmwatch touches it: the public API
(`InferenceSession(path, providers=..., provider_options=...)`, `get_inputs`,
`get_outputs`, `run(None, feeds, shape_group=k)` with pyaxengine's checks),
and the internals that resident KV relies on (daemon/engine/axinternals.py):
`InferenceSession._sess`, the SoC provider in `_axe` and the M.2 card
provider in `_axclrt`, each with one persistent buffer per input and output
sized for the largest shape group. Memory is modelled (`_memory`): CPU writes
reach the NPU only when flushed, every access is bounds-checked, and bytes
copied and flushed are counted per session (`session.traffic`).

Graphs are described in `_graphs`: placeholder files are the full-size 2048 build
computing zeros; ONNX files (a tiny bundle's) are executed with ONNX Runtime.
"""

from ._base_session import calls, traffic_log
from ._graphs import BF16, F32, GROUPS, HIDDEN, IMAGE_TOKENS, KV_DIM, KV_LEN, TOKEN_CYCLE, U32, VOCAB, NodeArg, P
from ._memory import FakeMemoryError, Traffic
from ._session import InferenceSession, sessions

__version__ = "0.1.3"

__all__ = [
           "BF16",
           "F32",
           "GROUPS",
           "HIDDEN",
           "IMAGE_TOKENS",
           "KV_DIM",
           "KV_LEN",
           "TOKEN_CYCLE",
           "U32",
           "VOCAB",
           "FakeMemoryError",
           "InferenceSession",
           "NodeArg",
           "P",
           "Traffic",
           "calls",
           "sessions",
           "traffic_log",
]
