"""pyaxengine's session buffers, reached through its internals (for resident KV).

pyaxengine has no public way to write part of an input buffer or to run a
shape group without feeding every input. What follows relies on its internal
structure as read in its source (AXERA-TECH/pyaxengine, axengine/_axe.py,
_axe_capi.py, _axclrt.py, _axclrt_capi.py, _session.py) at every tag from
0.1.2rc0 to 0.1.3.rc3 and the frigate branch (0.1.3-frigate), which agree on
all of it. All of it is checked when a model loads (`open_buffers`): the
installed version (package metadata: pyaxengine has no `__version__`, and
"0.1.3" names five builds), then every attribute and buffer size; if
anything differs, the LLM feeds whole caches through `run()` instead and says
so in one log line.

Relied on:

    importlib.metadata.version("axengine") in KNOWN_PYAXENGINE (setup.py's version)
    axengine.InferenceSession._sess                      the provider's own session object

    AxEngineExecutionProvider (the AX650N itself), module axengine._axe:
      AXEngineSession._io[0].nInputSize, .nOutputSize, ._shape_count
      AXEngineSession._io[0].pInputs[i], .pOutputs[i]:  .nSize .phyAddr .pVirAddr  (one CMM buffer each,
                                                          sized for the largest shape group)
      AXEngineSession._handle[0], ._context[0]
      engine_cffi.cast, engine_cffi.memmove, engine_cffi.buffer
      sys_lib.AX_SYS_MflushCache(phy, vir, n)            CPU cache -> memory, before the NPU reads it
      sys_lib.AX_SYS_MinvalidateCache(phy, vir, n)       before the CPU reads what the NPU wrote
      engine_lib.AX_ENGINE_RunGroupIOSync(handle, context, group, io)   graphs with several groups
      engine_lib.AX_ENGINE_RunSyncV2(handle, context, io)               one-group graphs (as run() does)

    AXCLRTExecutionProvider (M.2 card), module axengine._axclrt:
      AXCLRTSession._io[0], ._model_id[0], ._context_id[0], ._thread_context[0], ._shape_count
      axclrt_cffi.new, axclrt_cffi.cast, axclrt_cffi.from_buffer
      axclrt_lib.axclrtSetCurrentContext(context)       the card's context is per thread: set on the
                                                          running thread before every copy and execute
      axclrt_lib.axclrtEngineGetInputBufferByIndex(io, i, void **, uint64_t *), ...GetOutputBufferByIndex
      axclrt_lib.axclrtMemcpy(dst, src, n, kind), AXCL_MEMCPY_HOST_TO_DEVICE (1), AXCL_MEMCPY_DEVICE_TO_HOST (2)
      axclrt_lib.axclrtEngineExecute(model_id, context_id, group, io)

tests/fake_axengine is written from upstream's source, tag by tag where it differs.
"""

from __future__ import annotations

import importlib
import inspect
import re
from importlib import metadata

import numpy as np

from daemon.engine.resident import Buffers, ResidentUnavailable
from daemon.errors import ModelError

# pyaxengine releases (package metadata) whose internals match the list above. Another version
# falls back to copying (model.kv: auto) unless model.kv is "resident".
KNOWN_PYAXENGINE = ("0.1.2", "0.1.3")
MINIMUM_PYAXENGINE = (0, 1, 2)  # the first release whose run() takes shape_group=
MINIMUM_CARD = (0, 1, 3)  # 0.1.2's AXCLRTSession.run() reads outputs through self._io[0].pOutputs: AttributeError


def pyaxengine_version() -> str | None:
    """The installed axengine distribution's version (setup.py's), or None when it is not installed as one."""
    try:
        return metadata.version("axengine")
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...] | None:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(x) for x in m.groups()) if m else None


def check_runtime(axengine, card: bool = False) -> str | None:
    """ModelError unless this pyaxengine can run the model's shape groups; returns its version.

    0.1.2 is the first release whose run() takes shape_group=; on the M.2 card 0.1.3, since 0.1.2's
    card run() reads outputs through a field the card's io has not (fixed in 0.1.3rc0). Judged from
    the metadata version and from `InferenceSession.run`'s signature, so that a source checkout without
    metadata is judged by what it can do."""
    version = pyaxengine_version()
    release = _release(version) if version else None
    try:
        takes_groups = "shape_group" in inspect.signature(axengine.InferenceSession.run).parameters
    except (TypeError, ValueError, AttributeError):
        takes_groups = True  # cannot tell: the version decides
    need = MINIMUM_CARD if card else MINIMUM_PYAXENGINE
    if (release is not None and release < need) or not takes_groups:
        why = ("its M.2 card provider cannot return a graph's outputs (fixed in 0.1.3rc0)" if takes_groups
               else "the model's graphs have shape groups, which its run() cannot select")
        raise ModelError(f"pyaxengine {version or '(version unknown)'} is installed, but vlmwatch needs"
                         f" {'.'.join(map(str, need))} or newer{' on the M.2 card' if card else ''}: {why}."
                         " Install a newer wheel from AXERA-TECH/pyaxengine releases"
                         " (pip install axengine-0.1.3-py3-none-any.whl)")
    return version


def open_buffers(axengine, session, card: bool, n_inputs: int, n_outputs: int, pinned: bool) -> Buffers:
    """The raw buffers of one pyaxengine `InferenceSession`, or ResidentUnavailable saying what differs."""
    version = pyaxengine_version()
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
            "sys_lib": ("AX_SYS_MflushCache", "AX_SYS_MinvalidateCache"),
            "engine_lib": ("AX_ENGINE_RunGroupIOSync", "AX_ENGINE_RunSyncV2")})
        where = type(inner).__name__
        self.groups = int(_need(inner, "_shape_count", where))
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
        if self.groups > 1:  # as pyaxengine's run() chooses
            call, ret = "AX_ENGINE_RunGroupIOSync", self.engine_lib.AX_ENGINE_RunGroupIOSync(
                self.handle, self.context, group, self.io)
        else:
            call, ret = "AX_ENGINE_RunSyncV2", self.engine_lib.AX_ENGINE_RunSyncV2(self.handle, self.context, self.io)
        if ret != 0:
            raise ModelError(f"the NPU runtime failed to run shape group {group} with resident KV"
                             f" ({call} returned 0x{ret & 0xFFFFFFFF:x});"
                             " set model.kv: copied (--kv copied) and report it")

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        b = self.outputs[i]
        self.sys_lib.AX_SYS_MinvalidateCache(b.phyAddr, b.pVirAddr, nbytes)
        return np.frombuffer(self.ffi.buffer(b.pVirAddr, nbytes), np.uint8).copy()


class _CardBuffers:
    """AXCLRTExecutionProvider: device memory on the card, written by host -> device copies."""

    def __init__(self, inner, n_inputs: int, n_outputs: int):
        self.ffi, self.lib = _module("axengine._axclrt", {
            "axclrt_cffi": ("new", "cast", "from_buffer"),
            "axclrt_lib": ("axclrtEngineGetInputBufferByIndex", "axclrtEngineGetOutputBufferByIndex",
                           "axclrtMemcpy", "axclrtEngineExecute", "axclrtSetCurrentContext",
                           "AXCL_MEMCPY_HOST_TO_DEVICE", "AXCL_MEMCPY_DEVICE_TO_HOST")})
        where = type(inner).__name__
        _need(inner, "_shape_count", where)
        self.thread_context = _need(inner, "_thread_context", where)[0]
        self.io = _need(inner, "_io", where)[0]
        self.model_id = _need(inner, "_model_id", where)[0]
        self.context_id = _need(inner, "_context_id", where)[0]
        self._enter()
        self.inputs = [self._buffer(self.lib.axclrtEngineGetInputBufferByIndex, i) for i in range(n_inputs)]
        self.outputs = [self._buffer(self.lib.axclrtEngineGetOutputBufferByIndex, i) for i in range(n_outputs)]

    def _enter(self) -> None:
        """Make the session's card context current on this thread (the NPU worker is not the opener)."""
        ret = self.lib.axclrtSetCurrentContext(self.thread_context)
        if ret != 0:
            raise ModelError(f"cannot select the M.2 card's context on this thread (axclrtSetCurrentContext"
                             f" returned 0x{ret & 0xFFFFFFFF:x}); set model.kv: copied (--kv copied) and report it")

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
        self._enter()
        dev = self.ffi.cast("char *", self.inputs[i][0]) + offset
        self._copy(dev, self.ffi.from_buffer(data), data.nbytes, self.lib.AXCL_MEMCPY_HOST_TO_DEVICE)

    def execute(self, group: int) -> None:
        self._enter()
        ret = self.lib.axclrtEngineExecute(self.model_id, self.context_id, group, self.io)
        if ret != 0:
            raise ModelError(f"the M.2 card failed to run shape group {group} with resident KV"
                             f" (axclrtEngineExecute returned 0x{ret & 0xFFFFFFFF:x});"
                             " set model.kv: copied (--kv copied) and report it")

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        self._enter()
        out = np.empty(nbytes, np.uint8)
        self._copy(self.ffi.from_buffer(out), self.outputs[i][0], nbytes, self.lib.AXCL_MEMCPY_DEVICE_TO_HOST)
        return out
