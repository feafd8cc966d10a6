"""Session backends: the one seam between vlmwatch and the inference runtime.

A session is one compiled graph. Everything the engine knows about a graph it
reads from `inputs(group)`: names, shapes and dtypes per *shape group*
(docs/npu-contract.md). Backends:

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

from daemon.engine.axinternals import check_runtime, open_buffers
from daemon.engine.costs import (  # noqa: F401 -- re-exported: the cost model's figures live in costs.py
    DECODE_TOKEN_MS,
    POST_MS,
    REFERENCE_TOK_S,
    VIT_MS,
    Traffic,
    exact_traffic,
    host_ms,
    modelled_ms,
    run_traffic,
)
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
        self.version = check_runtime(axengine, device_id is not None)  # too old for shape groups: fail here
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
        # output_names must be None: the runtime fails on a subset of names. Before 0.1.3.rc1 the SoC
        # provider returns views of its output buffers, which the next call overwrites: own them.
        out = self._sess.run(None, feeds, shape_group=group)
        return [a if a.flags.owndata else a.copy() for a in out]

    def resident(self, names: Sequence[str], pinned: bool = True) -> ResidentInputs:
        """The session's own buffers hold `names`; a previous holder (another engine on this model) is retired."""
        buffers = open_buffers(self._axengine, self._sess, self._card, len(self._ports[0]), len(self._out_ports[0]),
                               pinned)
        if self._holder is not None:
            self._holder.retire()
        self._holder = ResidentInputs(self.name, buffers, self._ports, self._out_ports, names)
        return self._holder


# --------------------------------------------------------------------------- ONNX Runtime


DEFAULT_ORT_THREADS = 1  # per session: the daemon runs graphs one after another on one worker thread


def ort_options(ort, threads: int, spin: bool = False):
    """SessionOptions with an explicit thread pool: `threads` intra-op threads (0: one per core, as ONNX
    Runtime chooses), one inter-op thread (graphs run sequentially), and no spinning (`spin` True with
    `threads` 0 is ONNX Runtime's own default, kept so that benchmarks can compare).

    ONNX Runtime's default pool spins its idle threads waiting for work: with 40 small per-layer
    sessions that is 36-42 % of a core doing nothing. Measured on the tiny model (benchmarks/
    bench_ort_threads.py, CPU seconds for the same answers, side by side): see docs/host.md."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spinning = "1" if spin else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return opts


class OnnxSession:
    """One float32 ONNX graph; feeds are checked against the bundle's declared groups."""

    def __init__(self, path: Path, groups: list[list[Port]], threads: int = DEFAULT_ORT_THREADS, spin: bool = False):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(
                "the onnxruntime backend needs ONNX Runtime: pip install 'vlmwatch[onnx]'"
            ) from None
        self.name = Path(path).name
        self._ports = groups
        self.group_count = len(groups)
        opts = ort_options(ort, threads, spin)
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

def _nbytes(arrays) -> int:
    return sum(int(a.nbytes) for a in arrays)


class ProfileSession:
    """Wraps a session; adds the modelled AX650N cost of each call to `meter`.

    The cost is the graph's published NPU time plus the host traffic of the
    call as pyaxengine's run() makes it (costs.py): fed arrays and outputs
    copied, each fed input's whole buffer flushed and each output's whole
    buffer invalidated (on the SoC); with resident inputs only the bytes
    written and read. With `sleep=True` each call also sleeps for that long
    (less the real time the inner session took), so a fast machine behaves
    like the board.
    """

    def __init__(self, inner: Session, role: str, meter: "Meter", sleep: bool = False, card: bool = False):
        self.inner, self.role, self.meter, self.sleep, self.card = inner, role, meter, sleep, card
        self.name = inner.name
        self.group_count = inner.group_count
        groups = range(inner.group_count)
        # one buffer per input and output, sized for the largest group (what a whole-buffer flush covers);
        # an output declared with dynamic axes (ONNX) is sized by what the call returns
        self._in_buffers = [max(inner.inputs(g)[i].nbytes for g in groups) for i in range(len(inner.inputs(0)))]
        outs = [[inner.outputs(g)[i] for g in groups] for i in range(len(inner.outputs(0)))]
        self._out_buffers = [None if any(min(p.shape) < 0 for p in ps) else max(p.nbytes for p in ps) for ps in outs]

    def inputs(self, group: int = 0) -> list[Port]:
        return self.inner.inputs(group)

    def outputs(self, group: int = 0) -> list[Port]:
        return self.inner.outputs(group)

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.run(feeds, group)
        names = [p.name for p in self.inner.inputs(group)]
        fed = [int(feeds[n].nbytes) for n in names if n in feeds]
        fed_buffers = [b for n, b in zip(names, self._in_buffers) if n in feeds]
        out_bytes = [int(a.nbytes) for a in out]
        out_buffers = [b if b is not None else n for b, n in zip(self._out_buffers, out_bytes)]
        self._account(group, run_traffic(fed, fed_buffers, out_bytes, out_buffers, self.card), t0)
        return out

    def resident(self, names: Sequence[str], pinned: bool = True) -> "ProfiledResident":
        return ProfiledResident(self, self.inner.resident(names, pinned))

    def _account(self, group: int, traffic: Traffic, t0: float) -> None:
        cost = self.meter.add(self.role, group, modelled_ms(self.role, group), traffic)
        if self.sleep:
            time.sleep(max(0.0, cost / 1000.0 - (time.perf_counter() - t0)))


class ProfiledResident:
    """A resident session whose calls and row writes are priced like ProfileSession's (exact bytes)."""

    def __init__(self, profile: ProfileSession, inner: ResidentInputs):
        self.profile, self.inner, self.names = profile, inner, inner.names

    def write(self, name: str, row: int, rows: np.ndarray) -> int:
        nbytes = self.inner.write(name, row, rows)
        self.profile.meter.add_traffic(exact_traffic(nbytes, 0, self.profile.card))
        return nbytes

    def run(self, feeds: dict[str, np.ndarray], group: int) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.run(feeds, group)
        written = _nbytes(feeds.values()) + self.inner.placeholder_bytes(group)
        self.profile._account(group, exact_traffic(written, _nbytes(out), self.profile.card), t0)
        return out


class Meter:
    """Running totals of modelled milliseconds (NPU and host traffic), bytes and calls (one NPU thread: no lock)."""

    def __init__(self):
        self.ms = 0.0  # npu_ms + host_ms: what the NPU worker is busy for on the board
        self.npu_ms = 0.0
        self.host_ms = 0.0
        self.traffic = Traffic()  # moved between host and NPU memory, by kind
        self.calls: dict[tuple[str, int], int] = {}

    @property
    def bytes(self) -> int:
        """Bytes copied, flushed and invalidated, all together."""
        return self.traffic.total

    def add(self, role: str, group: int, npu_ms: float, traffic: Traffic = Traffic()) -> float:
        """Account one graph call; return its modelled cost in ms."""
        self.npu_ms += npu_ms
        self.ms += npu_ms
        self.calls[(role, group)] = self.calls.get((role, group), 0) + 1
        return npu_ms + self.add_traffic(traffic)

    def add_traffic(self, traffic: Traffic) -> float:
        """Account bytes moved outside a call (resident rows written); return their modelled ms."""
        ms = host_ms(traffic)
        self.traffic += traffic
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
