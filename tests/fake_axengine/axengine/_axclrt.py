"""AXCLRTExecutionProvider: a session on an M.2 card.

Mirrors upstream axengine/_axclrt.py and _axclrt_capi.py (`_upstream` says
which tag). The card's memory is not mapped into the host: each input and
output has one device buffer (axclrtMalloc'd for the largest shape group and
bound to the `axclrtEngineIO`, which is an opaque `void *`), read back with
`axclrtEngineGetInputBufferByIndex(io, i, void **, uint64_t *)` /
`...GetOutputBufferByIndex`. Copies go through `axclrtMemcpy(dst, src, n,
kind)` with the axclrtMemcpyKind enum: AXCL_MEMCPY_HOST_TO_HOST = 0,
AXCL_MEMCPY_HOST_TO_DEVICE = 1, AXCL_MEMCPY_DEVICE_TO_HOST = 2. Nothing is
flushed.

The card's context is per thread (AXCL runtime): `axclrtSetDevice` gives the
calling thread the device's context; a copy or an execute on a thread with
no current context fails (here with 0x80030001, the fake's code). A session
keeps the opener's context as `_thread_context` (from 0.1.1rc0) and its
`run()` sets it current first (`axclrtSetCurrentContext`), so run() works
from any thread. At 0.1.2rc0 run() reads outputs through
`self._io[0].pOutputs[i]`, which an opaque io has not (AttributeError, as
cffi raises on a `void *`); 0.1.3rc0 copies them out with axclrtMemcpy.
"""

from __future__ import annotations

import threading

import numpy as np

from . import _upstream
from ._base_session import Session
from ._memory import FFI, Cell, FakeMemoryError, Pointer, allocate, as_bytes

axclrt_cffi = FFI()
NO_CONTEXT = 0x80030001  # the fake's return code for a call on a thread without the device's context
context_sets: list[tuple[str, object]] = []  # (thread name, context) of every axclrtSetCurrentContext, for tests


class _Io:  # axclrtEngineIO: opaque (typedef void *) in _axclrt_capi.py; the fake keeps its buffers privately
    __slots__ = ("_session", "_inputs", "_outputs")

    def __init__(self, session):
        self._session, self._inputs, self._outputs = session, [], []


class _Context:
    def __init__(self, device: int):
        self.device = device


class _AxclrtLib:
    AXCL_MEMCPY_HOST_TO_HOST = 0
    AXCL_MEMCPY_HOST_TO_DEVICE = 1
    AXCL_MEMCPY_DEVICE_TO_HOST = 2

    def __init__(self):
        self._current = threading.local()
        self._contexts: dict[int, _Context] = {}

    def axclrtSetDevice(self, device: int) -> int:
        self._current.context = self._contexts.setdefault(device, _Context(device))
        return 0

    def axclrtGetCurrentContext(self, ctx: Cell) -> int:
        ctx[0] = getattr(self._current, "context", None)
        return 0 if ctx[0] is not None else NO_CONTEXT

    def axclrtSetCurrentContext(self, ctx) -> int:
        if not isinstance(ctx, _Context):
            return NO_CONTEXT
        self._current.context = ctx
        context_sets.append((threading.current_thread().name, ctx))
        return 0

    def _on_device(self, device: int) -> bool:
        ctx = getattr(self._current, "context", None)
        return ctx is not None and ctx.device == device

    def _get(self, buffers, index: int, ptr: Cell, size: Cell) -> int:
        if not 0 <= index < len(buffers):
            return 0x80000001
        ptr[0], size[0] = Pointer(buffers[index]), buffers[index].size
        return 0

    def axclrtEngineGetInputBufferByIndex(self, io: _Io, index: int, ptr: Cell, size: Cell) -> int:
        return self._get(io._inputs, index, ptr, size)

    def axclrtEngineGetOutputBufferByIndex(self, io: _Io, index: int, ptr: Cell, size: Cell) -> int:
        return self._get(io._outputs, index, ptr, size)

    def axclrtMemcpy(self, dst: Pointer, src, count: int, kind: int) -> int:
        device_side = dst if kind == self.AXCL_MEMCPY_HOST_TO_DEVICE else src
        if not isinstance(device_side, Pointer) or device_side.block is None or device_side.block.cached:
            raise FakeMemoryError(f"axclrtMemcpy kind {kind}: the device side is not device memory")
        if not self._on_device(int(device_side.block.name.split("-")[0][4:])):
            return NO_CONTEXT
        if kind == self.AXCL_MEMCPY_HOST_TO_DEVICE:
            dst.bytes(count, "axclrtMemcpy host -> device")[:] = as_bytes(src)[:count]
            dst.block.traffic.copied += count
        elif kind == self.AXCL_MEMCPY_DEVICE_TO_HOST:
            dst.bytes(count, "axclrtMemcpy device -> host")[:] = src.bytes(count, "axclrtMemcpy read")
            src.block.traffic.copied_out += count
        else:
            return 0x80000002
        return 0

    def axclrtEngineExecute(self, model_id, context_id, group: int, io: _Io) -> int:
        session = io._session
        assert model_id is session._model_id[0] and context_id is session._context_id[0]
        if not self._on_device(session._device_index):
            return NO_CONTEXT
        return session._execute(group, io._inputs, io._outputs)


axclrt_lib = _AxclrtLib()


class AXCLRTSession(Session):
    def __init__(self, path_or_bytes, sess_options=None, provider_options=None, **kwargs):
        super().__init__(path_or_bytes)
        self._device_index = 0
        if provider_options is not None and "device_id" in provider_options[0]:
            self._device_index = provider_options[0].get("device_id", 0)
        axclrt_lib.axclrtSetDevice(self._device_index)  # the opening thread now has the device's context
        if _upstream.CARD_THREAD_CONTEXT:
            self._thread_context = axclrt_cffi.new("axclrtContext *")
            if axclrt_lib.axclrtGetCurrentContext(self._thread_context) != 0:
                raise RuntimeError("axclrtGetCurrentContext failed")
        self._model_id = axclrt_cffi.new("uint64_t *", object())
        self._context_id = axclrt_cffi.new("uint64_t *", object())
        self._io = axclrt_cffi.new("axclrtEngineIO *", _Io(self))
        io = self._io[0]
        for size in self._buffer_sizes(self._inputs):
            io._inputs.append(allocate(size, self.traffic, cached=False, name=f"card{self._device_index}-{size}"))
        for size in self._buffer_sizes(self._outputs):
            io._outputs.append(allocate(size, self.traffic, cached=False, name=f"card{self._device_index}-{size}"))

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        self._validate_input(input_feed)
        self._validate_output(output_names)
        if _upstream.CARD_THREAD_CONTEXT and axclrt_lib.axclrtSetCurrentContext(self._thread_context[0]) != 0:
            raise RuntimeError("axclrtSetCurrentContext failed")
        if output_names is None:
            output_names = [o.name for o in self.get_outputs(shape_group)]
        if shape_group > self._shape_count - 1 or shape_group < 0:
            raise ValueError(f"Invalid shape group: {shape_group}")
        dev, size = axclrt_cffi.new("void **"), axclrt_cffi.new("uint64_t *")
        for key, npy in input_feed.items():
            for i, one in enumerate(self.get_inputs(shape_group)):
                if one.name == key:
                    self._check_feed(one, key, npy)
                    npy = np.ascontiguousarray(npy)
                    if axclrt_lib.axclrtEngineGetInputBufferByIndex(self._io[0], i, dev, size) != 0:
                        raise RuntimeError(f"axclrtEngineGetInputBufferByIndex failed for input {i}.")
                    if axclrt_lib.axclrtMemcpy(dev[0], npy, npy.nbytes, axclrt_lib.AXCL_MEMCPY_HOST_TO_DEVICE) != 0:
                        raise RuntimeError(f"axclrtMemcpy failed for input {i}.")
        ret = axclrt_lib.axclrtEngineExecute(self._model_id[0], self._context_id[0], shape_group, self._io[0])
        if ret != 0:
            raise RuntimeError(f"axclrtEngineExecute failed 0x{ret:08x}")
        outputs = []
        for i, one in enumerate(self.get_outputs(shape_group)):
            if axclrt_lib.axclrtEngineGetOutputBufferByIndex(self._io[0], i, dev, size) != 0:
                raise RuntimeError(f"axclrtEngineGetOutputBufferByIndex failed for output {i}.")
            if not _upstream.CARD_COPIES_OUTPUTS:  # 0.1.2rc0 reads a field the opaque io has not
                self._io[0].pOutputs[i].pVirAddr  # noqa: B018 -- AttributeError, as cffi raises on a void *
            npy = np.zeros(one.shape, one.dtype)
            if axclrt_lib.axclrtMemcpy(axclrt_cffi.from_buffer(npy), dev[0], one.nbytes,
                                       axclrt_lib.AXCL_MEMCPY_DEVICE_TO_HOST) != 0:
                raise RuntimeError(f"axclrtMemcpy failed for output {i}.")
            if one.name in output_names:
                outputs.append(npy)
        return outputs


if not _upstream.SHAPE_GROUPS:
    _grouped_run = AXCLRTSession.run

    def _run_without_groups(self, output_names, input_feed, run_options=None):
        return _grouped_run(self, output_names, input_feed, run_options, 0)

    AXCLRTSession.run = _run_without_groups
