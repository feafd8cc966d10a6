"""AXCLRTExecutionProvider: a session on an M.2 card (mirrors pyaxengine's axengine/_axclrt.py).

The card's memory is not mapped into the host: inputs reach it by host ->
device copies (`axclrt_lib.axclrtMemcpy`) into the device buffer that
`axclrtEngineGetInputBufferByIndex(io, i, ...)` names, one per input, sized
for the largest shape group; outputs come back by device -> host copies.
Names and layout as daemon/engine/axinternals.py relies on them.
"""

from __future__ import annotations

import numpy as np

from ._base_session import Session
from ._memory import FFI, Cell, FakeMemoryError, Pointer, allocate, as_bytes

axclrt_cffi = FFI()


class _Io:  # axclrtEngineIO: the device buffers bound to a model's inputs and outputs
    def __init__(self, session):
        self.session, self.inputs, self.outputs = session, [], []


class _AxclrtLib:
    AXCLRT_MEMCPY_HOST_TO_DEVICE = 1
    AXCLRT_MEMCPY_DEVICE_TO_HOST = 2

    def _get(self, buffers, index: int, ptr: Cell, size: Cell) -> int:
        if not 0 <= index < len(buffers):
            return 0x80000001
        ptr[0], size[0] = Pointer(buffers[index]), buffers[index].size
        return 0

    def axclrtEngineGetInputBufferByIndex(self, io: _Io, index: int, ptr: Cell, size: Cell) -> int:
        return self._get(io.inputs, index, ptr, size)

    def axclrtEngineGetOutputBufferByIndex(self, io: _Io, index: int, ptr: Cell, size: Cell) -> int:
        return self._get(io.outputs, index, ptr, size)

    def axclrtMemcpy(self, dst: Pointer, src, count: int, kind: int) -> int:
        if kind == self.AXCLRT_MEMCPY_HOST_TO_DEVICE:
            if dst.block is None or dst.block.cached:
                raise FakeMemoryError("axclrtMemcpy host -> device: the destination is not device memory")
            dst.bytes(count, "axclrtMemcpy host -> device")[:] = as_bytes(src)[:count]
            dst.block.traffic.copied += count
        elif kind == self.AXCLRT_MEMCPY_DEVICE_TO_HOST:
            if not isinstance(src, Pointer) or src.block is None:
                raise FakeMemoryError("axclrtMemcpy device -> host: the source is not device memory")
            dst.bytes(count, "axclrtMemcpy device -> host")[:] = src.bytes(count, "axclrtMemcpy read")
            src.block.traffic.copied_out += count
        else:
            return 0x80000002
        return 0

    def axclrtEngineExecute(self, model_id, context_id, group: int, io: _Io) -> int:
        session = io.session
        assert model_id is session._model_id[0] and context_id is session._context_id[0]
        return session._execute(group, io.inputs, io.outputs)


axclrt_lib = _AxclrtLib()


class AXCLRTSession(Session):
    def __init__(self, path: str, device_id: int = 0):
        super().__init__(path)
        self.device_id = device_id
        self._model_id = axclrt_cffi.new("uint64_t *", object())
        self._context_id = axclrt_cffi.new("uint64_t *", object())
        self._io = axclrt_cffi.new("axclrtEngineIO *", _Io(self))
        io = self._io[0]
        for size in self._buffer_sizes(self._graph.inputs):
            io.inputs.append(allocate(size, self.traffic, cached=False, name=f"card{device_id}-{size}"))
        for size in self._buffer_sizes(self._graph.outputs):
            io.outputs.append(allocate(size, self.traffic, cached=False, name=f"card{device_id}-{size}"))

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        self._validate(output_names, input_feed, shape_group)
        for i, one in enumerate(self.get_inputs(shape_group)):  # every fed array: host -> device
            npy = input_feed[one.name]
            dev, size = axclrt_cffi.new("void **"), axclrt_cffi.new("uint64_t *")
            axclrt_lib.axclrtEngineGetInputBufferByIndex(self._io[0], i, dev, size)
            axclrt_lib.axclrtMemcpy(dev[0], axclrt_cffi.from_buffer(npy), npy.nbytes,
                                    axclrt_lib.AXCLRT_MEMCPY_HOST_TO_DEVICE)
        ret = axclrt_lib.axclrtEngineExecute(self._model_id[0], self._context_id[0], shape_group, self._io[0])
        if ret != 0:
            raise RuntimeError(f"fake axengine: axclrtEngineExecute failed 0x{ret:x}")
        outputs = []
        for i, one in enumerate(self.get_outputs(shape_group)):
            dev, size = axclrt_cffi.new("void **"), axclrt_cffi.new("uint64_t *")
            axclrt_lib.axclrtEngineGetOutputBufferByIndex(self._io[0], i, dev, size)
            npy = np.empty(one.nbytes, np.uint8)
            axclrt_lib.axclrtMemcpy(axclrt_cffi.from_buffer(npy), dev[0], one.nbytes,
                                    axclrt_lib.AXCLRT_MEMCPY_DEVICE_TO_HOST)
            outputs.append(npy.view(one.dtype).reshape(one.shape))
        return outputs
