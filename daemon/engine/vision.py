"""Frames to ViT features: InternVL preprocessing, one 448x448 tile per frame.

Features are cached by frame identity, so frames shared by overlapping
windows go through the ViT once. A frame may carry its picture already resized
to the ViT's input (`Frame.model_input`, made by `Vision.fit` at capture), so
that it need not keep the full-resolution picture until the NPU gets to it.
"""

from __future__ import annotations

import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import cv2
import numpy as np

from daemon.engine.sessions import Session
from daemon.errors import ModelError
from daemon.types import Frame

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def fit(bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 [H, W, 3] -> BGR uint8 [size, size, 3]: the ViT's bicubic resize, one tile per frame.

    Sources call this at capture (through `Vision.fit`) so that a frame can drop its full-resolution
    picture and keep this one: `preprocess` gives bit-identical input either way."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 image [H, W, 3], got {bgr.dtype} {bgr.shape}")
    return cv2.resize(bgr, (size, size), interpolation=cv2.INTER_CUBIC)


def normalise(fitted: np.ndarray) -> np.ndarray:
    """BGR uint8 [S, S, 3] (from `fit`) -> normalised RGB float32 [1, 3, S, S]."""
    x = cv2.cvtColor(fitted, cv2.COLOR_BGR2RGB).astype(np.float32)
    x /= 255.0  # in place, the same float32 operations in the same order: two 2.4 MB arrays at a time, not four
    x -= IMAGENET_MEAN
    x /= IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def preprocess(bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 [H, W, 3] -> normalised RGB float32 [1, 3, size, size] (bicubic resize)."""
    return normalise(fit(bgr, size))


class Vision:
    """Runs the ViT graph: image [1, 3, S, S] -> features [T, H] per frame."""

    def __init__(self, session: Session):
        self.session = session
        port = session.inputs(0)[0]
        self._name, self._dtype = port.name, port.dtype
        self.size = port.shape[-1]  # S: 448 on the real model
        out = session.outputs(0)[0].shape
        if len(out) != 3 or min(out) < 1:
            raise ModelError(f"{session.name}: ViT output shape {out} is not [1, tokens, hidden]")
        self.tokens = out[1]  # T: image tokens per frame (256 on the real model)
        self._cache: weakref.WeakKeyDictionary[Frame, np.ndarray] = weakref.WeakKeyDictionary()
        self._pool: ThreadPoolExecutor | None = None  # normalises the next frame while the ViT runs one
        self.runs = 0

    def fit(self, bgr: np.ndarray) -> np.ndarray:
        """A full-resolution picture resized to this ViT's input: what a frame keeps as `model_input`."""
        return fit(bgr, self.size)

    def prepare(self, frame: Frame) -> np.ndarray:
        """The ViT's input [1, 3, S, S] for a frame, normalised, in the graph's dtype: what `features` feeds."""
        return normalise(self._input(frame)).astype(self._dtype, copy=False)

    def features_of(self, frames: Sequence[Frame], outs: Sequence[np.ndarray]) -> None:
        """Each frame's [T, H] features into its `out` (its rows of a prompt prefix).

        The next frame's input is normalised on a helper thread while the ViT runs this one (the runtime
        releases the GIL), so the NPU worker waits on normalisation only for a window's first frame, and
        at most two frames' float32 inputs (2.4 MB each at 448) exist at a time. Preparing them when a
        window is queued instead held them for every waiting window: ~65 MiB more at the peak of two 1080p
        cameras (benchmarks/bench_memory.py)."""
        todo = [(f, out) for f, out in zip(frames, outs) if not self._from_cache(f, out)]
        ahead = self._helper().submit(self.prepare, todo[0][0]) if todo else None
        for i, (frame, out) in enumerate(todo):
            x = ahead.result()
            ahead = self._helper().submit(self.prepare, todo[i + 1][0]) if i + 1 < len(todo) else None
            if not self._from_cache(frame, out):  # the same frame twice in one window: computed once
                self._run(frame, x, out)

    def _helper(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vit-input")
        return self._pool

    def _from_cache(self, frame: Frame, out: np.ndarray) -> bool:
        feats = self._cache.get(frame)
        if feats is not None and feats is not out:
            out[...] = feats
        return feats is not None

    def _run(self, frame: Frame, x: np.ndarray, out: np.ndarray) -> None:
        out[...] = self.session.run({self._name: x}, 0)[0][0]  # [T, H]
        self._cache[frame] = out  # the view: a frame's features are not held twice while it lives
        self.runs += 1

    def features(self, frame: Frame) -> np.ndarray:
        """[T, H] features of one frame, from the cache when this frame object was seen."""
        feats = self._cache.get(frame)
        if feats is None:
            feats = np.array(self.session.run({self._name: self.prepare(frame)}, 0)[0][0])  # [T, H], own memory
            self._cache[frame] = feats
            self.runs += 1
        return feats

    def _input(self, frame: Frame) -> np.ndarray:
        """The frame at the ViT's size: the copy resized at capture, or `image` resized now."""
        fitted = frame.model_input
        if fitted is not None and fitted.shape == (self.size, self.size, 3) and fitted.dtype == np.uint8:
            return fitted
        return fit(frame.image, self.size)
