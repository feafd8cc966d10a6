"""The alert snapshot: the window's frame that changed most, as a JPEG.

The JPEG is of the frame's picture, which sources keep at most `picture_width`
pixels wide (640 by default; see `daemon.video.frames`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from daemon.types import Frame, Window
from daemon.video.gate import frame_change, signature

JPEG_QUALITY = 85


def changed_most(frames: Sequence[Frame], reference: Frame | None) -> Frame:
    """The frame that differs most (in the gate's terms) from what the model saw before: the last
    frame of the previous analysed window, or without one this window's first frame. When
    nothing differs, the middle frame."""
    base = signature((reference or frames[0]).image)
    scores = [int(frame_change(signature(f.image), base, None, 0.0).changed.sum()) for f in frames]  # changed cells
    best = int(np.argmax(scores))
    return frames[best] if scores[best] > 0 else frames[len(frames) // 2]


def snapshot(window: Window, previous: Window | None) -> bytes:
    """The JPEG of an alert: the frame of `window` that changed most since the `previous` analysed one."""
    return jpeg(changed_most(window.frames, previous.frames[-1] if previous else None))


def jpeg(frame: Frame, quality: int = JPEG_QUALITY) -> bytes:
    ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {frame.image.shape} frame as JPEG")
    return data.tobytes()
