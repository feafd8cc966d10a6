"""A clean stdout for `--json`: the vendor runtime writes its `[INFO]` lines to the process's stdout.

pyaxengine's native library prints ~94 lines on file descriptor 1 while it
loads and runs graphs, so `sys.stdout` redirection cannot keep them out of a
JSON answer. `json_stdout` points fd 1 at stderr for the duration and hands
back a stream on the real stdout for the JSON alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from typing import TextIO


def _flush_c_stdio() -> None:
    """Flush C's buffered stdout (printf from native code) into whatever fd 1 is now."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not glibc/musl): nothing buffered by us
        pass


def _writes_to_fd1(stream: TextIO) -> bool:
    try:
        return stream.fileno() == 1
    except (AttributeError, OSError, ValueError):  # an in-memory stream (a test's capture)
        return False


@contextlib.contextmanager
def json_stdout(enabled: bool = True) -> Iterator[TextIO]:
    """With `enabled`, fd 1 is stderr inside the block and the yielded stream writes where stdout went
    (the saved fd 1, or sys.stdout when something such as pytest replaced it); without, sys.stdout."""
    if not enabled:
        yield sys.stdout
        return
    sys.stdout.flush()
    _flush_c_stdio()
    on_fd1 = _writes_to_fd1(sys.stdout)
    saved = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(os.dup(saved), "w", encoding="utf-8") if on_fd1 else sys.stdout
    try:
        yield out
    finally:
        out.flush()
        if on_fd1:
            out.close()
        sys.stdout.flush()
        _flush_c_stdio()  # native lines still buffered go to stderr, not after the JSON
        os.dup2(saved, 1)
        os.close(saved)
