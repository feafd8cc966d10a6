"""CPU cost of ONNX Runtime's thread pool: the same answers with each thread setting, side by side.

    python benchmarks/bench_ort_threads.py [--windows 3] [--repeat 2]

Builds the tiny random InternVL without torch (`make_demo_model`: 2 layers,
hidden 64, the onnxruntime backend's per-layer graphs) and answers the same
8-frame windows (a 16-token description each) with sessions opened:

- "ORT default": intra-op threads one per core, spinning allowed (what the
  daemon did before `model.threads`);
- threads 0, 1 and 2 without spinning (the daemon's settings; 1 is the default).

Each figure is process CPU seconds (every thread, ONNX Runtime's pool included)
and wall seconds for the same work; modes alternate and the lowest of
`--repeat` counts. The answers must be identical across modes (checked).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.engine.bundle import locate, manifest_ports, open_model  # noqa: E402
from daemon.engine.engine import Engine  # noqa: E402
from daemon.engine.export.tiny import make_demo_model  # noqa: E402
from daemon.engine.sessions import OnnxSession, ProfileSession  # noqa: E402
from daemon.types import Frame, Prompt  # noqa: E402

MODES = {"ORT default (one thread per core, spinning)": (0, True), "threads 0, no spinning": (0, False),
         "threads 1, no spinning (default)": (1, False), "threads 2, no spinning": (2, False)}
PROMPT = Prompt("description", "Describe what happens.", max_new_tokens=16)


def engine(bundle: Path, threads: int, spin: bool) -> Engine:
    files = locate(bundle)
    model = open_model(files, "onnxruntime", threads=threads)
    if spin:  # reopen every graph with ONNX Runtime's own defaults
        ports = manifest_ports(files)
        model.layers = [ProfileSession(OnnxSession(p, ports["layer"], 0, spin=True), "layer", model.meter)
                        for p in files.layers]
        model.post = ProfileSession(OnnxSession(files.post, ports["post"], 0, spin=True), "post", model.meter)
        model.vit = ProfileSession(OnnxSession(files.vit, ports["vit"], 0, spin=True), "vit", model.meter)
    return Engine(model, system="You watch a camera.")


def run(eng: Engine, windows: list[tuple[Frame, ...]]) -> tuple[float, float, list[str]]:
    cpu, wall = time.process_time(), time.perf_counter()
    texts = [eng.ask(frames, [PROMPT]).answers[0].text for frames in windows]
    return time.process_time() - cpu, time.perf_counter() - wall, texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=3, help="8-frame windows per run (default 3)")
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs per mode; the lowest counts")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    windows = [tuple(Frame("cam", float(8 * w + i), 8 * w + i, rng.integers(0, 255, (360, 640, 3), np.uint8))
                     for i in range(8)) for w in range(args.windows)]
    with tempfile.TemporaryDirectory(prefix="vlmwatch-ort-") as tmp:
        bundle = make_demo_model(Path(tmp) / "tiny", progress=lambda line: None)
        engines = {name: engine(bundle, *mode) for name, mode in MODES.items()}
        best = {name: (float("inf"), float("inf")) for name in MODES}
        texts = {}
        for _ in range(args.repeat):
            for name, eng in engines.items():
                cpu, wall, texts[name] = run(eng, windows)
                best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    if len({tuple(t) for t in texts.values()}) != 1:
        print("ERROR: the thread settings gave different answers", file=sys.stderr)
        return 1
    base = best[next(iter(MODES))][0]
    print(f"tiny InternVL (onnxruntime), {args.windows} windows of 8 frames + 16 tokens each, lowest of {args.repeat}:")
    print(f"  {'':48}{'CPU s':>8}{'wall s':>8}{'CPU vs default':>16}")
    for name, (cpu, wall) in best.items():
        print(f"  {name:48}{cpu:8.2f}{wall:8.2f}{base / cpu:15.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
