"""What both providers' sessions share (upstream axengine/_base_session.py, the same at every tag
0.1.0rc1..0.1.3.rc3), plus the fake NPU that runs a group over the buffers.

Upstream's checks kept as they are: `_validate_input` compares the feed with
shape group 0's input names; `get_inputs(k)` raises ValueError past the
count and IndexError at it (its test is `> _shape_count`). The graph reads
each input from the *device* view of its buffer (the first bytes of the
group's shape, so row r of K_cache is at r x row bytes in every group) and
writes its outputs to the device view of the output buffers.
"""

from __future__ import annotations

import numpy as np

from ._graphs import Graph
from ._memory import Block, FakeMemoryError, Traffic

calls: list[tuple[str, int]] = []  # (file name, shape group) of every graph run, for the tests
# (file name, shape group, Traffic moved for it): bytes copied in and flushed since the session's previous run
# (a resident row written after a run counts towards the next), copied out after the previous run
traffic_log: list[tuple[str, int, Traffic]] = []


class SessionOptions:
    pass


class Session:
    def __init__(self, path: str):
        self._graph = Graph(path)
        self.name = self._graph.name
        self._shape_count = len(self._graph.inputs)
        self._inputs, self._outputs = self._graph.inputs, self._graph.outputs
        self.traffic = Traffic()  # the fake's own counters (pyaxengine has none)
        self._logged = Traffic()

    def _validate_input(self, feed: dict) -> None:
        missing = [i.name for i in self.get_inputs() if i.name not in feed]
        if missing:
            raise ValueError(f"Required inputs ({missing}) are missing from input feed ({list(feed)}).")

    def _validate_output(self, output_names) -> None:
        if output_names is not None:
            for name in output_names:
                if name not in [o.name for o in self.get_outputs()]:
                    raise ValueError(f"Output name '{name}' is not in model outputs name list.")

    def get_inputs(self, shape_group: int = 0):
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._inputs[shape_group]

    def get_outputs(self, shape_group: int = 0):
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._outputs[shape_group]

    def _buffer_sizes(self, declared) -> list[int]:
        """One buffer per input (or output), sized for the largest shape group, shared by all groups."""
        return [max(g[i].nbytes for g in declared) for i in range(len(declared[0]))]

    @staticmethod
    def _check_feed(one, key, npy) -> None:  # the assert in upstream run(), message as upstream words it
        assert list(one.shape) == list(npy.shape) and one.dtype == npy.dtype, (
            f"model inputs({key}) expect shape {one.shape} and dtype {one.dtype}, "
            f"however gets input with shape {npy.shape} and dtype {npy.dtype}")

    def _execute(self, group: int, inputs: list[Block], outputs: list[Block]) -> int:
        """The NPU runs shape group `group` over the buffers: read inputs, compute, write outputs."""
        if not 0 <= group < self._shape_count:
            return -1
        feeds = {}
        for a, block in zip(self._graph.inputs[group], inputs):
            if block.dirty:
                raise FakeMemoryError(f"{self.name}: input {a.name} has bytes {block.dirty[:3]} written but not"
                                      " flushed; the NPU would read stale memory")
            feeds[a.name] = block.device[:a.nbytes].view(a.dtype).reshape(a.shape).copy()
        for o, block, value in zip(self._graph.outputs[group], outputs, self._graph.compute(group, feeds)):
            block.check(0, o.nbytes, f"output {o.name}")
            block.device[:o.nbytes] = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        calls.append((self.name, group))
        self.traffic.runs += 1
        traffic_log.append((self.name, group, self.traffic.since(self._logged)))
        self._logged = self.traffic.snapshot()
        return 0
