"""Frames for one-shot questions: image files as the frames of one window, or a
video file sampled at segment mid-points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.errors import SourceError, UsageError
from daemon.types import Frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def load_frames(sources: list[str], n: int) -> list[Frame]:
    """One video file -> n frames at segment mid-points; image files -> one frame each."""
    if not sources:
        return []
    paths = [Path(s) for s in sources]
    for p in paths:  # the command line's mistake, as any bad option: exit 2
        if p.is_dir():
            raise UsageError(f"{p}: is a folder; give one video file, or image files as the frames of one window")
        if not p.is_file():
            raise UsageError(f"{p}: no such file; check the path")
    if all(p.suffix.lower() in IMAGE_SUFFIXES for p in paths):
        return [Frame("cli", float(i), i, read_image(p)) for i, p in enumerate(paths)]
    videos = [p for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
    if len(videos) > 1:
        raise UsageError(f"give one video file at a time (got {len(videos)}: {', '.join(map(str, videos))}),"
                         " or image files (.jpg, .png, ...) as the frames of one window")
    if len(paths) > 1:
        raise UsageError(f"give one video file or image files (.jpg, .png, ...), not both (got the video {videos[0]}"
                         f" and {len(paths) - 1} image file(s))")
    return read_video(paths[0], n)


def read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise UsageError(f"{path}: not an image OpenCV can read; give .jpg, .png, .bmp or .webp files")
    return img


def read_video(path: Path, n: int) -> list[Frame]:
    from daemon.video.file import VideoFile
    from daemon.video.windows import segment_indices

    try:
        video = VideoFile(path)
    except SourceError:
        raise UsageError(f"{path}: cannot decode video; is it a complete video file FFmpeg can read?") from None
    try:
        indices = segment_indices(0, video.frame_count - 1, n)  # a short clip repeats frames
        read = {i: Frame("cli", seconds, i, bgr) for i, seconds, bgr in video.read(sorted(set(indices)))}
        return [read[i] for i in indices]
    except SourceError as exc:
        raise SourceError(f"{path}: cannot decode video ({exc})") from None
    finally:
        video.close()
