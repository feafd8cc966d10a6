"""What both providers' sessions share: declared groups, pyaxengine's checks, running the graph.

The graph reads each input from the *device* view of its buffer (the first
bytes of the group's shape, so row r of K_cache is at r x row bytes in every
group) and writes its outputs to the device view of the output buffers.
"""

from __future__ import annotations

import numpy as np

from ._graphs import Graph
from ._memory import Block, FakeMemoryError, Traffic

calls: list[tuple[str, int]] = []  # (file name, shape group) of every graph run, for the tests
# (file name, shape group, Traffic moved for it): bytes copied in and flushed since the session's previous run
# (a resident row written after a run counts towards the next), copied out after the previous run
traffic_log: list[tuple[str, int, Traffic]] = []


class Session:
    def __init__(self, path: str):
        self._graph = Graph(path)
        self.name = self._graph.name
        self._shape_count = len(self._graph.inputs)
        self.traffic = Traffic()
        self._logged = Traffic()

    def get_inputs(self, shape_group: int = 0):
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._graph.inputs[shape_group]  # IndexError at == count, as the real one

    def get_outputs(self, shape_group: int = 0):
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._graph.outputs[shape_group]

    def _buffer_sizes(self, declared) -> list[int]:
        """One buffer per input (or output), sized for the largest shape group, shared by all groups."""
        return [max(g[i].nbytes for g in declared) for i in range(len(declared[0]))]

    def _validate(self, output_names, input_feed, shape_group: int) -> None:
        if output_names is not None:
            raise ValueError("fake axengine: pass output_names=None (a subset fails on the board)")
        if not 0 <= shape_group < self._shape_count:
            raise ValueError(f"Invalid shape group: {shape_group}")
        declared = self._graph.inputs[shape_group]
        missing = [a.name for a in declared if a.name not in input_feed]
        if missing:
            raise ValueError(f"Required inputs ({missing}) are missing from input feed.")
        for a in declared:
            npy = input_feed[a.name]
            assert list(a.shape) == list(npy.shape) and a.dtype == npy.dtype, (
                f"model inputs({a.name}) expect shape {a.shape} and dtype {a.dtype}, "
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
