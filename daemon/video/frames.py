"""What a captured frame keeps: a reduced picture and the model's input, never the decoded picture.

A decoded 1080p picture is 6.2 MB. Between capture and the NPU a frame sits
in open, queued, pending and in-flight windows, and in the camera's latest
analysed window (for questions): dozens of frames per camera. Its consumers
need far less:

- the ViT: the picture resized to its 448x448 input (0.6 MB), by the engine's
  own resize (`model_input`, given by the wiring), so features are
  bit-identical to those of the full picture;
- the gate and the alert snapshot: a picture at most `picture_width` wide
  (640: 0.7 MB), area-averaged, so the gate's 64-cell signature is the same
  average of the same pixels (exactly so when the factors are whole numbers:
  1920 -> 640 -> 64, 1280 -> 640 -> 64; else within a gray level).

`FrameMaker` makes both from the decoded picture in the capture thread, and
the decoded picture is dropped there.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from daemon.types import Frame

ModelInput = Callable[[np.ndarray], np.ndarray]  # full BGR picture -> the ViT's input picture


def reduce(bgr: np.ndarray, width: int) -> np.ndarray:
    """The picture at most `width` wide, aspect kept, area-averaged (0: unchanged)."""
    height, full = bgr.shape[:2]
    if width <= 0 or full <= width:
        return bgr
    size = (width, max(1, round(height * width / full)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


class FrameMaker:
    """Turns a decoded picture into a `Frame` that keeps only what its consumers need.

    `picture_width` 0 keeps the picture as decoded; `model_input` None leaves the
    ViT's resize to the engine (then the frame must keep enough of the picture).
    """

    def __init__(self, picture_width: int = 0, model_input: ModelInput | None = None) -> None:
        self.picture_width, self.model_input = picture_width, model_input

    def __call__(self, camera: str, ts: float, index: int, bgr: np.ndarray) -> Frame:
        fitted = self.model_input(bgr) if self.model_input is not None else None
        return Frame(camera, ts, index, reduce(bgr, self.picture_width), fitted)
