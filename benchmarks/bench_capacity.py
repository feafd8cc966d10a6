"""Cameras per AX650N board, counting the CPU: capture, host work per window, the NPU, in one run.

    python benchmarks/bench_capacity.py [--seconds 16] [--changed 0.02] [--target 0.9] [--a55 5]

1. Capture CPU per camera, measured here on generated H.264 clips (x264, GOP 2 s) read by the daemon's
   own capture thread (`StreamSource`, frames stamped by a media clock): a 1080p25 camera whose gate
   reads the main stream; a 640x360 25 fps camera; a camera with a 640x360 substream for the gate and
   its 1080p main stream kept as packets (`StreamFrames`: demuxed, not decoded; the GOP of a window that
   passes is decoded then, counted at the `--changed` share); a 1080p25 camera with `stream.gate_decode:
   keyframes` (the daemon's capture thread decoding keyframes only, its packets kept by a second
   connection, a passed window decoded from them), and the same done by bare FFmpeg calls for comparison. Shown as a share of one core here and of the
   board's 8 Cortex-A55 cores, taking one A55 core as 1/`--a55` of a core of this machine (4-6).
2. NPU seconds per window from the call census of one window (the default description, 64 tokens,
   and two yes/no rules) through the real engine on full-size sessions that compute nothing
   (benchmarks/fullsize.py), prompts counted with Qwen2's real tokenizer (realtok.py), every call
   priced by the AX650N cost model (daemon/engine/sessions.py).
3. Host CPU per window on the NPU worker thread (its thread CPU time over that window: normalising
   frames, embedding lookups, copies), here and scaled to an A55.
4. Cameras per board: each camera's analysed windows are a renewal process (a window is analysed
   when the gate sees a change, with probability `--changed`, or when the heartbeat has passed since
   the last analysed one), so the mean gap between analysed windows is stride x E[min(G, h)] with G
   geometric and h = heartbeat / stride; cameras = target load x mean gap / worker seconds per window,
   and at most what the capture CPU left after the worker's host work allows.

The machine's load is checked before and after: other processes make these figures vary 3-6x here,
so a loaded run says so.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from clips import background, write_h264  # noqa: E402
from fullsize import HIDDEN, VOCAB, sessions  # noqa: E402
from realtok import qwen_tokenizer  # noqa: E402

from daemon.config.cameras import GateSettings, SourceSettings  # noqa: E402
from daemon.engine.bundle import Model, load_embeddings  # noqa: E402
from daemon.engine.engine import Engine  # noqa: E402
from daemon.engine.sessions import Meter  # noqa: E402
from daemon.types import Frame, Prompt  # noqa: E402
from daemon.video.decoders import KEYFRAMES_ONLY, open_capture  # noqa: E402
from daemon.video.stream import StreamSource  # noqa: E402

FPS, GOP_S = 25, 2
BOARD_CORES = 8  # Cortex-A55 on the AX650N
PROMPTS = [Prompt("person", "Is a person at the door? Answer yes or no.", ("yes", "no")),
           Prompt("package", "Is a package left? Answer yes or no.", ("yes", "no")),
           Prompt("description", "Describe what happens in the video.", max_new_tokens=64)]


@dataclass(frozen=True)
class Capture:
    name: str
    cpu_per_window: float  # CPU seconds of this machine per 8-s window of video


def load_note() -> str | None:
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cores:
        return (f"WARNING: the machine is loaded (1-min load {load:.1f} on {cores} CPUs): capture and host figures "
                "can be 3-6x off; run again on an idle machine before quoting them")
    return None


def camera(seconds: float, width: int, height: int):
    rng = np.random.default_rng(0)
    base = background(width, height, seed=0).astype(np.int16)
    noise = [rng.normal(0, 3, size=(height, width, 1)).astype(np.int16) for _ in range(4)]
    size = max(8, height // 6)
    for i in range(round(seconds * FPS)):
        frame = base + noise[i % len(noise)]
        x = (i * width // 200) % (width - size)
        frame[height // 3: height // 3 + size, x: x + size] = (60, 80, 170)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def clip(folder: Path, seconds: float, width: int, height: int) -> Path:
    return write_h264(folder / f"{width}x{height}.mp4", camera(seconds, width, height), FPS, quantizer=30,
                      gop=GOP_S * FPS)


def gate_stream(path: Path, settings: SourceSettings) -> int:
    """The capture thread on a clip, once through (what the daemon does with a camera); windows made.
    Frames are stamped by the clip's media clock: one frame per grab, or one GOP per grab when the
    gate decodes keyframes only."""
    stop = threading.Event()

    def on_event(event) -> None:
        if event.kind in ("lost", "error"):
            stop.set()

    ticks = itertools.count()
    step = GOP_S if settings.stream.gate_decode == "keyframes" else 1 / FPS
    source = StreamSource("bench", str(path), settings, on_event=on_event, clock=lambda: next(ticks) * step)
    return sum(1 for _ in source.windows(stop))


def demux_only(path: Path) -> int:
    """The main stream as `StreamFrames` keeps it: packets read, nothing decoded."""
    import cv2

    capture, packets = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1]), 0
    while True:
        ok, data = capture.read()
        if not ok:
            break
        packets += data is not None
    capture.release()
    return packets


def decode_window(path: Path, seconds: float = 8.0 + GOP_S) -> int:
    """Decoding a window that passed from packets: one GOP before it plus the window, every frame."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG), 0
    while frames < seconds * FPS and capture.grab():
        frames += 1
    capture.release()
    return frames


def cpu(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def keyframes_only(path: Path) -> int:
    """Every keyframe decoded and converted, nothing else: FFmpeg's skip_frame = AVDISCARD_NONKEY
    ("avdiscard;nonkey", for this capture only), without the daemon's windows and frames around it."""
    capture, frames = open_capture(str(path), (), (KEYFRAMES_ONLY,)), 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames += image is not None
    capture.release()
    return frames


def captures(folder: Path, seconds: float, changed: float) -> list[Capture]:
    full, small = clip(folder, seconds, 1920, 1080), clip(folder, seconds, 640, 360)
    windows = seconds / 8.0
    settings = SourceSettings()
    main_packets = cpu(lambda: demux_only(full)) / windows
    passed = changed * cpu(lambda: decode_window(full))
    rows = [Capture("1080p25, the gate reads the main stream", cpu(lambda: gate_stream(full, settings)) / windows),
            Capture("640x360 25 fps camera", cpu(lambda: gate_stream(small, settings)) / windows)]
    rows.append(Capture("substream 640x360 + 1080p main as packets", rows[1].cpu_per_window + main_packets + passed))
    rows.append(Capture("(bare FFmpeg) 1080p25 keyframes only + window decode", cpu(lambda: keyframes_only(full))
                        / windows + main_packets + passed))
    keyed = SourceSettings.model_validate({"stream": {"gate_decode": "keyframes"}})
    rows.append(Capture("1080p25, gate_decode: keyframes (+ packets, passed)", cpu(lambda: gate_stream(full, keyed))
                        / windows + main_packets + passed))
    return rows


@dataclass(frozen=True)
class Census:
    npu_s: float
    host_cpu_s: float  # on the worker thread, this machine
    prefix_tokens: int
    calls: dict


def census() -> Census:
    """One window through the engine on full-size sessions; the worker thread's CPU time for it."""
    meter, tokenizer = Meter(), qwen_tokenizer()
    rng = np.random.default_rng(0)
    frames = [Frame("cam", float(i), i, rng.integers(0, 255, (360, 640, 3), np.uint8),
                    rng.integers(0, 255, (448, 448, 3), np.uint8)) for i in range(16)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (VOCAB, HIDDEN)).flush()
        layers, post, vit = sessions(meter)
        model = Model("InternVL3-2B (modelled)", layers, post, vit, load_embeddings(path, HIDDEN), tokenizer, meter)
        engine = Engine(model, kv="resident")
        engine.ask(frames[8:], PROMPTS)  # warm up (first calls allocate); then one window measured
        meter.calls.clear()
        ms, started = meter.ms, time.thread_time()
        analysis = engine.ask(frames[:8], PROMPTS)
        host = time.thread_time() - started
        return Census((meter.ms - ms) / 1000, host, analysis.prefix_tokens, dict(meter.calls))


def analysed_gap(changed: float, stride: float, heartbeat: float) -> float:
    """Mean seconds between a camera's analysed windows: a renewal process (see the module's docstring)."""
    h = max(1, round(heartbeat / stride))
    windows = h if changed <= 0 else (1 - (1 - changed) ** h) / changed  # E[min(G, h)], G ~ geometric(changed)
    return stride * windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=16.0, help="length of the generated clips (default 16)")
    ap.add_argument("--changed", type=float, default=0.02, help="share of windows the gate passes (default 0.02)")
    ap.add_argument("--target", type=float, default=0.9, help="NPU worker load to plan for (default 0.9)")
    ap.add_argument("--a55", type=float, default=5.0, help="cores of this machine's speed one A55 core is worth^-1")
    ap.add_argument("--smoke", action="store_true", help="the smallest case: 8-s clips (for the test suite)")
    args = ap.parse_args(argv)
    seconds = 8.0 if args.smoke else args.seconds
    logging.getLogger("daemon").setLevel(logging.ERROR)
    before = load_note()
    with tempfile.TemporaryDirectory(prefix="vlmwatch-capacity-") as tmp:
        rows = captures(Path(tmp), seconds, args.changed)
    c = census()
    after = load_note()
    stride, heartbeat = SourceSettings().stride, GateSettings().heartbeat
    print(f"capture CPU per camera ({seconds:.0f}-s clips, x264 GOP {GOP_S} s; a window passes "
          f"{100 * args.changed:g} % of the time; one A55 core = 1/{args.a55:g} core here):")
    print(f"  {'':52}{'CPU s/window':>13}{'% core here':>13}{'% of 8 A55':>12}")
    for r in rows:
        here = r.cpu_per_window / 8.0
        print(f"  {r.name:52}{r.cpu_per_window:13.3f}{100 * here:13.1f}{100 * here * args.a55 / BOARD_CORES:12.1f}")
    groups = sorted(g for (role, g) in c.calls if role == "layer" and g > 0)
    chunks = ", ".join(f"g{g} x{c.calls[('layer', g)] // 28}" for g in groups)
    print(f"\nNPU per window (call census, Qwen2 tokenizer: {c.prefix_tokens}-token prefix; 2 yes/no + 64-token "
          f"description): ViT runs {c.calls.get(('vit', 0), 0)}, prefill chunks {chunks}, decode steps "
          f"{c.calls.get(('layer', 0), 0) // 28}, post calls {c.calls.get(('post', 0), 0)}: {c.npu_s:.2f} s modelled")
    host_a55 = c.host_cpu_s * args.a55
    print(f"host CPU per window on the worker thread: {c.host_cpu_s:.3f} s here, ~{host_a55:.2f} s on an A55"
          " (the next frame's ViT input is made on a helper thread while the ViT runs)")
    worker_s = c.npu_s + host_a55
    gap = analysed_gap(args.changed, stride, heartbeat)
    npu_cameras = args.target * gap / worker_s
    print(f"\ncameras per board at {100 * args.changed:g} % change (stride {stride:g} s, heartbeat {heartbeat:g} s: "
          f"an analysed window every {gap:.0f} s per camera), worker load target {100 * args.target:.0f} %:")
    print(f"  NPU worker: {worker_s:.1f} s per window ({c.npu_s:.1f} NPU + {host_a55:.1f} host) -> "
          f"{npu_cameras:.1f} cameras (worker utilisation {100 * args.target:.0f} %)")
    print(f"  {'capture':52}{'CPU cameras':>12}{'per board':>11}")
    for r in rows:
        worker_cores = npu_cameras * host_a55 / gap  # A55 cores the worker's host work takes at that load
        share = r.cpu_per_window / 8.0 * args.a55  # A55 cores one camera's capture takes
        cpu_cameras = (BOARD_CORES - min(worker_cores, 1.0)) / share
        print(f"  {r.name:52}{cpu_cameras:12.1f}{min(cpu_cameras, npu_cameras):11.1f}")
    for note in dict.fromkeys(n for n in (before, after) if n):
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
