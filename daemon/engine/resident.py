"""Inputs that stay in the runtime's own buffers between calls ("resident KV").

pyaxengine gives each input of a session one persistent buffer, sized for the
largest shape group and shared by every group, and its `run()` copies every
fed array into that buffer and flushes the CPU cache over it. Feeding whole
K/V caches therefore moves 73.6 MB per decode step on InternVL3-2B. Here the
caches live in those buffers instead: the engine writes only the new rows
(row r of K_cache sits at byte r x kv_dim x itemsize in every group's layout),
flushes only those bytes, and each call copies only the small inputs
(indices, input, mask), as the vendor's C++ runtime (ax-llm) does.

`ResidentInputs` is the seam the LLM uses; it works over any `Buffers`: the
NPU runtime's (daemon/engine/axinternals.py) or plain host memory
(`HostBuffers`, for the full-size benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from daemon.engine.feeds import Port, check_feeds
from daemon.errors import ModelError, ShapeError


class ResidentUnavailable(Exception):
    """The runtime cannot keep inputs resident here; the message says what did not match.

    `expected` is True when no fall-back is involved (a backend that never has
    persistent buffers), False when the NPU runtime's internals did not match.
    """

    def __init__(self, reason: str, expected: bool = False):
        super().__init__(reason)
        self.expected = expected


class Buffers(Protocol):
    """One session's raw, persistent input and output buffers (indices as the graph declares them)."""

    def input_size(self, i: int) -> int: ...

    def output_size(self, i: int) -> int: ...

    def write_input(self, i: int, offset: int, data: np.ndarray) -> None:
        """Copy `data` (uint8, contiguous) to byte `offset` of input i; make exactly those bytes visible to the NPU."""

    def execute(self, group: int) -> None: ...

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        """The first `nbytes` of output i as uint8, in host memory the caller owns."""


@dataclass(frozen=True)
class _Rows:
    """Where a resident input's rows live: input index, bytes per row, rows the buffer holds."""

    index: int
    width: int
    dtype: np.dtype
    row_bytes: int
    rows: int


class ResidentInputs:
    """A session whose `names` inputs stay in its buffers; every other input is fed per call."""

    def __init__(self, name: str, buffers: Buffers, inputs: Sequence[Sequence[Port]],
                 outputs: Sequence[Sequence[Port]], names: Sequence[str]):
        self.name, self.buffers, self.names = name, buffers, tuple(names)
        self._inputs, self._outputs = inputs, outputs
        self._index = _same_order(name, inputs, "inputs")
        _same_order(name, outputs, "outputs")
        for i, p in enumerate(inputs[0]):
            _fits(name, f"input {p.name}", buffers.input_size(i), max(g[i].nbytes for g in inputs))
        for i, p in enumerate(outputs[0]):
            _fits(name, f"output {p.name}", buffers.output_size(i), max(g[i].nbytes for g in outputs))
        self._rows = {n: self._layout(n) for n in self.names}
        # per group: the inputs fed with each call (index, port), and the outputs (index, port)
        self._fed = [[(self._index[p.name], p) for p in g if p.name not in self.names] for g in inputs]
        self._outs = [list(enumerate(g)) for g in outputs]
        # per group: resident inputs that are no run of cache rows there (group 1's K/V placeholder
        # [1, 1, hidden], no past): fed zeros, as the reference demo feeds, not the previous window's rows
        self._placeholders = [[(self._index[n], g[self._index[n]]) for n in self.names
                               if not self._is_rows(g[self._index[n]], self._rows[n])] for g in inputs]
        self._retired = False
        for r in self._rows.values():  # masked rows are still read: they must be finite, not stale garbage
            buffers.write_input(r.index, 0, np.zeros(r.rows * r.row_bytes, np.uint8))

    def _layout(self, name: str) -> _Rows:
        if name not in self._index:
            raise ResidentUnavailable(f"{self.name} declares no input {name!r}")
        i = self._index[name]
        widest = max((g[i] for g in self._inputs), key=lambda p: p.nbytes)  # [1, rows, width]
        if len(widest.shape) != 3:
            raise ResidentUnavailable(f"{self.name}: input {name} is {list(widest.shape)}, not [1, rows, width]")
        width, dtype = widest.shape[2], widest.dtype
        return _Rows(i, width, dtype, width * dtype.itemsize, widest.shape[1])

    @staticmethod
    def _is_rows(port: Port, rows: _Rows) -> bool:
        return len(port.shape) == 3 and port.shape[2] == rows.width and port.dtype == rows.dtype

    def placeholder_bytes(self, group: int) -> int:
        """Bytes of zeros one call of `group` writes over placeholder inputs (for the cost model)."""
        return sum(p.nbytes for _, p in self._placeholders[group])

    def retire(self) -> None:
        """Another holder took the buffers over: this one's cache is gone."""
        self._retired = True

    def _check_holder(self) -> None:
        if self._retired:
            raise ModelError(f"{self.name}: another engine on the same model now keeps its KV cache in this"
                             " session's buffers; use one Engine per opened model")

    def write(self, name: str, row: int, rows: np.ndarray) -> int:
        """Put rows [n, width] at rows row..row+n-1 of input `name`; return the bytes written."""
        self._check_holder()
        r = self._rows[name]
        if rows.ndim != 2 or rows.shape[1] != r.width or rows.dtype != r.dtype:
            raise ShapeError(f"{self.name}: rows for {name} must be [n, {r.width}] {r.dtype},"
                             f" got {list(rows.shape)} {rows.dtype}")
        if row < 0 or row + rows.shape[0] > r.rows:
            raise ShapeError(f"{self.name}: rows {row}..{row + rows.shape[0] - 1} are outside the"
                             f" {r.rows} rows of the {name} buffer")
        data = np.ascontiguousarray(rows).reshape(-1).view(np.uint8)
        self.buffers.write_input(r.index, row * r.row_bytes, data)
        return data.nbytes

    def run(self, feeds: dict[str, np.ndarray], group: int) -> list[np.ndarray]:
        """Run shape group `group` feeding every input but the resident ones; outputs in declared order."""
        self._check_holder()
        if not 0 <= group < len(self._inputs):
            raise ShapeError(f"{self.name}: invalid shape group {group} (the graph has {len(self._inputs)})")
        fed = self._fed[group]
        check_feeds(self.name, [p for _, p in fed], feeds, group)
        for i, p in fed:
            self.buffers.write_input(i, 0, np.ascontiguousarray(feeds[p.name]).reshape(-1).view(np.uint8))
        for i, p in self._placeholders[group]:  # the rows it overwrites are rewritten by this call's outputs
            self.buffers.write_input(i, 0, np.zeros(p.nbytes, np.uint8))
        self.buffers.execute(group)
        return [self.buffers.read_output(i, o.nbytes).view(o.dtype).reshape(o.shape) for i, o in self._outs[group]]

    def fed_bytes(self, group: int) -> int:
        """Bytes one call of `group` copies in and out besides the resident rows (for the cost model)."""
        return (sum(p.nbytes for p in self._inputs[group] if p.name not in self.names)
                + self.placeholder_bytes(group) + sum(o.nbytes for o in self._outputs[group]))


def _same_order(name: str, groups: Sequence[Sequence[Port]], what: str) -> dict[str, int]:
    """Buffers are indexed by position, shared by every group: the names must be in one order."""
    order = [p.name for p in groups[0]]
    for k, g in enumerate(groups):
        if [p.name for p in g] != order:
            raise ResidentUnavailable(f"{name}: shape group {k} lists its {what} as {[p.name for p in g]},"
                                      f" group 0 as {order}; one buffer per {what[:-1]} cannot serve both")
    return {n: i for i, n in enumerate(order)}


def _fits(name: str, what: str, size: int, need: int) -> None:
    if size < need:
        raise ResidentUnavailable(f"{name}: the runtime's buffer for {what} holds {size} bytes,"
                                  f" but its largest shape group needs {need}")


class HostBuffers:
    """Buffers in host memory that compute nothing: outputs are zeros (full-size benchmarks)."""

    def __init__(self, inputs: Sequence[Sequence[Port]], outputs: Sequence[Sequence[Port]]):
        self._in = [np.zeros(max(g[i].nbytes for g in inputs), np.uint8) for i in range(len(inputs[0]))]
        self._out = [np.zeros(max(g[i].nbytes for g in outputs), np.uint8) for i in range(len(outputs[0]))]

    def input_size(self, i: int) -> int:
        return self._in[i].size

    def output_size(self, i: int) -> int:
        return self._out[i].size

    def write_input(self, i: int, offset: int, data: np.ndarray) -> None:
        buf = self._in[i]
        if offset < 0 or offset + data.size > buf.size:
            raise ModelError(f"write of {data.size} bytes at {offset} is outside input buffer {i} ({buf.size} bytes)")
        buf[offset:offset + data.size] = data

    def execute(self, group: int) -> None:
        pass

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        return self._out[i][:nbytes].copy()  # the runtime copies outputs out of its buffers too
