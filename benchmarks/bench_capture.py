"""CPU cost of capture: the capture thread at default window settings vs decoding every frame to RGB.

    python benchmarks/bench_capture.py [--seconds 60] [--repeat 2]

Generates a 1280x720 25 fps H.264 clip (x264 through gst-launch-1.0, as a
camera would send; MPEG-4 part 2 through OpenCV if GStreamer is missing) in a
temporary folder, then measures, in this process and side by side:

- capture: `StreamSource`'s capture thread reading the clip through OpenCV's
  FFmpeg backend exactly as it reads a camera: every frame grabbed (demuxed
  and decoded, which H.264 needs anyway), only the 8 frames per 8 s window
  converted to pictures. Frame stamps come from a media clock instead of the
  wall clock so that the clip can be read faster than real time.
- every frame to RGB: the naive loop, `read()` every frame and convert it to
  RGB, as a demo that keeps the latest frame would.
- file source: `FileSource` (OpenCV, read forward) on the same clip, default windows, for files.

Each figure is process CPU time (all threads, FFmpeg's included) divided by
minutes of video; runs alternate and the lowest of `--repeat` is reported to
damp noise from other processes on the machine.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from clips import background  # noqa: E402

from daemon.config.cameras import SourceSettings
from daemon.video.file import FileSource  # noqa: E402
from daemon.video.stream import StreamSource  # noqa: E402

WIDTH, HEIGHT, FPS = 1280, 720, 25


def camera_frames(seconds: float):
    """A static textured scene with sensor noise and a person-sized block walking across."""
    rng = np.random.default_rng(0)
    base = background(WIDTH, HEIGHT, seed=0).astype(np.int16)
    noise = [rng.normal(0, 3, size=(HEIGHT, WIDTH, 1)).astype(np.int16) for _ in range(8)]
    for i in range(round(seconds * FPS)):
        frame = base + noise[i % len(noise)]
        x = (i * 6) % (WIDTH - 120)
        frame[300:620, x : x + 120] = (60, 80, 170)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_h264(path: Path, seconds: float) -> str:
    cmd = [
        "gst-launch-1.0", "-q", "fdsrc", "fd=0",
        "!", "rawvideoparse", f"width={WIDTH}", f"height={HEIGHT}", "format=bgr", f"framerate={FPS}/1",
        "!", "videoconvert", "!", "x264enc", "speed-preset=veryfast", f"key-int-max={2 * FPS}", "bitrate=4000",
        "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={path}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for frame in camera_frames(seconds):
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("gst-launch-1.0 failed to encode H.264")
    return "H.264 (x264 veryfast, 4 Mbit/s, GOP 2 s)"


def write_clip(path: Path, seconds: float) -> str:
    if shutil.which("gst-launch-1.0"):
        try:
            return write_h264(path, seconds)
        except (OSError, RuntimeError) as exc:
            print(f"(no H.264 encoder: {exc}; falling back to MPEG-4 part 2)", file=sys.stderr)
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for frame in camera_frames(seconds):
        writer.write(frame)
    writer.release()
    return "MPEG-4 part 2 (OpenCV mp4v)"


def cpu_of(run) -> tuple[float, int]:
    """Process CPU seconds (all threads) spent by `run`, and what it returned."""
    start = time.process_time()
    produced = run()
    return time.process_time() - start, produced


def capture_path(clip: Path, settings: SourceSettings) -> int:
    """The camera capture thread on the clip, once through; returns windows produced."""
    stop = threading.Event()

    def on_event(event) -> None:
        if event.kind in ("lost", "error"):  # end of the file: a camera would reconnect, we are done
            stop.set()

    ticks = itertools.count()
    source = StreamSource("bench", str(clip), settings, on_event=on_event, clock=lambda: next(ticks) / FPS)
    return sum(1 for _ in source.windows(stop))


def every_frame_rgb(clip: Path) -> int:
    import cv2

    capture, frames = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG), 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        frames += rgb.shape[0] > 0
    capture.release()
    return frames


def file_source(clip: Path, settings: SourceSettings) -> int:
    return sum(1 for _ in FileSource("bench", clip, settings).windows(threading.Event()))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the generated stream (default 60)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per mode; the lowest counts")
    args = parser.parse_args(argv)
    logging.getLogger("daemon").setLevel(logging.ERROR)  # "lost" at the end of the clip is expected
    settings = SourceSettings()  # span 8, stride 8, frames 8
    with tempfile.TemporaryDirectory(prefix="vlmwatch-bench-") as tmp:
        clip = Path(tmp) / "camera.mp4"
        started = time.monotonic()
        codec = write_clip(clip, args.seconds)
        print(f"clip: {WIDTH}x{HEIGHT} {FPS} fps, {args.seconds:.0f} s, {codec}; "
              f"{clip.stat().st_size / 2**20:.1f} MiB, made in {time.monotonic() - started:.0f} s")  # fmt: skip
        print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs; OpenCV FFmpeg threads: default")
        modes = {
            "capture thread, default windows (grab all, convert 8 per 8 s)": lambda: capture_path(clip, settings),
            "decode every frame to RGB": lambda: every_frame_rgb(clip),
            "file source, default windows": lambda: file_source(clip, settings),
        }
        best = {name: float("inf") for name in modes}
        produced = {}
        for _ in range(args.repeat):
            for name, run in modes.items():
                cpu, produced[name] = cpu_of(run)
                best[name] = min(best[name], cpu)
    minutes = args.seconds / 60.0
    print(f"\nCPU seconds per minute of stream (lowest of {args.repeat}):")
    units = ["windows", "frames", "windows"]
    for (name, cpu), unit in zip(best.items(), units):
        share = 100 * cpu / 60 / minutes
        print(f"  {name:64} {cpu / minutes:6.2f}   ({share:4.1f} % of one core; {produced[name]} {unit})")
    names = list(best)
    print(f"\ncapture / every-frame-RGB = {best[names[0]] / best[names[1]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
