"""Generated scenes that measure the gate: small things appearing, leaving and moving, static
scenes with sensor noise, light drift and compression, exposure steps and IR switches.

Shared by tests/test_gate.py and benchmarks/bench_gate.py. Frames go through a real codec
(OpenCV's mp4v, or x264 at a low-quality constant quantizer through GStreamer) and are
decoded again, so compression artefacts are the codec's own.

    setup = Setup(1280, 720, noise=30, codec="h264")
    trials = detection_trials(setup, areas=(0.001,), tmp)       # one Trial per (area, kind, position)
    false = static_run(setup, windows=40, tmp).analysed         # windows analysed beyond the first
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from clips import background, read_clip, write_clip, write_h264

from daemon.config.cameras import GateSettings
from daemon.types import Frame, Window
from daemon.video.gate import Decision, Gate, GateState, decide

FRAMES = 8  # frames per window
STATIC = GateSettings(heartbeat=1e9)  # defaults without the heartbeat: every analysis is a gate decision
KINDS = ("appear", "leave", "move")


@dataclass(frozen=True)
class Setup:
    width: int
    height: int
    noise: float  # sensor noise sigma, gray levels
    codec: str = "raw"  # raw | mp4v | h264
    drift: float = 0.25  # light from 1 - drift to 1 + drift over a static run
    seed: int = 0
    gop: int = 8  # frames (= seconds: one frame per second of the scene) between keyframes: one per window.
    # Cameras send one every 1-4 s and usually start a new one on a day/night switch; with 32 s an
    # encoder at quantizer 38 refines the picture for half a minute after a switch (2-3 windows).

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height} sigma {self.noise:g} {self.codec}"


class Noise:
    """Sensor noise: a bank of Gaussian fields, rolled by random offsets (fast at 1080p)."""

    def __init__(self, setup: Setup, rng: np.random.Generator, bank: int = 6) -> None:
        shape = (setup.height, setup.width, 1)
        self.rng = rng
        self.fields = [rng.normal(0, setup.noise, size=shape).astype(np.float32) for _ in range(bank)] \
            if setup.noise > 0 else []

    def __call__(self) -> np.ndarray | float:
        if not self.fields:
            return 0.0
        field = self.fields[int(self.rng.integers(len(self.fields)))]
        return np.roll(field, (int(self.rng.integers(field.shape[0])), int(self.rng.integers(field.shape[1]))), (0, 1))


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    size: int
    colour: float  # gray level of the thing

    def overlaps(self, x: int, y: int, w: int, h: int, margin: int) -> bool:
        return (x - margin < self.x + self.size and self.x < x + w + margin
                and y - margin < self.y + self.size and self.y < y + h + margin)


def place(base: np.ndarray, area: float, rng: np.random.Generator, avoid: Box | None = None) -> Box:
    """A square of `area` (share of the picture) where it stands out: a dark thing on a light
    background or a light one on a dark background, at least 80 gray levels apart."""
    height, width = base.shape[:2]
    size = max(2, round((area * width * height) ** 0.5))
    gray = base.mean(axis=2)
    for _ in range(1000):
        x, y = int(rng.integers(0, width - size)), int(rng.integers(0, height - size))
        if avoid is not None and avoid.overlaps(x, y, size, size, size):
            continue
        local = float(gray[y : y + size, x : x + size].mean())
        colour = 25.0 if local > 127 else 230.0
        if abs(local - colour) >= 80:
            return Box(x, y, size, colour)
    raise RuntimeError("no place with enough contrast")


def render(base: np.ndarray, light: float, noise: Noise, boxes: Sequence[Box]) -> np.ndarray:
    image = base * light
    for box in boxes:
        image[box.y : box.y + box.size, box.x : box.x + box.size] = box.colour * light
    return np.clip(image + noise(), 0, 255).astype(np.uint8)


def through_codec(frames: list[np.ndarray], codec: str, folder: Path, name: str, gop: int = 8) -> list[np.ndarray]:
    """The frames as a camera would deliver them: encoded and decoded again (raw: unchanged)."""
    if codec == "raw":
        return frames
    path = folder / f"{name}.mp4"
    if codec == "h264":
        write_h264(path, frames, fps=8, gop=gop)
    elif codec == "mp4v":
        write_clip(path, frames, fps=8)
    else:
        raise ValueError(f"unknown codec {codec!r}")
    decoded = read_clip(path)
    path.unlink()
    assert len(decoded) == len(frames), f"{codec}: {len(decoded)} of {len(frames)} frames decoded"
    return decoded


def windows_of(images: Sequence[np.ndarray], camera: str = "cam", t0: float = 0.0) -> list[Window]:
    """Consecutive 8-frame windows of 8 s (one frame a second)."""
    out = []
    for w in range(len(images) // FRAMES):
        frames = tuple(Frame(camera, t0 + w * FRAMES + i, w * FRAMES + i, images[w * FRAMES + i])
                       for i in range(FRAMES))
        out.append(Window(camera, frames[0].ts - 0.5, frames[-1].ts + 0.5, frames))
    return out


@dataclass(frozen=True)
class Trial:
    area: float
    kind: str  # appear | leave | move
    box: Box  # where the thing is (or was) in the tested window
    decision: Decision
    frame_size: tuple[int, int]  # width, height

    @property
    def found(self) -> bool:
        """Analysed, with a region on the thing (not somewhere else by luck)."""
        width, height = self.frame_size
        margin = max(4, round(3 * height / 100))  # three signature cells
        return self.decision.analyse and any(
            self.box.overlaps(*r.pixels(width, height), margin) for r in self.decision.regions)


def detection_trials(setup: Setup, areas: Sequence[float], folder: Path, positions: int = 2,
                     kinds: Sequence[str] = KINDS, settings: GateSettings = STATIC) -> list[Trial]:
    """For each area, kind and position: a reference window (analysed), then a window in whose
    second half a thing appears, leaves or moves by twice its size. All trials go through the
    codec as one clip."""
    rng = np.random.default_rng(setup.seed)
    base = background(setup.width, setup.height, setup.seed)
    noise = Noise(setup, rng)
    plans, images = [], []
    for area, kind, _ in itertools.product(areas, kinds, range(positions)):
        box = place(base, area, rng)
        other = place(base, area, rng, avoid=box) if kind == "move" else None
        before = {"appear": [], "leave": [box], "move": [box]}[kind]
        after = {"appear": [box], "leave": [], "move": [other]}[kind]
        light = float(rng.uniform(1 - setup.drift, 1 + setup.drift))
        for i in range(2 * FRAMES):
            boxes = after if i >= FRAMES + FRAMES // 2 else before
            images.append(render(base, light * (1 + 0.002 * i), noise, boxes))
        plans.append((area, kind, box if kind != "move" else other))
    images = through_codec(images, setup.codec, folder, f"trials-{setup.width}-{setup.noise:g}", setup.gop)
    windows = windows_of(images)
    trials = []
    for (area, kind, box), (reference, tested) in zip(plans, zip(windows[0::2], windows[1::2])):
        _, state = decide(reference.frames, GateState(), settings, now=0.0)
        decision, _ = decide(tested.frames, state, settings, now=8.0)
        trials.append(Trial(area, kind, box, decision, (setup.width, setup.height)))
    return trials


@dataclass(frozen=True)
class StaticRun:
    windows: int  # windows checked after the first
    analysed: int  # of those, analysed: false windows
    reasons: tuple[str, ...]


def static_run(setup: Setup, windows: int, folder: Path, settings: GateSettings = STATIC,
               step: str | None = None) -> StaticRun:
    """A static scene for `windows` + 1 windows: noise, light drifting from 1 - drift to 1 + drift,
    the codec. `step`: at the middle of the run the exposure jumps ("exposure": x1.6, the camera's
    auto exposure), the camera switches to infrared ("ir": a gray picture with other tones), or back
    to colour ("day")."""
    rng = np.random.default_rng(setup.seed + 100)
    base = background(setup.width, setup.height, setup.seed)
    noise = Noise(setup, rng)
    total = (windows + 1) * FRAMES
    switch = total // 2 + 3  # inside a window, not at its border
    ir = _infrared(base)
    images = []
    for i in range(total):
        light = 1 - setup.drift + 2 * setup.drift * i / total
        picture = base
        if step == "exposure" and i >= switch:
            light *= 1.6
        elif (step == "ir" and i >= switch) or (step == "day" and i < switch):
            picture = ir
        images.append(render(picture, light, noise, ()))
    images = through_codec(images, setup.codec, folder, f"static-{setup.width}-{setup.noise:g}", setup.gop)
    gate = Gate(settings)
    reasons = []
    for number, window in enumerate(windows_of(images)):
        _, decision = gate.check(window, now=window.end)
        if number and decision.analyse:
            reasons.append(decision.reason)
    return StaticRun(windows, len(reasons), tuple(reasons))


def _infrared(base: np.ndarray) -> np.ndarray:
    """The same room under IR light: gray, red-heavy (foliage and fabrics bright), flatter."""
    b, g, r = base[..., 0], base[..., 1], base[..., 2]
    gray = 0.2 * b + 0.3 * g + 0.5 * r
    gray = 60 + 0.7 * gray
    return np.repeat(gray[..., None], 3, axis=2)


def smallest_found(trials: Sequence[Trial]) -> float | None:
    """The smallest area at which every trial (every kind and position) was found."""
    by_area: dict[float, list[bool]] = {}
    for t in trials:
        by_area.setdefault(t.area, []).append(t.found)
    found = [area for area, hits in sorted(by_area.items()) if all(hits)]
    return found[0] if found else None


__all__ = ["Setup", "Trial", "detection_trials", "smallest_found", "static_run"]
