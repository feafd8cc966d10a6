"""Declared graph inputs and the exact feed check every backend applies.

A leaf of the engine: the sessions and the resident-KV buffers both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from daemon.errors import ShapeError


@dataclass(frozen=True)
class Port:
    """One declared graph input."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def from_json(cls, d: dict) -> "Port":
        return cls(d["name"], tuple(int(x) for x in d["shape"]), np.dtype(_dtype(d["dtype"])))

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return name


def check_feeds(name: str, ports: Sequence[Port], feeds: dict[str, np.ndarray], group: int) -> None:
    """Raise ShapeError unless feeds match the declared ports exactly (names, shapes, dtypes)."""
    missing = [p.name for p in ports if p.name not in feeds]
    unknown = sorted(set(feeds) - {p.name for p in ports})
    if missing or unknown:
        raise ShapeError(
            f"{name} (shape group {group}): required inputs {missing} are missing"
            f" and inputs {unknown} are unknown; the graph declares {[p.name for p in ports]}"
        )
    for p in ports:
        a = feeds[p.name]
        if tuple(a.shape) != p.shape or a.dtype != p.dtype:
            # Same wording as the NPU runtime's own check, plus where it happened.
            raise ShapeError(
                f"{name} (shape group {group}): model inputs({p.name}) expect shape {list(p.shape)}"
                f" and dtype {p.dtype}, however gets input with shape {list(a.shape)} and dtype {a.dtype}"
            )
