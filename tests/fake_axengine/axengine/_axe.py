"""AxEngineExecutionProvider: the session on the AX650N itself (mirrors pyaxengine's axengine/_axe.py).

Module-level `engine_cffi`, `sys_lib`, `engine_lib` and the session's `_io`,
`_handle`, `_context`, `_shape_count` have the names and layout vlmwatch's
resident KV relies on (daemon/engine/axinternals.py): one CMM buffer per
input and output (`_io[0].pInputs[i]`: nSize, phyAddr, pVirAddr), sized for
the largest shape group. `run()` does what pyaxengine's does: memmove every
fed array into its buffer, flush the cache over it, run the group,
invalidate and copy every output back.
"""

from __future__ import annotations

import numpy as np

from ._base_session import Session
from ._memory import FFI, Cell, Pointer, Traffic, allocate, block_at

engine_cffi = FFI()


class _SysLib:
    def AX_SYS_MemAllocCached(self, phy: Cell, vir: Cell, size: int, align: int, token) -> int:
        block = allocate(size, Traffic(), cached=True, name=f"{token}-{size}")
        phy[0], vir[0] = block.phys, Pointer(block)
        return 0

    def AX_SYS_MflushCache(self, phy: int, vir: Pointer, size: int) -> int:
        block, offset = block_at(phy, size, "AX_SYS_MflushCache")
        assert vir.block is block and vir.offset == offset, "flush: virtual and physical addresses disagree"
        block.flush(offset, offset + size)
        block.traffic.flushed += size
        return 0

    def AX_SYS_InvalidateCache(self, phy: int, vir: Pointer, size: int) -> int:
        block, offset = block_at(phy, size, "AX_SYS_InvalidateCache")
        assert vir.block is block and vir.offset == offset, "invalidate: virtual and physical addresses disagree"
        block.host[offset:offset + size] = block.device[offset:offset + size]
        block.traffic.copied_out += size  # invalidated to be read back: what the CPU then copies out
        return 0


class _EngineLib:
    def AX_ENGINE_RunGroupIOSync(self, handle, context, group: int, io: Cell) -> int:
        session = handle.session
        assert context is session._context[0] and io is session._io, "run: handle, context and io of other sessions"
        return session._execute(group, session._input_blocks, session._output_blocks)


sys_lib, engine_lib = _SysLib(), _EngineLib()


class _IoBuffer:  # AX_ENGINE_IO_BUFFER_T
    def __init__(self, phy: int, vir: Pointer, size: int):
        self.phyAddr, self.pVirAddr, self.nSize = phy, vir, size


class _Io:  # AX_ENGINE_IO_T
    def __init__(self):
        self.pInputs, self.pOutputs = [], []
        self.nInputSize = self.nOutputSize = 0


class _Handle:
    def __init__(self, session):
        self.session = session


class AXEngineSession(Session):
    def __init__(self, path: str):
        super().__init__(path)
        self._handle = engine_cffi.new("uint64_t **", _Handle(self))
        self._context = engine_cffi.new("uint64_t **", object())
        self._io = engine_cffi.new("AX_ENGINE_IO_T *", _Io())
        io = self._io[0]
        for sizes, buffers in ((self._buffer_sizes(self._graph.inputs), io.pInputs),
                               (self._buffer_sizes(self._graph.outputs), io.pOutputs)):
            for size in sizes:
                phy, vir = engine_cffi.new("AX_U64 *"), engine_cffi.new("AX_VOID **")
                sys_lib.AX_SYS_MemAllocCached(phy, vir, size, 128, self.name)
                vir[0].block.traffic = self.traffic  # the fake's counters: bytes moved for this session
                buffers.append(_IoBuffer(phy[0], vir[0], size))
        io.nInputSize, io.nOutputSize = len(io.pInputs), len(io.pOutputs)
        self._input_blocks = [b.pVirAddr.block for b in io.pInputs]
        self._output_blocks = [b.pVirAddr.block for b in io.pOutputs]

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        self._validate(output_names, input_feed, shape_group)
        io = self._io[0]
        for i, one in enumerate(self.get_inputs(shape_group)):  # every fed array: copy, then flush over it
            npy = input_feed[one.name]
            engine_cffi.memmove(io.pInputs[i].pVirAddr, npy, npy.nbytes)
            sys_lib.AX_SYS_MflushCache(io.pInputs[i].phyAddr, io.pInputs[i].pVirAddr, npy.nbytes)
        ret = engine_lib.AX_ENGINE_RunGroupIOSync(self._handle[0], self._context[0], shape_group, self._io)
        if ret != 0:
            raise RuntimeError(f"fake axengine: AX_ENGINE_RunGroupIOSync failed 0x{ret:x}")
        outputs = []
        for i, one in enumerate(self.get_outputs(shape_group)):
            buf = io.pOutputs[i]
            sys_lib.AX_SYS_InvalidateCache(buf.phyAddr, buf.pVirAddr, one.nbytes)
            npy = np.frombuffer(engine_cffi.buffer(buf.pVirAddr, one.nbytes), np.uint8).view(one.dtype)
            outputs.append(npy.reshape(one.shape).copy())
        return outputs
