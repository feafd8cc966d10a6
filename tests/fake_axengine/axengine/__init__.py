"""A stand-in for the vendor `axengine` package (pyaxengine), for tests only.

Written from upstream's source (AXERA-TECH/pyaxengine, tags 0.1.0rc1 to
0.1.3.rc3 and 0.1.3-frigate; `_upstream` lists what differs by tag and
picks one from FAKE_AXENGINE_TAG). Like upstream it has no `__version__`:
the version is the installed distribution's metadata (here the dist-info
beside this folder, or one a test puts first on sys.path).

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

from . import _upstream
from ._axclrt import context_sets
from ._base_session import SessionOptions, calls, traffic_log
from ._graphs import BF16, F32, GROUPS, HIDDEN, IMAGE_TOKENS, KV_DIM, KV_LEN, TOKEN_CYCLE, U32, VOCAB, NodeArg, P
from ._memory import FakeMemoryError, Traffic
from ._session import InferenceSession, sessions

TAG = _upstream.TAG

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
           "SessionOptions",
           "TAG",
           "context_sets",
           "NodeArg",
           "P",
           "Traffic",
           "calls",
           "sessions",
           "traffic_log",
]
