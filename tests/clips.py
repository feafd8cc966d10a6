"""Generated video for tests and benchmarks: a static, noisy scene with objects at known times.

Everything is deterministic for a given seed. Frames are BGR uint8, like
`Frame.image`. Writers use what OpenCV can encode everywhere (mp4v, MJPG),
so nothing here depends on files outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np


@dataclass(frozen=True)
class Thing:
    """A square that appears at `appear`, moves from `start` to `stop` (top-left, px)
    between `move_from` and `move_to`, and leaves at `leave` (seconds)."""

    appear: float
    leave: float
    start: tuple[int, int]
    stop: tuple[int, int] | None = None
    move_from: float = 0.0
    move_to: float = 0.0
    size: int = 40
    colour: tuple[int, int, int] = (40, 60, 200)

    def position(self, t: float) -> tuple[int, int] | None:
        if not self.appear <= t < self.leave:
            return None
        if self.stop is None or t <= self.move_from:
            return self.start
        if t >= self.move_to:
            return self.stop
        a = (t - self.move_from) / (self.move_to - self.move_from)
        return (
            round(self.start[0] + a * (self.stop[0] - self.start[0])),
            round(self.start[1] + a * (self.stop[1] - self.start[1])),
        )


@dataclass(frozen=True)
class Scene:
    """A static background with sensor noise, slow light drift and some things."""

    width: int = 320
    height: int = 240
    fps: float = 10.0
    duration: float = 10.0
    noise: float = 6.0  # sensor noise sigma, gray levels
    drift: float = 0.15  # brightness changes linearly from 1 - drift to 1 + drift
    things: tuple[Thing, ...] = ()
    seed: int = 0

    @property
    def frame_count(self) -> int:
        return round(self.duration * self.fps)


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A textured room-like picture: a gradient with furniture-sized blocks and edges."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        image[..., c] = 70 + 60 * x / width + 30 * y / height + 10 * c
    for _ in range(12):
        w, h = int(rng.integers(width // 12, width // 3)), int(rng.integers(height // 12, height // 3))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image[y0 : y0 + h, x0 : x0 + w] = rng.integers(20, 235, size=3)
    image += rng.normal(0, 8, size=(height, width, 1))  # fixed fine texture
    return np.clip(image, 0, 255)


def scene_frames(scene: Scene) -> Iterator[np.ndarray]:
    """The scene's frames, BGR uint8."""
    rng = np.random.default_rng(scene.seed + 1)
    base = background(scene.width, scene.height, scene.seed)
    scale = min(scene.width / 320, scene.height / 240)
    for i in range(scene.frame_count):
        t = i / scene.fps
        light = 1 - scene.drift + 2 * scene.drift * t / max(scene.duration, 1e-9)
        image = base * light
        for thing in scene.things:
            pos = thing.position(t)
            if pos is not None:
                x, y, s = round(pos[0] * scale), round(pos[1] * scale), round(thing.size * scale)
                image[y : y + s, x : x + s] = np.array(thing.colour, np.float32) * light
        image = image + rng.normal(0, scene.noise, size=image.shape[:2] + (1,)).astype(np.float32)
        yield np.clip(image, 0, 255).astype(np.uint8)


def write_clip(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, quality: int | None = None) -> Path:
    """Write frames with mp4v (.mp4) or MJPG (.avi; `quality` 1..100 makes JPEG artefacts)."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    fourcc = cv2.VideoWriter.fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, (first.shape[1], first.shape[0]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    if quality is not None:
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
    writer.write(first)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_scene(path: str | os.PathLike, scene: Scene, quality: int | None = None) -> Path:
    return write_clip(path, scene_frames(scene), scene.fps, quality)


def write_h264(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, quantizer: int = 38,
               gop: int = 25) -> Path:
    """Write frames as H.264 in MP4 with x264 (through gst-launch-1.0) at a constant quantizer:
    38 is a low-quality camera stream (blocking, smeared noise). RuntimeError without GStreamer's x264."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    if shutil.which("gst-launch-1.0") is None:
        raise RuntimeError("gst-launch-1.0 is missing: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-ugly")
    height, width = first.shape[:2]
    cmd = [
        "gst-launch-1.0", "-q", "fdsrc", "fd=0", "blocksize=" + str(first.nbytes),
        "!", "rawvideoparse", f"width={width}", f"height={height}", "format=bgr", f"framerate={round(fps)}/1",
        "!", "videoconvert", "!", "x264enc", "pass=quant", f"quantizer={quantizer}", "speed-preset=ultrafast",
        f"key-int-max={gop}", "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={path}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(first.tobytes())
        for frame in frames:
            proc.stdin.write(frame.tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"gst-launch-1.0 could not encode H.264: {proc.stderr.read().decode(errors='replace')}")
    return path


def read_clip(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of a clip, decoded with OpenCV (BGR)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def write_jpeg_frames(folder: str | os.PathLike, frames: Iterable[np.ndarray], quality: int = 80) -> Path:
    """00000.jpg, 00001.jpg, ... for the RTSP test server's `multifilesrc`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return folder


# The gate's reference scene: things appear, move and leave at known times.
# With 4-second windows, events fall in windows 5 (appear at 20.5 s),
# 7 (moves 29-31 s), 11 (leaves at 45.5 s), and 13 (a second thing passes
# through the picture within 53.1-53.8 s, seen in only one or two frames).
EVENT_SCENE = Scene(
    duration=64.0,
    things=(
        Thing(appear=20.5, leave=45.5, start=(60, 100), stop=(140, 110), move_from=29.0, move_to=31.0),
        Thing(appear=53.1, leave=53.8, start=(220, 40), size=40, colour=(200, 200, 60)),
    ),
)
EVENT_WINDOWS = {5, 7, 11, 13}  # window numbers (span = stride = 4 s) that contain an event
