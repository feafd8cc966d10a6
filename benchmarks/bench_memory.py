"""Peak anonymous memory of the daemon with two 1080p cameras: video files and RTSP streams.

    python benchmarks/bench_memory.py [--seconds 60] [--npu-speedup 8] [--before REV] [--full-frames]

Runs the real daemon (`daemon.service.build.assemble`, the sources as
`build_app` opens them) against the full-size InternVL3-2B fake: 28 layer
graphs, post graph and ViT with the real shapes (`fullsize.py`) that compute
nothing and return fresh zeros, paced at the published AX650N cost divided by
`--npu-speedup`, the 151674 x 1536 embedding table memory-mapped. Every
window is analysed (gate off): a 16-token description each.

Two cameras, 1080p at 10 fps, span = stride = 4 s, 8 frames:

- files: two generated H.264 clips (x264 through gst-launch-1.0) of
  `--seconds`, read to their end (a recording waits for the NPU);
- rtsp: two GStreamer RTSP servers (`tests/rtsp_server.py`, x264) looping
  1080p pictures, watched for `--seconds` (the NPU is slower than the two
  cameras, so windows queue and are dropped, as on a board).

Each run is a fresh process whose RssAnon (/proc/self/status) a thread samples
every 20 ms; the table shows it after the model is loaded (before the sources
start) and its peak. `--before REV` runs the same against the code of a git
revision (extracted with `git archive`) side by side; `--full-frames` also
runs this tree with frames kept at full resolution (`picture_width: 0`, no
pre-resized model input), to separate the reader from the frames.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WIDTH, HEIGHT, FPS = 1920, 1080, 10
SYSTEM = "You watch a home camera."


# ----------------------------------------------------------------------------- inputs


def camera_frames(count: int, seed: int):
    """A static textured scene with sensor noise and a person-sized block walking across."""
    sys.path.insert(0, str(ROOT / "tests"))
    from clips import background

    rng = np.random.default_rng(seed)
    base = background(WIDTH, HEIGHT, seed=seed).astype(np.int16)
    noise = [rng.normal(0, 3, size=(HEIGHT, WIDTH, 1)).astype(np.int16) for _ in range(4)]
    for i in range(count):
        frame = base + noise[i % len(noise)]
        x = (i * 9) % (WIDTH - 180)
        frame[450:930, x:x + 180] = (60, 80, 170)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_h264(path: Path, seconds: float, seed: int) -> None:
    cmd = ["gst-launch-1.0", "-q", "fdsrc", "fd=0", "!", "rawvideoparse", f"width={WIDTH}", f"height={HEIGHT}",
           "format=bgr", f"framerate={FPS}/1", "!", "videoconvert", "!", "x264enc", "speed-preset=ultrafast",
           f"key-int-max={2 * FPS}", "bitrate=4000", "!", "h264parse", "!", "mp4mux", "!", "filesink",
           f"location={path}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for frame in camera_frames(round(seconds * FPS), seed):
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("gst-launch-1.0 failed to encode H.264; is gstreamer1.0-plugins-ugly (x264) installed?")


def write_jpegs(folder: Path, seed: int) -> Path:
    import cv2

    folder.mkdir(parents=True)
    for i, frame in enumerate(camera_frames(10 * FPS, seed)):  # a 10 s loop
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return folder


def start_rtsp(frames: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(["/usr/bin/python3", str(ROOT / "tests" / "rtsp_server.py"), "--frames", str(frames),
                             "--fps", str(FPS), "--kbps", "4000"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if line[:1] != ["READY"]:
        proc.kill()
        raise RuntimeError(f"the RTSP server did not start: {line}")
    return proc, f"rtsp://127.0.0.1:{line[1]}/cam"


# ----------------------------------------------------------------------------- one run (child process)


def rss_anon_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class FakeGraph:
    """A full-size graph that computes nothing: the declared ports of `fullsize.py`, feeds checked, fresh
    zeros returned per call as the NPU runtime returns fresh arrays (NullSession keeps 45 MiB of outputs
    allocated, which no runtime does). It takes the modelled AX650N time of each call / `speedup`."""

    def __init__(self, name: str, inputs, outputs, role: str, meter, speedup: float):
        self.name, self._inputs, self._outputs, self.group_count = name, inputs, outputs, len(inputs)
        self.role, self.meter, self.speedup = role, meter, speedup

    def inputs(self, group=0):
        return self._inputs[group]

    def outputs(self, group=0):
        return self._outputs[group]

    def run(self, feeds, group=0):
        from daemon.engine.sessions import check_feeds, modelled_ms

        t0 = time.perf_counter()
        check_feeds(self.name, self._inputs[group], feeds, group)
        cost = modelled_ms(self.role, group)
        self.meter.add(self.role, group, cost)
        time.sleep(max(0.0, cost / 1000 / self.speedup - (time.perf_counter() - t0)))
        return [np.zeros(p.shape, p.dtype) for p in self._outputs[group]]


def engine(embeddings: Path, speedup: float):
    from fullsize import BF16, F32, HIDDEN, IMAGE, IMAGE_TOKENS, LAYERS, VOCAB, layer_ports

    from daemon.engine.bundle import Model, load_embeddings
    from daemon.engine.engine import Engine
    from daemon.engine.export.tiny import build_tokenizer
    from daemon.engine.sessions import Meter, Port

    meter = Meter()
    ins, outs = layer_ports()
    layers = [FakeGraph(f"l{i}", ins, outs, "layer", meter, speedup) for i in range(LAYERS)]
    post = FakeGraph("post", [[Port("input", (1, 1, HIDDEN), BF16)]], [[Port("logits", (1, 1, VOCAB), F32)]],
                     "post", meter, speedup)
    vit = FakeGraph("vit", [[Port("image", (1, 3, IMAGE, IMAGE), F32)]],
                    [[Port("features", (1, IMAGE_TOKENS, HIDDEN), BF16)]], "vit", meter, speedup)
    model = Model("InternVL3-2B (full-size fake)", layers, post, vit, load_embeddings(embeddings, HIDDEN),
                  build_tokenizer(), meter)
    return Engine(model, system=SYSTEM, max_new_tokens=16)


def child(args) -> None:
    sys.path[:0] = [str(Path(args.tree).resolve()), str(BENCH)]
    from daemon.config import Config
    from daemon.config.cameras import SourceSettings
    from daemon.service import build
    from daemon.state.history import History

    new_frames = "picture_width" in SourceSettings.model_fields
    if hasattr(build, "return_freed_memory"):
        build.return_freed_memory()  # as build_app does
    camera = {"span": 4, "stride": 4, "frames": 8, "gate": {"enabled": False}}
    if new_frames and args.full_frames:
        camera["picture_width"] = 0
    camera.update(json.loads(args.camera))
    cfg = Config.model_validate({
        "model": {"dir": "unused"}, "state_dir": args.tmp, "metrics": {"enabled": False},
        "prompts": {"max_new_tokens": 16},
        "cameras": [{"name": f"cam{i}", "source": uri, **camera} for i, uri in enumerate(args.uris)]})
    eng = engine(Path(args.tmp) / "embed.npy", args.npu_speedup)
    if hasattr(build, "open_sources"):
        sources = build.open_sources(cfg, None if args.full_frames else eng, once=True)
    else:  # the code before frames kept reduced copies
        from daemon.video import open_source

        sources = {c.name: open_source(c.name, c.source, c, state_dir=cfg.state_dir, once=True) for c in cfg.cameras}
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_anon_mib())

    with History(Path(args.tmp) / f"history-{os.getpid()}.sqlite").open() as history:
        app = build.assemble(cfg, eng, sources, history)
        baseline = rss_anon_mib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if args.kind == "rtsp":
            threading.Timer(args.seconds, app.stop.set).start()
        app.run(once=args.kind == "files")
        done.set()
        sampler.join()
        windows = history.windows(0, time.time() + 1)
    print(json.dumps({"baseline": baseline, "peak": max(peak[0], baseline),
                      "analysed": sum(w.analysed for w in windows), "windows": len(windows)}))


# ----------------------------------------------------------------------------- driver


def run_child(tree: Path, kind: str, uris: list[str], tmp: Path, args, full_frames: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", str(tree), "--kind", kind,
           "--tmp", str(tmp), "--seconds", str(args.seconds), "--npu-speedup", str(args.npu_speedup),
           *(["--full-frames"] if full_frames else []), "--camera", args.camera if tree == ROOT else "{}",
           "--uris", *uris]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30 * args.seconds + 600)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "daemon"], capture_output=True, check=True)
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="clip length and RTSP watch time (default 60)")
    ap.add_argument("--npu-speedup", type=float, default=8.0,
                    help="run the modelled NPU this many times faster than an AX650N (default 8)")
    ap.add_argument("--before", metavar="REV", help="also run the code of this git revision, side by side")
    ap.add_argument("--full-frames", action="store_true", help="also run this tree with full-resolution frames")
    ap.add_argument("--only", choices=("files", "rtsp"), help="one kind of source only")
    ap.add_argument("--camera", default="{}", metavar="JSON",
                    help="more camera settings for this tree's runs, e.g. '{\"decode_threads\": 1}'")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--uris", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not shutil.which("gst-launch-1.0"):
        print("bench_memory needs GStreamer (gst-launch-1.0 with x264) for the clips and the RTSP servers")
        return 1
    kinds = [args.only] if args.only else ["files", "rtsp"]
    servers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="vlmwatch-mem-") as tmp_name:
        tmp = Path(tmp_name)
        sys.path.insert(0, str(BENCH))
        from fullsize import HIDDEN, VOCAB

        np.lib.format.open_memmap(tmp / "embed.npy", "w+", np.float32, (VOCAB, HIDDEN)).flush()  # sparse
        uris = {}
        try:
            if "files" in kinds:
                uris["files"] = []
                for seed in (0, 1):
                    write_h264(tmp / f"cam{seed}.mp4", args.seconds, seed)
                    uris["files"].append(str(tmp / f"cam{seed}.mp4"))
            if "rtsp" in kinds:
                uris["rtsp"] = []
                for seed in (0, 1):
                    proc, uri = start_rtsp(write_jpegs(tmp / f"jpegs{seed}", seed))
                    servers.append(proc)
                    uris["rtsp"].append(uri)
            trees = [("now", ROOT, False)]
            if args.full_frames:
                trees.append(("now, full-resolution frames", ROOT, True))
            if args.before:
                trees.insert(0, (f"before ({args.before})", extract(args.before, tmp / "before"), False))
            print(f"two 1080p cameras at {FPS} fps, span = stride = 4 s, 8 frames, every window analysed, "
                  f"16-token descriptions; NPU {args.npu_speedup:g}x faster than an AX650N; {args.seconds:.0f} s")
            print(f"{'code':34} {'sources':8} {'after load':>11} {'peak':>9} {'growth':>9} {'windows':>16}")
            for kind in kinds:
                for label, tree, full in trees:
                    r = run_child(tree, kind, uris[kind], tmp, args, full)
                    print(f"{label:34} {kind:8} {r['baseline']:8.0f} MiB {r['peak']:5.0f} MiB "
                          f"{r['peak'] - r['baseline']:5.0f} MiB {r['analysed']:4d} of {r['windows']:3d} analysed",
                          flush=True)
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(10)
    print("peak = largest RssAnon of the whole daemon process (KV cache, engine, sources, queues);"
          " goal: under 300 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
