"""The scene-change gate on generated scenes: sensitivity, false windows and CPU cost.

    python benchmarks/bench_gate.py [--quick] [--resolutions 320x240,1920x1080] [--noises 0,8,30]

Scenes come from tests/gate_scenes.py: a textured room, sensor noise sigma
(gray levels), light drifting +-25 %, frames encoded and decoded again by a real
codec (x264 at constant quantizer 38 through GStreamer: a low-quality camera
stream, a keyframe every `--gop` seconds of scene; OpenCV's mp4v; or raw).
Windows are 8 frames over 8 s. Four tables:

1. per resolution, noise and codec: the smallest thing (a square, share of the
   picture and side in px) found in every trial (appearing, leaving, moving by
   twice its size; two places each, with a region on the thing), how many
   trials found a 0.1 % thing, and false windows per hour of a static scene
   (windows analysed after the first, heartbeat off) with the share skipped;
2. one hour of static scene (450 windows) at the two smallest resolutions;
3. an exposure step (x1.6), an infrared switch (colour -> gray) and back
   (day) in the middle of a static run: windows analysed because of it (at most one wanted);
4. gate CPU ms per 8-frame window (`decide`, signatures included) at each
   resolution: today's gate next to the gate it replaced (64-cell fraction,
   kept here for the comparison only), median of 20, in this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from clips import background, read_clip, write_h264  # noqa: E402
from gate_scenes import (FRAMES, KINDS, STATIC, Noise, Setup, Trial, detection_trials, place, render,  # noqa: E402
                         smallest_found, static_run, windows_of)

from daemon.config.cameras import GateSettings  # noqa: E402
from daemon.types import Frame, Window  # noqa: E402
from daemon.video.decoders import KEYFRAMES_ONLY, open_capture  # noqa: E402
from daemon.video.gate import GateState, decide  # noqa: E402
from daemon.video.windows import KeyframeWindows  # noqa: E402

AREAS = (0.00025, 0.0005, 0.001, 0.002, 0.005)
WINDOW_SECONDS = 8.0


# ---------------------------------------------------------------- the gate this one replaced (for the CPU column)


def old_signature(image: np.ndarray) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = gray.shape
    return cv2.resize(gray, (64, max(1, round(64 * height / width))), interpolation=cv2.INTER_AREA).astype(np.float32)


def old_frame_change(frame: np.ndarray, reference: np.ndarray) -> float:
    x, y = reference.ravel(), frame.ravel()
    keep = np.ones(x.shape, dtype=bool)
    fitted = reference
    for _ in range(2):
        xs, ys = x[keep], y[keep]
        variance = float(xs.var())
        gain = float(((xs - xs.mean()) * (ys - ys.mean())).mean() / variance) if variance > 1.0 else 1.0
        if not 0.5 <= gain <= 2.0:
            return 1.0
        fitted = gain * reference + float(ys.mean() - gain * xs.mean())
        inliers = np.abs(frame - fitted).ravel() <= 12.0
        if inliers.sum() < x.size // 2:
            break
        keep = inliers
    residual = np.abs(frame - fitted)
    noise = 1.4826 * float(np.median(residual))
    return float(np.mean(residual > max(12.0, 4.0 * noise)))


def old_decide(images, reference: np.ndarray) -> float:
    return max(old_frame_change(old_signature(image), reference) for image in images)


# ---------------------------------------------------------------- measurements


def cpu_ms(width: int, height: int, repeat: int = 20) -> tuple[float, float]:
    """Median ms of one 8-frame window through today's gate and the old one (same frames)."""
    rng = np.random.default_rng(0)
    base = background(width, height, seed=0)
    images = [np.clip(base + rng.normal(0, 8, size=(height, width, 1)), 0, 255).astype(np.uint8) for _ in range(8)]
    frames = [Frame("cam", float(i), i, image) for i, image in enumerate(images)]
    settings = GateSettings(heartbeat=1e9)
    _, state = decide(frames, GateState(), settings, now=0.0)
    old_reference = old_signature(images[-1])
    new, old = [], []
    for _ in range(repeat):  # alternate, so that load from other processes hits both alike
        started = time.perf_counter()
        decide(frames, state, settings, now=8.0)
        new.append(1000 * (time.perf_counter() - started))
        started = time.perf_counter()
        old_decide(images, old_reference)
        old.append(1000 * (time.perf_counter() - started))
    return statistics.median(new), statistics.median(old)


# ---------------------------------------------------------------- the gate on keyframes only (stream.gate_decode)


def keyframe_clip(setup: Setup, passing: tuple[int, ...], rng: np.random.Generator) -> tuple[list, list[np.ndarray]]:
    """Trial pairs (reference window, tested window) as in gate_scenes.detection_trials, 0.1 % things
    appearing, leaving, moving (in the tested window's second half, staying), and things passing: seen
    for `d` seconds of the tested window from a random second on, then gone. One frame a second."""
    base, noise = background(setup.width, setup.height, setup.seed), Noise(setup, rng)
    plans, images = [], []
    for kind in [*KINDS, *(f"pass {d} s" for d in passing)]:
        for _ in range(4):  # positions
            box = place(base, 0.001, rng)
            other = place(base, 0.001, rng, avoid=box) if kind == "move" else None
            before = {"leave": [box], "move": [box]}.get(kind, [])
            after = {"appear": [box], "move": [other]}.get(kind, [])
            seen = int(kind.split()[1]) if kind.startswith("pass") else 0
            first = FRAMES + int(rng.integers(0, FRAMES - seen + 1))
            light = float(rng.uniform(1 - setup.drift, 1 + setup.drift))
            for i in range(2 * FRAMES):
                if seen:
                    boxes = [box] if first <= i < first + seen else []
                else:
                    boxes = after if i >= FRAMES + FRAMES // 2 else before
                images.append(render(base, light * (1 + 0.002 * i), noise, boxes))
            plans.append((kind, box if kind != "move" else other))
    images += [render(base, 1.0, noise, ()) for _ in range(FRAMES)]  # a last window holds the keyframe after
    return plans, images


def keyframes_of(path: Path) -> list[Frame]:
    """The clip's keyframes as the daemon's gate gets them (FFmpeg skips the other frames), at their
    media second."""
    import cv2

    capture, frames = open_capture(str(path), (), (KEYFRAMES_ONLY,)), []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        second = round(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000 * 8)  # written at 8 fps, one frame a second
        frames.append(Frame("cam", float(second), second, image))
    capture.release()
    return frames


def keyframe_windows(frames: list[Frame]) -> dict[float, Window]:
    windows = KeyframeWindows("cam", WINDOW_SECONDS, WINDOW_SECONDS, FRAMES, max_gap=10.0)
    return {w.start: w for f in frames if windows.wants(f.ts) for w in windows.add(f)}


def keyframe_trials(setup: Setup, gop: int, folder: Path, passing=(1, 2, 4)) -> dict[str, tuple[int, int, int]]:
    """Per trial kind: (found with every frame decoded, found with keyframes only, trials), same clip."""
    plans, images = keyframe_clip(setup, passing, np.random.default_rng(setup.seed))
    path = write_h264(folder / f"keyframes-{setup.width}-{gop}.mp4", images, fps=8, gop=gop)
    every = windows_of(read_clip(path))
    keyed = keyframe_windows(keyframes_of(path))
    out: dict[str, list[int]] = {}
    for k, (kind, box) in enumerate(plans):
        row = out.setdefault(kind, [0, 0, 0])
        for column, (reference, tested) in enumerate([(every[2 * k], every[2 * k + 1]),
                                                      (keyed.get(16.0 * k), keyed.get(16.0 * k + 8))]):
            if reference is None or tested is None:
                continue  # no window: nothing found
            _, state = decide(reference.frames, GateState(), STATIC, now=0.0)
            decision, _ = decide(tested.frames, state, STATIC, now=8.0)
            row[column] += Trial(0.001, kind, box, decision, (setup.width, setup.height)).found
        row[2] += 1
    path.unlink()
    return {kind: tuple(row) for kind, row in out.items()}  # type: ignore[misc]


def keyframe_static(setup: Setup, gop: int, windows: int, folder: Path) -> tuple[int, int, int]:
    """Windows analysed after the first in a static scene (noise, drift, x264): every frame decoded,
    keyframes only; and how many windows."""
    rng = np.random.default_rng(setup.seed + 100)
    base, noise = background(setup.width, setup.height, setup.seed), Noise(setup, rng)
    total = (windows + 1) * FRAMES
    images = [render(base, 1 - setup.drift + 2 * setup.drift * i / total, noise, ()) for i in range(total)]
    path = write_h264(folder / f"keyframes-static-{setup.width}-{gop}.mp4", images, fps=8, gop=gop)
    counts = []
    for ws in (windows_of(read_clip(path)), sorted(keyframe_windows(keyframes_of(path)).values(),
                                                   key=lambda w: w.start)):
        state, analysed = GateState(), 0
        for number, window in enumerate(ws):
            decision, state = decide(window.frames, state, STATIC, now=window.end)
            analysed += bool(number) and decision.analyse
        counts.append(analysed)
    path.unlink()
    return counts[0], counts[1], windows


def print_keyframes(resolutions, noise: float, gops: list[int], static_windows: int, folder: Path) -> None:
    print(f"\n{'resolution':>10} {'GOP':>4} | 0.1 % things found: every frame decoded / keyframes only"
          f" (noise {noise:g}, h264) | false windows in {static_windows} static: every / keyframes")
    for width, height in resolutions:
        for gop in gops:
            setup = Setup(width, height, noise, "h264", gop=gop)
            rows = keyframe_trials(setup, gop, folder)
            shown = "  ".join(f"{kind} {a}/{b} of {n}" for kind, (a, b, n) in rows.items())
            every, keyed, n = keyframe_static(setup, gop, static_windows, folder)
            print(f"{width}x{height:<4} {gop:>3}s | {shown} | {every} / {keyed}", flush=True)


def parse_resolutions(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]  # type: ignore[misc]


def setups(resolutions, noises, codecs, gop: int) -> list[Setup]:
    """Every noise level with x264 (what cameras send); the highest also raw and with mp4v."""
    out = []
    for width, height in resolutions:
        for noise in noises:
            for codec in codecs:
                if codec == "h264" or noise == max(noises):
                    out.append(Setup(width, height, noise, codec, gop=gop))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="320x240,640x360,1280x720,1920x1080")
    parser.add_argument("--noises", default="0,8,30", help="sensor noise sigmas, gray levels")
    parser.add_argument("--codecs", default="h264,mp4v,raw")
    parser.add_argument("--static-windows", type=int, default=40, help="static windows per setup (8 s each)")
    parser.add_argument("--gop", type=int, default=8, help="x264 keyframe interval, seconds of scene (default 8)")
    parser.add_argument("--keyframe-gops", default="1,2,4",
                        help="keyframe intervals (s) at which the gate reading keyframes only is measured")
    parser.add_argument("--quick", action="store_true", help="320x240 and 640x360 only, 20 static windows")
    parser.add_argument("--hour-windows", type=int, default=450, help="windows of the long static run (450: 1 h)")
    args = parser.parse_args(argv)
    resolutions = parse_resolutions("320x240,640x360" if args.quick else args.resolutions)
    noises = [float(n) for n in args.noises.split(",")]
    static_windows = 20 if args.quick else args.static_windows
    folder = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    defaults = GateSettings()
    print(f"gate threshold {100 * defaults.threshold:.2f} % of the picture; things of {', '.join(f'{100 * a:g}' for a in AREAS)} %"
          f"; {static_windows} static windows ({static_windows * WINDOW_SECONDS / 60:.1f} min) per row"
          f"; x264 keyframe every {args.gop} s\n")

    print(f"{'resolution':>10} {'noise':>5} {'codec':>5} | {'smallest found':>20} | {'0.1 % found':>11} |"
          f" {'false windows/h':>15} | {'static skipped':>14}")
    for setup in setups(resolutions, noises, args.codecs.split(","), args.gop):
        trials = detection_trials(setup, AREAS, folder)
        run = static_run(setup, static_windows, folder)
        smallest = smallest_found(trials)
        if smallest is None:
            shown = "none"
        else:
            side = round((smallest * setup.width * setup.height) ** 0.5)
            shown = f"{100 * smallest:.3g} % ({side}x{side} px)"
        at_target = [t.found for t in trials if t.area == 0.001]
        per_hour = run.analysed * 3600 / (run.windows * WINDOW_SECONDS)
        skipped = 100 * (1 - run.analysed / run.windows)
        print(f"{setup.width}x{setup.height:<4} {setup.noise:>5g} {setup.codec:>5} | {shown:>20} |"
              f" {sum(at_target):>5}/{len(at_target):<5} | {per_hour:>15.0f} | {skipped:>13.1f}%", flush=True)

    hour = args.hour_windows
    print(f"\n{'resolution':>10} | {hour * WINDOW_SECONDS / 3600:g} h of static scene ({hour} windows; noise 30, h264,"
          " light 0.75 -> 1.25)")
    for width, height in resolutions[:2]:
        run = static_run(Setup(width, height, 30.0, "h264", gop=args.gop), hour, folder)
        print(f"{width}x{height:<4} | {run.analysed} false window(s)  {'; '.join(run.reasons)}", flush=True)

    print(f"\n{'resolution':>10} {'step':>8} | windows analysed because of it (noise 8, h264; at most 1 wanted)")
    for width, height in resolutions:
        for step in ("exposure", "ir", "day"):
            run = static_run(Setup(width, height, 8.0, "h264", gop=args.gop), 10, folder, step=step)
            print(f"{width}x{height:<4} {step:>8} | {run.analysed}  {'; '.join(run.reasons)}", flush=True)

    print_keyframes(resolutions, max(noises), [int(g) for g in args.keyframe_gops.split(",")], static_windows, folder)

    print(f"\n{'resolution':>10} | {'gate ms/window':>14} | {'old gate ms/window':>18}")
    for width, height in resolutions:
        new, old = cpu_ms(width, height)
        print(f"{width}x{height:<4} | {new:>14.1f} | {old:>18.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
