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
  on an AX650N (published figures), so every run reports modelled NPU time.
- `NullSession`: costs nothing and returns zeros of the declared output
  shapes; benchmarks use it to measure host overhead alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from daemon.errors import ModelError, ShapeError

BACKENDS = ("axengine", "onnxruntime")
AXENGINE_PROVIDER = "AxEngineExecutionProvider"
AXCLRT_PROVIDER = "AXCLRTExecutionProvider"
MAX_GROUPS = 64  # probing bound; the 2048 video build has 18 (decode + 17 prefill)


@dataclass(frozen=True)
class Port:
    """One declared graph input."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def from_json(cls, d: dict) -> "Port":
        return cls(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(_dtype(d["dtype"])))


def _dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return name


class Session(Protocol):
    """What the engine needs from a graph."""

    name: str
    group_count: int

    def inputs(self, group: int = 0) -> list[Port]: ...

    def outputs(self, group: int = 0) -> list[Port]: ...

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]: ...


def check_feeds(name: str, ports: Sequence[Port], feeds: dict[str, np.ndarray], group: int) -> None:
    """Raise ShapeError unless feeds match the declared ports exactly (names, shapes, dtypes)."""
    missing = [p.name for p in ports if p.name not in feeds]
    unknown = sorted(set(feeds) - {p.name for p in ports})
    if missing or unknown:
        raise ShapeError(
            f"{name} (shape group {group}): required inputs {missing} are missing"
            f" and inputs {unknown} are unknown; the graph declares {[p.name for p in ports]}"
        )
    for p in ports:
        a = feeds[p.name]
        if tuple(a.shape) != p.shape or a.dtype != p.dtype:
            # Same wording as the NPU runtime's own check, plus where it happened.
            raise ShapeError(
                f"{name} (shape group {group}): model inputs({p.name}) expect shape {list(p.shape)}"
                f" and dtype {p.dtype}, however gets input with shape {list(a.shape)} and dtype {a.dtype}"
            )


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
        axengine = import_axengine()
        self.name = Path(path).name
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


# --------------------------------------------------------------------------- profiling

# Published AX650N figures for InternVL3-2B (DESIGN section 5), milliseconds per call.
VIT_MS = 364.870
POST_MS = 11.455
DECODE_LAYER_MS = 2.686
PREFILL_LAYER_MS = (7.483, 10.089, 12.815, 15.235, 18.527, 20.751, 23.520, 25.932, 29.124,
                    31.727, 34.708, 36.982, 39.950, 42.418, 45.933, 48.577, 52.405)  # groups 1..17


def modelled_ms(role: str, group: int) -> float:
    """What one call of a graph with this role costs on the AX650N."""
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


class ProfileSession:
    """Wraps a session; adds the modelled AX650N cost of each call to `meter`.

    With `sleep=True` each call also sleeps for that long (less the real time
    the inner session took), so a fast machine behaves like the board.
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
        cost = modelled_ms(self.role, group)
        self.meter.add(self.role, group, cost)
        if self.sleep:
            time.sleep(max(0.0, cost / 1000.0 - (time.perf_counter() - t0)))
        return out


class Meter:
    """Running totals of modelled NPU milliseconds and calls (single NPU thread: no lock)."""

    def __init__(self):
        self.ms = 0.0
        self.calls: dict[tuple[str, int], int] = {}

    def add(self, role: str, group: int, ms: float) -> None:
        self.ms += ms
        self.calls[(role, group)] = self.calls.get((role, group), 0) + 1

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
