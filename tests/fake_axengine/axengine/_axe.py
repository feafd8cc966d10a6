"""AxEngineExecutionProvider: the session on the AX650N itself.

Mirrors upstream axengine/_axe.py and _axe_capi.py (names as upstream spells
them; `_upstream` says which tag): module-level `engine_cffi`, `sys_lib`,
`engine_lib`; the session's `_handle`, `_context`, `_io` (AX_ENGINE_IO_T:
nInputSize, nOutputSize, pInputs[i] / pOutputs[i] with nSize, phyAddr,
pVirAddr), `_shape_count`. One cached CMM buffer per input and output, sized
for the largest shape group (every tag's __init__). `run()` as at every tag
from 0.1.2rc0:

  - each fed array is memmoved into its buffer, then AX_SYS_MflushCache over
    the buffer's whole nSize (not the array's bytes);
  - AX_ENGINE_RunGroupIOSync when the graph has several groups, else
    AX_ENGINE_RunSyncV2 (before 0.1.2rc0: always RunSyncV2, and no shape_group);
  - each output: AX_SYS_MinvalidateCache over its whole nSize, then the group's
    bytes read out, as a view of the buffer before 0.1.3.rc1 and a copy after.

sys_lib has AX_SYS_MinvalidateCache and no AX_SYS_InvalidateCache (the C API
declared in _axe_capi.py at every tag). Upstream casts each array's ctypes
address to `void *`; the fake passes the array itself (cffi accepts both).
"""

from __future__ import annotations

import numpy as np

from . import _upstream
from ._base_session import Session
from ._memory import FFI, Cell, Pointer, Traffic, allocate, block_at

engine_cffi = FFI()


class _SysLib:  # _axe_capi.py: the AX_SYS_* functions pyaxengine declares
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

    def AX_SYS_MinvalidateCache(self, phy: int, vir: Pointer, size: int) -> int:
        block, offset = block_at(phy, size, "AX_SYS_MinvalidateCache")
        assert vir.block is block and vir.offset == offset, "invalidate: virtual and physical addresses disagree"
        block.host[offset:offset + size] = block.device[offset:offset + size]
        block.traffic.invalidated += size
        return 0


class _EngineLib:  # _axe_capi.py: the AX_ENGINE_* functions
    def AX_ENGINE_RunGroupIOSync(self, handle, context, group: int, io: Cell) -> int:
        session = handle.session
        assert context is session._context[0] and io is session._io, "run: handle, context and io of other sessions"
        return session._execute(group, session._input_blocks, session._output_blocks)

    def AX_ENGINE_RunSyncV2(self, handle, context, io: Cell) -> int:
        return self.AX_ENGINE_RunGroupIOSync(handle, context, 0, io)


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
    def __init__(self, path_or_bytes, sess_options=None, provider_options=None, **kwargs):
        super().__init__(path_or_bytes)
        self._handle = engine_cffi.new("uint64_t **", _Handle(self))
        self._context = engine_cffi.new("uint64_t **", object())
        self._io = engine_cffi.new("AX_ENGINE_IO_T *", _Io())
        io = self._io[0]
        io.nInputSize, io.nOutputSize = len(self.get_inputs()), len(self.get_outputs())
        for sizes, buffers in ((self._buffer_sizes(self._inputs), io.pInputs),
                               (self._buffer_sizes(self._outputs), io.pOutputs)):
            for size in sizes:
                phy, vir = engine_cffi.new("AX_U64*"), engine_cffi.new("AX_VOID**")
                sys_lib.AX_SYS_MemAllocCached(phy, vir, size, 128, "PyEngine")
                vir[0].block.traffic = self.traffic  # the fake's counters: bytes moved for this session
                buffers.append(_IoBuffer(phy[0], vir[0], size))
        self._input_blocks = [b.pVirAddr.block for b in io.pInputs]
        self._output_blocks = [b.pVirAddr.block for b in io.pOutputs]

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        self._validate_input(input_feed)
        self._validate_output(output_names)
        if output_names is None:
            output_names = [o.name for o in self.get_outputs(shape_group)]
        if shape_group > self._shape_count - 1 or shape_group < 0:
            raise ValueError(f"Invalid shape group: {shape_group}")
        io = self._io[0]
        for key, npy in input_feed.items():
            for i, one in enumerate(self.get_inputs(shape_group)):
                if one.name == key:
                    self._check_feed(one, key, npy)
                    npy = np.ascontiguousarray(npy)
                    engine_cffi.memmove(io.pInputs[i].pVirAddr, npy, npy.nbytes)
                    sys_lib.AX_SYS_MflushCache(io.pInputs[i].phyAddr, io.pInputs[i].pVirAddr, io.pInputs[i].nSize)
                    break
        if self._shape_count > 1:
            ret = engine_lib.AX_ENGINE_RunGroupIOSync(self._handle[0], self._context[0], shape_group, self._io)
        else:
            ret = engine_lib.AX_ENGINE_RunSyncV2(self._handle[0], self._context[0], self._io)
        if ret != 0:
            raise RuntimeError("Failed to run model.")
        outputs = []
        for i, one in enumerate(self.get_outputs(shape_group)):
            buf = io.pOutputs[i]
            sys_lib.AX_SYS_MinvalidateCache(buf.phyAddr, buf.pVirAddr, buf.nSize)
            npy = np.frombuffer(engine_cffi.buffer(buf.pVirAddr, one.nbytes), dtype=one.dtype).reshape(one.shape)
            if one.name in output_names:
                outputs.append(npy.copy() if _upstream.SOC_COPIES_OUTPUTS else npy)
        return outputs


if not _upstream.SHAPE_GROUPS:  # 0.1.0rc1..0.1.1rc0: run() without shape_group, always RunSyncV2
    _grouped_run = AXEngineSession.run

    def _run_without_groups(self, output_names, input_feed, run_options=None):
        return _grouped_run(self, output_names, input_feed, run_options, 0)

    AXEngineSession.run = _run_without_groups
