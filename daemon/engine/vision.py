"""Frames to ViT features: InternVL preprocessing, one 448x448 tile per frame.

Features are cached by frame identity, so frames shared by overlapping
windows go through the ViT once.
"""

from __future__ import annotations

import weakref

import cv2
import numpy as np

from daemon.engine.sessions import Session
from daemon.errors import ModelError
from daemon.types import Frame

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def preprocess(bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR uint8 [H, W, 3] -> normalised RGB float32 [1, 3, size, size] (bicubic resize)."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 image [H, W, 3], got {bgr.dtype} {bgr.shape}")
    rgb = cv2.cvtColor(cv2.resize(bgr, (size, size), interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2RGB)
    x = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


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
        self.runs = 0

    def features(self, frame: Frame) -> np.ndarray:
        """[T, H] features of one frame, from the cache when this frame object was seen."""
        feats = self._cache.get(frame)
        if feats is None:
            x = preprocess(frame.image, self.size).astype(self._dtype, copy=False)
            feats = np.array(self.session.run({self._name: x}, 0)[0][0])  # [T, H], own memory
            self._cache[frame] = feats
            self.runs += 1
        return feats
