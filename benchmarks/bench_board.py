"""What one AX650N does with vlmwatch, modelled: every figure issue 15 asks for, in one run.

    python benchmarks/bench_board.py [--steps 64]

1. The cost model's calibration: published per-graph NPU times, plus one
   host <-> NPU traffic rate (bytes copied, flushed and invalidated) fitted so
   that the reference demo's way of feeding (whole K/V caches every step)
   reproduces its measured ~6.9 tok/s on the 2048 build (daemon/engine/costs.py).
2. Decode speed at full size: whole caches fed vs resident KV vs the NPU alone.
3. Modelled seconds per 8-frame window (64-token description, two yes/no
   rules) for the reference demo's approach, vlmwatch before issue 15, and now.
4. Cameras one NPU sustains when 0, 2, 5 or 10 % of windows show a change.

Nothing here runs on an NPU: sessions compute nothing (benchmarks/fullsize.py)
and every call is priced by daemon/engine/sessions.py's cost model.
"""

from __future__ import annotations

import argparse

from bench_engine import measure, with_table
from bench_window import APPROACHES, PROMPTS, Window, print_windows, suffix_tokens, windows
from fullsize import sessions

from daemon.config.cameras import GateSettings, SourceSettings
from daemon.engine.costs import DECODE_TOKEN_MS, calibration_lines
from daemon.engine.llm import LLM
from daemon.engine.sessions import Meter

CHANGED = (0.00, 0.02, 0.05, 0.10)  # fraction of windows in which the gate sees a change


def print_calibration() -> None:
    print("\n".join(calibration_lines()))


def print_decode(steps: int) -> float:
    runs = with_table(lambda table: {kv: measure(kv, steps, table)[1] for kv in ("copied", "resident")})
    print(f"decode at full size ({steps} steps after a 2156-token prompt), modelled:")
    print(f"  {'':28}{'ms/token':>10}{'tok/s':>8}{'moved/token':>13}")
    print(f"  {'NPU alone':28}{DECODE_TOKEN_MS:10.2f}{1000 / DECODE_TOKEN_MS:8.2f}{'-':>13}")
    for kv, label in (("copied", "whole caches fed (reference)"), ("resident", "resident KV (now)")):
        r = runs[kv]
        print(f"  {label:28}{r.modelled_ms:10.2f}{1000 / r.modelled_ms:8.2f}{r.bytes / 1e6:10.2f} MB")
    speed = 1000 / runs["resident"].modelled_ms
    print(f"  resident KV: {speed:.2f} tok/s (the NPU alone {1000 / DECODE_TOKEN_MS:.2f})")
    for kv in ("resident", "copied"):
        llm = LLM(*sessions(Meter())[:2], kv)
        g = llm.geo.groups
        chunk, step = llm.call_ms(g, llm.geo.prefill_len), llm.call_ms(0, 1)
        print(f"  suffix break-even with {kv} KV at group {g}: one chunk {chunk:.2f} ms/layer, one decode step"
              f" {step:.3f} ms/layer -> a suffix under {chunk / step:.1f} tokens goes through the decode graph")
    return speed


def cameras(window_s: float, changed: float, stride: float, heartbeat: float) -> float:
    """Cameras whose analysed windows fit one NPU: each camera analyses a window every stride / changed
    seconds, and at least one every heartbeat seconds; gated windows cost nothing."""
    per_second = max(changed / stride, 1.0 / heartbeat)
    return 1.0 / (per_second * window_s)


def print_cameras(results: dict[str, Window]) -> None:
    stride, heartbeat = SourceSettings().stride, GateSettings().heartbeat  # the defaults
    print(f"cameras one NPU sustains (span = stride = {stride:g} s, 8 frames; a gated window costs no NPU;"
          f" a static camera is still analysed every {heartbeat:g} s, the gate's heartbeat):")
    print(f"  {'windows with change':72}" + "".join(f"{100 * c:>7.0f} %" for c in CHANGED))
    for a, w in results.items():
        figures = "".join(f"{cameras(w.total_ms / 1e3, c, stride, heartbeat):9.1f}" for c in CHANGED)
        print(f"  ({a}) {APPROACHES[a]:67}{figures}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=64, help="decode steps to time")
    args = ap.parse_args()
    print_calibration()
    print()
    print_decode(args.steps)
    print()
    results = windows()
    print_windows(results)
    sizes = ", ".join(f"{p.question!r} ({n} tokens)" for p, n in zip(PROMPTS, suffix_tokens()))
    print(f"  suffixes: {sizes}; the stand-in tokenizer spells them longer than Qwen2's, so fewer fall under"
          " the break-even here than on the board")
    print()
    print_cameras(results)


if __name__ == "__main__":
    main()
