"""Session backends: the one seam between vlmwatch and the inference runtime.

A session is one compiled graph. Everything the engine knows about a graph it
reads from `inputs(group)`: names, shapes and dtypes per *shape group*
(DESIGN section 3). Backends:

- `AxEngineSession`: the vendor `axengine` runtime on the AX650N (or the M.2
  card through AXCLRT). Imported lazily: the package exists only on boards.
- `OnnxSession`: ONNX Runtime with float32 graphs and dynamic axes. It checks
  every feed against the group table the bundle declares, so a shape bug fails
  here exactly as it would on the NPU.
- `ProfileSession`: wraps any session and adds up what each call would cost
  on an AX650N: the published per-graph times plus the host<->device copies
  and cache flushes of what the call feeds, so every run reports modelled time.
- `NullSession`: costs nothing and returns zeros of the declared output
  shapes; benchmarks use it to measure host overhead alone.

`resident(names)` gives a session whose `names` inputs (the KV cache) stay in
the runtime's own buffers between calls (daemon/engine/resident.py), or raises
ResidentUnavailable when the backend cannot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from daemon.engine.axinternals import open_buffers
from daemon.engine.feeds import Port, check_feeds
from daemon.engine.resident import HostBuffers, ResidentInputs, ResidentUnavailable
from daemon.errors import ModelError, ShapeError

BACKENDS = ("axengine", "onnxruntime")
AXENGINE_PROVIDER = "AxEngineExecutionProvider"
AXCLRT_PROVIDER = "AXCLRTExecutionProvider"
MAX_GROUPS = 64  # probing bound; the 2048 video build has 18 (decode + 17 prefill)


class Session(Protocol):
    """What the engine needs from a graph."""

    name: str
    group_count: int

    def inputs(self, group: int = 0) -> list[Port]: ...

    def outputs(self, group: int = 0) -> list[Port]: ...

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]: ...

    def resident(self, names: Sequence[str], pinned: bool = True) -> ResidentInputs:
        """This session with `names` kept in its buffers; `pinned`: only on known runtime versions."""


# --------------------------------------------------------------------------- axengine


def import_axengine():
    """Import the vendor runtime, or explain how to get it."""
    try:
        import axengine
    except ImportError as exc:
        raise ModelError(
            "the axengine backend needs the vendor NPU runtime, which is not available here"
            f" ({exc}). On an AX650N board install the pyaxengine wheel"
            " (pip install axengine-<version>-py3-none-any.whl from AXERA-TECH/pyaxengine releases);"
            " on any other machine run an ONNX bundle (vlmwatch export) with the onnxruntime backend."
        ) from None
    return axengine


class AxEngineSession:
    """One .axmodel on the NPU. Create each once: destroying a session leaks NPU memory."""

    def __init__(self, path: Path, device_id: int | None = None):
        self._axengine = axengine = import_axengine()
        self.name = Path(path).name
        self._card = device_id is not None
        self._holder: ResidentInputs | None = None  # whose KV cache the buffers hold
        if device_id is None:
            self._sess = axengine.InferenceSession(str(path), providers=[AXENGINE_PROVIDER])
        else:  # M.2 card: the host talks to card `device_id` through AXCLRT
            self._sess = axengine.InferenceSession(
                str(path), providers=[AXCLRT_PROVIDER], provider_options=[{"device_id": device_id}]
            )
        self._ports = self._read_groups(self._sess.get_inputs)
        self._out_ports = self._read_groups(self._sess.get_outputs)
        self.group_count = len(self._ports)

    def _read_groups(self, getter) -> list[list[Port]]:
        groups = []
        for k in range(MAX_GROUPS):
            try:
                args = getter(shape_group=k)
            except (IndexError, ValueError):  # past the last group
                break
            if not args:
                break
            groups.append([Port(a.name, tuple(int(x) for x in a.shape), np.dtype(a.dtype)) for a in args])
        if not groups:
            raise ModelError(f"{self.name}: the NPU runtime reports no inputs; is the file a compiled axmodel?")
        return groups

    def inputs(self, group: int = 0) -> list[Port]:
        return self._ports[group]

    def outputs(self, group: int = 0) -> list[Port]:
        return self._out_ports[group]

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        # output_names must be None: the runtime fails on a subset of names.
        return self._sess.run(None, feeds, shape_group=group)

    def resident(self, names: Sequence[str], pinned: bool = True) -> ResidentInputs:
        """The session's own buffers hold `names`; a previous holder (another engine on this model) is retired."""
        buffers = open_buffers(self._axengine, self._sess, self._card, len(self._ports[0]), len(self._out_ports[0]),
                               pinned)
        if self._holder is not None:
            self._holder.retire()
        self._holder = ResidentInputs(self.name, buffers, self._ports, self._out_ports, names)
        return self._holder


# --------------------------------------------------------------------------- ONNX Runtime


class OnnxSession:
    """One float32 ONNX graph; feeds are checked against the bundle's declared groups."""

    def __init__(self, path: Path, groups: list[list[Port]], threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(
                "the onnxruntime backend needs ONNX Runtime: pip install 'vlmwatch[onnx]'"
            ) from None
        self.name = Path(path).name
        self._ports = groups
        self.group_count = len(groups)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        try:
            self._sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{path}: ONNX Runtime cannot load this graph: {exc}") from None
        self._outputs = [o.name for o in self._sess.get_outputs()]

    def inputs(self, group: int = 0) -> list[Port]:
        return self._ports[group]

    def outputs(self, group: int = 0) -> list[Port]:
        """Output ports as ONNX declares them; dynamic axes are -1."""
        return [Port(o.name, tuple(d if isinstance(d, int) else -1 for d in o.shape), np.dtype(np.float32))
                for o in self._sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        if not 0 <= group < self.group_count:
            raise ShapeError(f"{self.name}: invalid shape group {group} (the graph has {self.group_count})")
        check_feeds(self.name, self._ports[group], feeds, group)
        return self._sess.run(self._outputs, feeds)

    def resident(self, names: Sequence[str], pinned: bool = True) -> ResidentInputs:
        raise ResidentUnavailable("ONNX Runtime takes every input with each call", expected=True)


# --------------------------------------------------------------------------- profiling

# Published AX650N figures for InternVL3-2B (DESIGN section 5), milliseconds per call.
VIT_MS = 364.870
POST_MS = 11.455
DECODE_LAYER_MS = 2.686
PREFILL_LAYER_MS = (7.483, 10.089, 12.815, 15.235, 18.527, 20.751, 23.520, 25.932, 29.124,
                    31.727, 34.708, 36.982, 39.950, 42.418, 45.933, 48.577, 52.405)  # groups 1..17
LAYERS = 28  # InternVL3-2B's decoder layers, for the published per-token figures below
DECODE_TOKEN_MS = DECODE_LAYER_MS * LAYERS + POST_MS  # 2.686 x 28 + 11.455 = 86.66 ms: 11.5 tok/s, NPU alone

# Host <-> device traffic. pyaxengine's run() copies every fed array into the
# session's input buffer and flushes the CPU cache over it, then copies every
# output back. The reference Python demo feeds whole K/V caches at each decode
# step and logs 7.1-7.3 tok/s end to end while its graphs need DECODE_TOKEN_MS:
# the rest of each step is that traffic. One rate, calibrated on that demo,
# prices every byte a call moves (its copy and its cache flush together).
REFERENCE_TOK_S = 7.2  # the middle of the demo's 7.1-7.3 tok/s


def reference_step_bytes(kv_len: int = 2559, kv_dim: int = 256, hidden: int = 1536, vocab: int = 151674) -> int:
    """Bytes one decode step moves when it feeds whole caches (bf16 K/V/input/mask, uint32 indices)."""
    layer_in = 2 * kv_len * kv_dim * 2 + 4 + hidden * 2 + (kv_len + 1) * 2  # 2,628,612 B: K, V, indices, input, mask
    layer_out = 2 * kv_dim * 2 + hidden * 2  # new K row, new V row, hidden
    return LAYERS * (layer_in + layer_out) + hidden * 2 + vocab * 4  # + the post graph: hidden in, f32 logits out


HOST_MS_PER_STEP = 1000.0 / REFERENCE_TOK_S - DECODE_TOKEN_MS  # ~52.2 ms of host traffic per reference step
HOST_BYTES_PER_MS = reference_step_bytes() / HOST_MS_PER_STEP  # ~1.42 GB/s


def host_ms(nbytes: int) -> float:
    """Modelled host time to move `nbytes` between host and NPU memory (copy and cache maintenance)."""
    return nbytes / HOST_BYTES_PER_MS


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


def _nbytes(arrays) -> int:
    return sum(int(a.nbytes) for a in arrays)


class ProfileSession:
    """Wraps a session; adds the modelled AX650N cost of each call to `meter`.

    The cost is the graph's published NPU time plus the host traffic of the
    call: every fed input and every output, or with resident inputs the rows
    written and the small inputs. With `sleep=True` each call also sleeps for
    that long (less the real time the inner session took), so a fast machine
    behaves like the board.
    """

    def __init__(self, inner: Session, role: str, meter: "Meter", sleep: bool = False):
        self.inner, self.role, self.meter, self.sleep = inner, role, meter, sleep
        self.name = inner.name
        self.group_count = inner.group_count

    def inputs(self, group: int = 0) -> list[Port]:
        return self.inner.inputs(group)

    def outputs(self, group: int = 0) -> list[Port]:
        return self.inner.outputs(group)

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.run(feeds, group)
        self._account(group, _nbytes(feeds.values()) + _nbytes(out), t0)
        return out

    def resident(self, names: Sequence[str], pinned: bool = True) -> "ProfiledResident":
        return ProfiledResident(self, self.inner.resident(names, pinned))

    def _account(self, group: int, nbytes: int, t0: float) -> None:
        cost = self.meter.add(self.role, group, modelled_ms(self.role, group), nbytes)
        if self.sleep:
            time.sleep(max(0.0, cost / 1000.0 - (time.perf_counter() - t0)))


class ProfiledResident:
    """A resident session whose calls and row writes are priced like ProfileSession's."""

    def __init__(self, profile: ProfileSession, inner: ResidentInputs):
        self.profile, self.inner, self.names = profile, inner, inner.names

    def write(self, name: str, row: int, rows: np.ndarray) -> int:
        nbytes = self.inner.write(name, row, rows)
        self.profile.meter.add_traffic(nbytes)
        return nbytes

    def run(self, feeds: dict[str, np.ndarray], group: int) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.run(feeds, group)
        self.profile._account(group, _nbytes(feeds.values()) + _nbytes(out), t0)
        return out


class Meter:
    """Running totals of modelled milliseconds (NPU and host traffic), bytes and calls (one NPU thread: no lock)."""

    def __init__(self):
        self.ms = 0.0  # npu_ms + host_ms: what the NPU worker is busy for on the board
        self.npu_ms = 0.0
        self.host_ms = 0.0
        self.bytes = 0  # moved between host and NPU memory
        self.calls: dict[tuple[str, int], int] = {}

    def add(self, role: str, group: int, npu_ms: float, nbytes: int = 0) -> float:
        """Account one graph call; return its modelled cost in ms."""
        self.npu_ms += npu_ms
        self.ms += npu_ms
        self.calls[(role, group)] = self.calls.get((role, group), 0) + 1
        return npu_ms + self.add_traffic(nbytes)

    def add_traffic(self, nbytes: int) -> float:
        """Account bytes moved outside a call (resident rows written); return their modelled ms."""
        ms = host_ms(nbytes)
        self.bytes += nbytes
        self.host_ms += ms
        self.ms += ms
        return ms

    def count(self, role: str, group: int | None = None) -> int:
        return sum(n for (r, g), n in self.calls.items() if r == role and (group is None or g == group))


# --------------------------------------------------------------------------- null (benchmarks)


class NullSession:
    """Declares groups like a real graph and returns preallocated zeros: host overhead only."""

    def __init__(self, name: str, inputs: list[list[Port]], outputs: list[list[Port]]):
        self.name, self._ports, self._out_ports = name, inputs, outputs
        self.group_count = len(inputs)
        self._zeros = [[np.zeros(p.shape, p.dtype) for p in g] for g in outputs]

    def inputs(self, group: int = 0) -> list[Port]:
        return self._ports[group]

    def outputs(self, group: int = 0) -> list[Port]:
        return self._out_ports[group]

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        check_feeds(self.name, self._ports[group], feeds, group)
        return self._zeros[group]

    def resident(self, names: Sequence[str], pinned: bool = True) -> ResidentInputs:
        return ResidentInputs(self.name, HostBuffers(self._ports, self._out_ports), self._ports, self._out_ports, names)
