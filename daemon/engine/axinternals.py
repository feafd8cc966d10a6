"""pyaxengine's session buffers, reached through its internals (for resident KV).

pyaxengine has no public way to write part of an input buffer or to run a
shape group without feeding every input. What follows relies on its internal
structure as the author of issue 15 read it in the vendor's source
(AXERA-TECH/pyaxengine, axengine/_axe.py and _axclrt.py); it has not been run
on a board from here. All of it is checked when a model loads
(`open_buffers`); if anything differs, the LLM feeds whole caches through
`run()` instead and says so in one log line.

Relied on:

    axengine.__version__ (else the installed distribution's version)
    axengine.InferenceSession._sess                      the provider's own session object

    AxEngineExecutionProvider (the AX650N itself), module axengine._axe:
      AXEngineSession._io[0].nInputSize, .nOutputSize
      AXEngineSession._io[0].pInputs[i], .pOutputs[i]:  .nSize .phyAddr .pVirAddr  (one CMM buffer each,
                                                          sized for the largest shape group)
      AXEngineSession._handle[0], ._context[0]
      engine_cffi.cast, engine_cffi.memmove, engine_cffi.buffer
      sys_lib.AX_SYS_MflushCache(phy, vir, n)            CPU cache -> memory, before the NPU reads it
      sys_lib.AX_SYS_InvalidateCache(phy, vir, n)        before the CPU reads what the NPU wrote
      engine_lib.AX_ENGINE_RunGroupIOSync(handle, context, group, io)

    AXCLRTExecutionProvider (M.2 card), module axengine._axclrt:
      AXCLRTSession._io[0], ._model_id[0], ._context_id[0]
      axclrt_cffi.new, axclrt_cffi.cast, axclrt_cffi.from_buffer
      axclrt_lib.axclrtEngineGetInputBufferByIndex(io, i, void **, uint64_t *), ...GetOutputBufferByIndex
      axclrt_lib.axclrtMemcpy(dst, src, n, kind), AXCLRT_MEMCPY_HOST_TO_DEVICE, AXCLRT_MEMCPY_DEVICE_TO_HOST
      axclrt_lib.axclrtEngineExecute(model_id, context_id, group, io)

tests/fake_axengine mirrors exactly these names and the buffer layout.
"""

from __future__ import annotations

import importlib
from importlib import metadata

import numpy as np

from daemon.engine.resident import Buffers, ResidentUnavailable
from daemon.errors import ModelError

# pyaxengine releases whose internals match the list above. Another version
# falls back to copying (model.kv: auto) unless model.kv is "resident".
KNOWN_PYAXENGINE = ("0.1.3",)


def pyaxengine_version(axengine) -> str | None:
    version = getattr(axengine, "__version__", None)
    if version:
        return str(version)
    try:
        return metadata.version("axengine")
    except metadata.PackageNotFoundError:
        return None


def open_buffers(axengine, session, card: bool, n_inputs: int, n_outputs: int, pinned: bool) -> Buffers:
    """The raw buffers of one pyaxengine `InferenceSession`, or ResidentUnavailable saying what differs."""
    version = pyaxengine_version(axengine)
    if pinned and version not in KNOWN_PYAXENGINE:
        raise ResidentUnavailable(f"pyaxengine {version or '(version unknown)'} is not a version whose internals"
                                  f" vlmwatch was written against ({', '.join(KNOWN_PYAXENGINE)})")
    try:
        inner = _need(session, "_sess", "axengine.InferenceSession")
        return (_CardBuffers if card else _SocBuffers)(inner, n_inputs, n_outputs)
    except ResidentUnavailable:
        raise
    except Exception as exc:  # cffi and the runtime raise their own types
        raise ResidentUnavailable(f"pyaxengine's session internals differ ({type(exc).__name__}: {exc})") from None


def _need(obj, name: str, where: str):
    if not hasattr(obj, name):
        raise ResidentUnavailable(f"{where} has no attribute {name!r}")
    return getattr(obj, name)


def _module(name: str, attrs: dict[str, tuple[str, ...]]) -> list:
    """Import `name` and return its objects `attrs` names, after checking each has the listed members."""
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        raise ResidentUnavailable(f"cannot import {name} ({exc})") from None
    found = []
    for attr, members in attrs.items():
        obj = _need(mod, attr, name)
        for m in members:
            _need(obj, m, f"{name}.{attr}")
        found.append(obj)
    return found


def _count(where: str, what: str, have: int, want: int) -> None:
    if int(have) != want:
        raise ResidentUnavailable(f"{where} has {int(have)} {what} buffers; the graph declares {want}")


class _SocBuffers:
    """AxEngineExecutionProvider: CMM buffers the CPU writes through its cache, then flushes."""

    def __init__(self, inner, n_inputs: int, n_outputs: int):
        self.ffi, self.sys_lib, self.engine_lib = _module("axengine._axe", {
            "engine_cffi": ("cast", "memmove", "buffer"),
            "sys_lib": ("AX_SYS_MflushCache", "AX_SYS_InvalidateCache"),
            "engine_lib": ("AX_ENGINE_RunGroupIOSync",)})
        where = type(inner).__name__
        self.io = _need(inner, "_io", where)
        self.handle = _need(inner, "_handle", where)[0]
        self.context = _need(inner, "_context", where)[0]
        io = self.io[0]
        _count(where, "input", io.nInputSize, n_inputs)
        _count(where, "output", io.nOutputSize, n_outputs)
        self.inputs = [io.pInputs[i] for i in range(n_inputs)]
        self.outputs = [io.pOutputs[i] for i in range(n_outputs)]
        for b in self.inputs + self.outputs:
            (b.nSize, b.phyAddr, b.pVirAddr)  # noqa: B018 -- each must exist: AttributeError is a mismatch

    def input_size(self, i: int) -> int:
        return int(self.inputs[i].nSize)

    def output_size(self, i: int) -> int:
        return int(self.outputs[i].nSize)

    def write_input(self, i: int, offset: int, data: np.ndarray) -> None:
        b = self.inputs[i]
        vir = self.ffi.cast("char *", b.pVirAddr) + offset
        self.ffi.memmove(vir, data, data.nbytes)
        self.sys_lib.AX_SYS_MflushCache(b.phyAddr + offset, vir, data.nbytes)

    def execute(self, group: int) -> None:
        ret = self.engine_lib.AX_ENGINE_RunGroupIOSync(self.handle, self.context, group, self.io)
        if ret != 0:
            raise ModelError(f"the NPU runtime failed to run shape group {group} with resident KV"
                             f" (AX_ENGINE_RunGroupIOSync returned 0x{ret & 0xFFFFFFFF:x});"
                             " set model.kv: copied (--kv copied) and report it")

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        b = self.outputs[i]
        self.sys_lib.AX_SYS_InvalidateCache(b.phyAddr, b.pVirAddr, nbytes)
        return np.frombuffer(self.ffi.buffer(b.pVirAddr, nbytes), np.uint8).copy()


class _CardBuffers:
    """AXCLRTExecutionProvider: device memory on the card, written by host -> device copies."""

    def __init__(self, inner, n_inputs: int, n_outputs: int):
        self.ffi, self.lib = _module("axengine._axclrt", {
            "axclrt_cffi": ("new", "cast", "from_buffer"),
            "axclrt_lib": ("axclrtEngineGetInputBufferByIndex", "axclrtEngineGetOutputBufferByIndex",
                           "axclrtMemcpy", "axclrtEngineExecute",
                           "AXCLRT_MEMCPY_HOST_TO_DEVICE", "AXCLRT_MEMCPY_DEVICE_TO_HOST")})
        where = type(inner).__name__
        self.io = _need(inner, "_io", where)[0]
        self.model_id = _need(inner, "_model_id", where)[0]
        self.context_id = _need(inner, "_context_id", where)[0]
        self.inputs = [self._buffer(self.lib.axclrtEngineGetInputBufferByIndex, i) for i in range(n_inputs)]
        self.outputs = [self._buffer(self.lib.axclrtEngineGetOutputBufferByIndex, i) for i in range(n_outputs)]

    def _buffer(self, getter, i: int) -> tuple[object, int]:
        ptr, size = self.ffi.new("void **"), self.ffi.new("uint64_t *")
        ret = getter(self.io, i, ptr, size)
        if ret != 0:
            raise ResidentUnavailable(f"{getter.__name__}({i}) returned 0x{ret & 0xFFFFFFFF:x}")
        return ptr[0], int(size[0])

    def input_size(self, i: int) -> int:
        return self.inputs[i][1]

    def output_size(self, i: int) -> int:
        return self.outputs[i][1]

    def _copy(self, dst, src, n: int, kind) -> None:
        ret = self.lib.axclrtMemcpy(dst, src, n, kind)
        if ret != 0:
            raise ModelError(f"copying {n} bytes to or from the M.2 card failed (axclrtMemcpy returned"
                             f" 0x{ret & 0xFFFFFFFF:x}); set model.kv: copied (--kv copied) and report it")

    def write_input(self, i: int, offset: int, data: np.ndarray) -> None:
        dev = self.ffi.cast("char *", self.inputs[i][0]) + offset
        self._copy(dev, self.ffi.from_buffer(data), data.nbytes, self.lib.AXCLRT_MEMCPY_HOST_TO_DEVICE)

    def execute(self, group: int) -> None:
        ret = self.lib.axclrtEngineExecute(self.model_id, self.context_id, group, self.io)
        if ret != 0:
            raise ModelError(f"the M.2 card failed to run shape group {group} with resident KV"
                             f" (axclrtEngineExecute returned 0x{ret & 0xFFFFFFFF:x});"
                             " set model.kv: copied (--kv copied) and report it")

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        out = np.empty(nbytes, np.uint8)
        self._copy(self.ffi.from_buffer(out), self.outputs[i][0], nbytes, self.lib.AXCLRT_MEMCPY_DEVICE_TO_HOST)
        return out
