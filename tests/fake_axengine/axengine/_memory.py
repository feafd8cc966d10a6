"""Fake NPU memory and the slice of cffi that pyaxengine uses on it.

A `Block` is one buffer the runtime allocated for an input or output. On the
SoC (CMM memory) it has two views: `host`, what the CPU sees through its
cache, and `device`, what the NPU reads; a CPU write reaches the NPU only
when the cache is flushed over it. A card's device memory has only the
`device` view and is written by host -> device copies. Every access is
bounds-checked (`FakeMemoryError` on a write outside a buffer), a graph run
over an input with unflushed bytes fails, and the bytes copied and flushed
are counted per session (`Traffic`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np


class FakeMemoryError(AssertionError):
    """An access the real runtime would turn into corrupted memory or stale reads."""


@dataclass
class Traffic:
    """Bytes moved for one session: copied host -> buffer, flushed to the NPU, invalidated, copied back out."""

    copied: int = 0
    flushed: int = 0
    copied_out: int = 0
    runs: int = 0
    invalidated: int = 0

    def snapshot(self) -> "Traffic":
        return Traffic(self.copied, self.flushed, self.copied_out, self.runs, self.invalidated)

    def since(self, before: "Traffic") -> "Traffic":
        return Traffic(self.copied - before.copied, self.flushed - before.flushed,
                       self.copied_out - before.copied_out, self.runs - before.runs,
                       self.invalidated - before.invalidated)


_next_phys = [0x1_0000_0000]


@dataclass(eq=False)
class Block:
    size: int
    traffic: Traffic
    cached: bool  # True: SoC CMM memory behind the CPU cache; False: card device memory
    name: str = ""
    phys: int = field(init=False)
    device: np.ndarray = field(init=False, repr=False)
    host: np.ndarray | None = field(init=False, repr=False)
    dirty: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self):
        self.phys = _next_phys[0]
        _next_phys[0] += (self.size + 0xFFFF) & ~0xFFFF  # 64 KiB apart, like a real allocator's alignment
        self.device = np.zeros(self.size, np.uint8)  # calloc: untouched pages cost no memory
        self.host = np.zeros(self.size, np.uint8) if self.cached else None

    def check(self, offset: int, n: int, what: str) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise FakeMemoryError(f"{what} of {n} bytes at offset {offset} is outside the {self.size}-byte"
                                  f" buffer {self.name}")

    def mark_dirty(self, start: int, end: int) -> None:
        self.dirty.append((start, end))

    def flush(self, start: int, end: int) -> None:
        self.device[start:end] = self.host[start:end]
        kept = []
        for a, b in self.dirty:  # what is left of each dirty range outside [start, end)
            if a < start:
                kept.append((a, min(b, start)))
            if b > end:
                kept.append((max(a, end), b))
        self.dirty = kept


_blocks: "weakref.WeakValueDictionary[int, Block]" = weakref.WeakValueDictionary()  # by physical base address


def allocate(size: int, traffic: Traffic, cached: bool, name: str) -> Block:
    block = Block(size, traffic, cached, name)
    _blocks[block.phys] = block
    return block


def block_at(phys: int, n: int, what: str) -> tuple[Block, int]:
    """The block holding physical bytes [phys, phys + n), and the offset in it."""
    for base, block in list(_blocks.items()):
        if base <= phys < base + block.size:
            block.check(phys - base, n, what)
            return block, phys - base
    raise FakeMemoryError(f"{what}: physical address 0x{phys:x} is in no buffer")


class Pointer:
    """A cffi pointer into a Block (device memory / CMM) or into a host array (ffi.from_buffer)."""

    def __init__(self, block: Block | None, offset: int = 0, array: np.ndarray | None = None):
        self.block, self.offset, self.array = block, offset, array

    def __add__(self, n: int) -> "Pointer":
        return Pointer(self.block, self.offset + int(n), self.array)

    def bytes(self, n: int, what: str) -> np.ndarray:
        """The n bytes this points at, as a writable uint8 view (host view for CMM)."""
        if self.array is not None:
            if self.offset + n > self.array.size:
                raise FakeMemoryError(f"{what} of {n} bytes overruns a {self.array.size}-byte host array")
            return self.array[self.offset:self.offset + n]
        self.block.check(self.offset, n, what)
        view = self.block.host if self.block.cached else self.block.device
        return view[self.offset:self.offset + n]


def as_bytes(src) -> np.ndarray:
    """What cffi accepts as a source buffer: a pointer, or any object with the buffer interface."""
    if isinstance(src, Pointer):
        return src.array[src.offset:] if src.array is not None else src.bytes(src.block.size - src.offset, "read")
    return np.ascontiguousarray(src).reshape(-1).view(np.uint8)


class Cell(list):
    """What ffi.new("T *") returns: one slot, read and written as [0]."""

    def __init__(self, value=None):
        super().__init__([value])


class FFI:
    """The cffi calls pyaxengine makes on buffers: new, cast, memmove, buffer, from_buffer."""

    def new(self, ctype: str, init=None) -> Cell:
        return Cell(init if init is not None else (0 if ctype.startswith("uint64_t *") else None))

    def cast(self, ctype: str, ptr):
        if not isinstance(ptr, Pointer):
            raise TypeError(f"fake cffi: cannot cast {type(ptr).__name__} to {ctype}")
        return Pointer(ptr.block, ptr.offset, ptr.array)

    def memmove(self, dest: Pointer, src, n: int) -> None:
        data = as_bytes(src)[:n]
        if data.size < n:
            raise FakeMemoryError(f"memmove of {n} bytes from a {data.size}-byte source")
        dest.bytes(n, "memmove")[:] = data
        if dest.block is not None:
            if dest.block.cached:
                dest.block.mark_dirty(dest.offset, dest.offset + n)
            dest.block.traffic.copied += n

    def buffer(self, ptr: Pointer, n: int) -> memoryview:
        view = ptr.bytes(n, "buffer read")
        if ptr.block is not None:
            ptr.block.traffic.copied_out += n  # what np.frombuffer(...).copy() then copies (or a view aliases)
        return memoryview(view)

    def from_buffer(self, obj) -> Pointer:
        return Pointer(None, 0, np.ascontiguousarray(obj).reshape(-1).view(np.uint8))
