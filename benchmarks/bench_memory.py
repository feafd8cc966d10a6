"""Peak anonymous memory of the daemon with two 1080p cameras: video files and RTSP streams.

    python benchmarks/bench_memory.py [--seconds 60] [--npu-speedup 8] [--before REV] [--full-frames]
                                      [--kv copied|resident] [--quick]

Runs the real daemon (`daemon.service.build.assemble`, the sources as
`build_app` opens them) against the full-size InternVL3-2B fake: 28 layer
graphs, post graph and ViT with the real shapes (`fullsize.py`) that compute
nothing and return fresh zeros, paced at the published AX650N cost divided by
`--npu-speedup`, the 151674 x 1536 embedding table memory-mapped, and a
tokenizer with the real Qwen2 vocabulary loaded by the daemon's own loader
(its parsed tables are ~40 MiB of the total). Every window is analysed (gate
off): a 16-token description each.

Both KV paths run (`--kv` for one): "copied" feeds whole caches to every
call, as the NPU runtime's `run()` takes them; "resident" keeps them in the
runtime's buffers. Those buffers are a file mapping here (`MappedBuffers`):
on a board they are CMM or the M.2 card's memory, no anonymous memory of the
process, and the runtime allocates them whichever path the engine takes.
`--quick` is the smallest case (8 s files, the NPU 40x faster; under a minute
on an idle machine), run by tests/test_benchmarks.py.

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
KV_PATHS = ("copied", "resident")
QUICK_SECONDS, QUICK_SPEEDUP = 8.0, 40.0


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


def rss_anon_mib(field: str = "RssAnon") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


class MappedBuffers:
    """A session's persistent input and output buffers, outside the process's anonymous memory.

    On a board pyaxengine allocates one CMM buffer per input and output at load (AX_SYS_MemAllocCached on
    the SoC: a device mapping, not RssAnon; on the M.2 card they are the card's memory), whichever KV path
    the engine takes. Here they are one shared file mapping per session, so that RssAnon counts what
    vlmwatch itself holds, as on the board; RssFile/RssShmem grow by these instead."""

    def __init__(self, folder: Path, name: str, inputs, outputs):
        sizes = [max(g[i].nbytes for g in inputs) for i in range(len(inputs[0]))]
        out_sizes = [max(g[i].nbytes for g in outputs) for i in range(len(outputs[0]))]
        arena = np.memmap(folder / f"buffers-{name}", np.uint8, "w+", shape=(sum(sizes + out_sizes),))
        edges = np.cumsum([0, *sizes, *out_sizes])
        views = [arena[a:b] for a, b in zip(edges[:-1], edges[1:])]
        self._in, self._out = views[:len(sizes)], views[len(sizes):]

    def input_size(self, i: int) -> int:
        return self._in[i].size

    def output_size(self, i: int) -> int:
        return self._out[i].size

    def write_input(self, i: int, offset: int, data: np.ndarray) -> None:
        self._in[i][offset:offset + data.size] = data

    def execute(self, group: int) -> None:
        pass

    def read_output(self, i: int, nbytes: int) -> np.ndarray:
        return np.array(self._out[i][:nbytes])  # copied out into memory the caller owns, as run() does


class FakeGraph:
    """A full-size graph that computes nothing, with the declared ports of `fullsize.py` and a runtime's
    persistent buffers (`MappedBuffers`). `run()` does what pyaxengine's does with them: every feed is
    checked and copied into its input buffer, and the outputs come back as fresh arrays (zeros) copied out
    of the output buffers; `resident()` keeps the KV cache in those buffers (daemon/engine/resident.py).
    Each call takes the modelled AX650N time / `speedup`."""

    def __init__(self, name: str, inputs, outputs, role: str, meter, speedup: float, folder: Path):
        self.name, self._inputs, self._outputs, self.group_count = name, inputs, outputs, len(inputs)
        self.role, self.meter, self.speedup = role, meter, speedup
        self._index = {p.name: i for i, p in enumerate(inputs[0])}
        self._buffers = MappedBuffers(folder, name, inputs, outputs)

    def inputs(self, group=0):
        return self._inputs[group]

    def outputs(self, group=0):
        return self._outputs[group]

    def run(self, feeds, group=0):
        from daemon.engine.sessions import check_feeds

        t0 = time.perf_counter()
        check_feeds(self.name, self._inputs[group], feeds, group)
        for name, array in feeds.items():
            self._buffers.write_input(self._index[name], 0, np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        out = [self._buffers.read_output(i, p.nbytes).view(p.dtype).reshape(p.shape)
               for i, p in enumerate(self._outputs[group])]
        self._pace(group, t0)
        return out

    def resident(self, names, pinned=True):
        from daemon.engine.resident import ResidentInputs

        return PacedResident(self, ResidentInputs(self.name, self._buffers, self._inputs, self._outputs, names))

    def _pace(self, group: int, t0: float) -> None:
        from daemon.engine.costs import modelled_ms

        cost = modelled_ms(self.role, group)
        self.meter.add(self.role, group, cost)
        time.sleep(max(0.0, cost / 1000 / self.speedup - (time.perf_counter() - t0)))


class PacedResident:
    """The resident session of a FakeGraph: its calls take the modelled time too."""

    def __init__(self, graph: FakeGraph, inner):
        self.graph, self.inner, self.names = graph, inner, inner.names

    def write(self, name, row, rows):
        return self.inner.write(name, row, rows)

    def run(self, feeds, group):
        t0 = time.perf_counter()
        out = self.inner.run(feeds, group)
        self.graph._pace(group, t0)
        return out


def engine(embeddings: Path, tokenizer: Path, folder: Path, speedup: float, kv: str):
    from fullsize import BF16, F32, HIDDEN, IMAGE, IMAGE_TOKENS, LAYERS, VOCAB, layer_ports

    from daemon.engine.bundle import Model, load_embeddings, load_tokenizer
    from daemon.engine.engine import Engine
    from daemon.engine.sessions import Meter, Port

    meter = Meter()
    ins, outs = layer_ports()
    layers = [FakeGraph(f"l{i}", ins, outs, "layer", meter, speedup, folder) for i in range(LAYERS)]
    post = FakeGraph("post", [[Port("input", (1, 1, HIDDEN), BF16)]], [[Port("logits", (1, 1, VOCAB), F32)]],
                     "post", meter, speedup, folder)
    vit = FakeGraph("vit", [[Port("image", (1, 3, IMAGE, IMAGE), F32)]],
                    [[Port("features", (1, IMAGE_TOKENS, HIDDEN), BF16)]], "vit", meter, speedup, folder)
    model = Model("InternVL3-2B (full-size fake)", layers, post, vit, load_embeddings(embeddings, HIDDEN),
                  load_tokenizer(tokenizer), meter)
    eng = Engine(model, system=SYSTEM, max_new_tokens=16, kv=kv)
    if eng.kv_path != kv:
        raise RuntimeError(f"asked for the {kv} KV path, the engine took {eng.kv_path}")
    return eng


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
    run_dir = Path(args.tmp) / f"run-{os.getpid()}"  # its own state (files already read), history and buffers
    run_dir.mkdir()
    cfg = Config.model_validate({
        "model": {"dir": "unused"}, "state_dir": str(run_dir), "metrics": {"enabled": False},
        "prompts": {"max_new_tokens": 16},
        "cameras": [{"name": f"cam{i}", "source": uri, **camera} for i, uri in enumerate(args.uris)]})
    eng = engine(Path(args.tmp) / "embed.npy", Path(args.tmp) / "tokenizer", run_dir, args.npu_speedup, args.kv)
    if hasattr(build, "release_heap"):
        build.release_heap()  # as build_app does once the model is open
    if hasattr(build, "open_sources"):
        sources = build.open_sources(cfg, None if args.full_frames else eng, once=True)
    else:  # the code before frames kept reduced copies
        from daemon.video import open_source

        sources = {c.name: open_source(c.name, c.source, c, state_dir=cfg.state_dir, once=True) for c in cfg.cameras}
    peak, shmem, done = [0.0], [0.0], threading.Event()

    def sample() -> None:  # RssShmem too: anonymous memory mapped shared would not show as RssAnon
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_anon_mib())
            shmem[0] = max(shmem[0], rss_anon_mib("RssShmem"))

    with History(run_dir / "history.sqlite").open() as history:
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
    shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps({"baseline": baseline, "peak": max(peak[0], baseline), "shmem": shmem[0],
                      "analysed": sum(w.analysed for w in windows), "windows": len(windows)}))


# ----------------------------------------------------------------------------- driver


def run_child(tree: Path, kind: str, kv: str, uris: list[str], tmp: Path, args, full_frames: bool = False) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--tree", str(tree), "--kind", kind,
           "--tmp", str(tmp), "--seconds", str(args.seconds), "--npu-speedup", str(args.npu_speedup),
           "--kv", kv, *(["--full-frames"] if full_frames else []), "--camera", args.camera if tree == ROOT else "{}",
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
    ap.add_argument("--kv", choices=KV_PATHS, action="append",
                    help="KV cache path(s) to run: copied (fed whole with every call), resident (kept in the"
                         " runtime's buffers); default both")
    ap.add_argument("--quick", action="store_true",
                    help=f"the smallest case: video files of {QUICK_SECONDS:g} s, NPU {QUICK_SPEEDUP:g}x faster,"
                         " both KV paths (under a minute)")
    ap.add_argument("--camera", default="{}", metavar="JSON",
                    help="more camera settings for this tree's runs, e.g. '{\"decode_threads\": 1}'")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", default=str(ROOT), help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--uris", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.kv = args.kv[0]
        child(args)
        return 0
    if not shutil.which("gst-launch-1.0"):
        print("bench_memory needs GStreamer (gst-launch-1.0 with x264) for the clips and the RTSP servers")
        return 1
    if args.quick:
        args.seconds, args.npu_speedup, args.only = QUICK_SECONDS, QUICK_SPEEDUP, "files"
    kinds = [args.only] if args.only else ["files", "rtsp"]
    kv_paths = args.kv or list(KV_PATHS)
    servers: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="vlmwatch-mem-") as tmp_name:
        tmp = Path(tmp_name)
        sys.path.insert(0, str(BENCH))
        from fullsize import HIDDEN, VOCAB

        from fullsize import write_real_tokenizer

        np.lib.format.open_memmap(tmp / "embed.npy", "w+", np.float32, (VOCAB, HIDDEN)).flush()  # sparse
        tokenizer = write_real_tokenizer(tmp / "tokenizer")
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
                  f"16-token descriptions; NPU {args.npu_speedup:g}x faster than an AX650N; {args.seconds:.0f} s;"
                  f" tokenizer: {tokenizer}")
            print(f"{'code':34} {'sources':8} {'KV':9} {'after load':>11} {'peak':>9} {'growth':>9} "
                  f"{'windows':>16} {'shmem':>7}")
            for kind in kinds:
                for kv in kv_paths:
                    for label, tree, full in trees:
                        r = run_child(tree, kind, kv, uris[kind], tmp, args, full)
                        print(f"{label:34} {kind:8} {kv:9} {r['baseline']:8.0f} MiB {r['peak']:5.0f} MiB "
                              f"{r['peak'] - r['baseline']:5.0f} MiB {r['analysed']:4d} of {r['windows']:3d} "
                              f"analysed {r['shmem']:3.0f} MiB", flush=True)
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(10)
    print("peak = largest RssAnon of the whole daemon process (KV cache, engine, sources, queues);"
          " goal: under 300 MiB. shmem = largest RssShmem (anonymous memory mapped shared would hide there);"
          " the runtime's own buffers (CMM on a board) are file mappings here, in neither")
    return 0


if __name__ == "__main__":
    sys.exit(main())
