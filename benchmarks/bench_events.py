"""Events: what a long event keeps in memory, what one event costs the NPU, and what Home Assistant receives.

1. Memory: 10 minutes of change on one camera (8-second windows of 8 frames, each frame carrying the
   model's 448 x 448 input and a 640 x 360 picture, as the daemon's sources make them) through the
   event book; the frames kept for the story are measured as the event grows (tracemalloc, and the
   reservoir's own count), beside what keeping every frame would take.
2. NPU: the story of one event (8 frames spread across it + the event prompt) through the real engine on
   full-size sessions priced with the AX650N cost model (daemon/engine/sessions.py; benchmarks/fullsize.py),
   beside one ordinary window (2 yes/no rules + a 64-token description).
3. MQTT: messages Home Assistant receives per hour of activity (visits of `visit` seconds with `gap`
   seconds between them), before events and with them, by the pure tracker with its default settings.

    python benchmarks/bench_events.py            # all three
    python benchmarks/bench_events.py --quick    # 2 minutes of change, no NPU part: seconds
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from daemon.config.events import EventSettings
from daemon.events.book import EventBook
from daemon.types import Frame, Region, Window

SPAN, FRAMES, INPUT, PICTURE = 8.0, 8, 448, (360, 640)


def window(camera: str, start: float, changed: bool, rng: np.random.Generator) -> Window:
    frames = tuple(Frame(camera, start + (i + 0.5) * SPAN / FRAMES, int(start * 10) + i,
                         rng.integers(0, 255, (*PICTURE, 3), np.uint8),
                         rng.integers(0, 255, (INPUT, INPUT, 3), np.uint8)) for i in range(FRAMES))
    regions = (Region(0.2, 0.3, 0.1, 0.2, 0.02),) if changed else ()
    return Window(camera, start, start + SPAN, frames, 0.02 if changed else 0.0, regions)


def memory(minutes: float) -> None:
    settings = EventSettings(max_length=3600.0)  # one event all the way: the bound must hold anyway
    book = EventBook(settings, random.Random(0))
    rng = np.random.default_rng(0)
    frame_bytes = INPUT * INPUT * 3 + PICTURE[0] * PICTURE[1] * 3
    windows = int(minutes * 60 / SPAN)
    print(f"memory of one event: {minutes:g} min of change, {windows} windows of {FRAMES} frames "
          f"({frame_bytes / 1e6:.2f} MB a frame as captured, {INPUT * INPUT * 3 / 1e6:.2f} MB as kept), "
          f"keep_frames {settings.keep_frames}")
    print(f"  {'minute':>6} {'frames seen':>11} {'kept MB':>8} {'traced MB (peak)':>17} {'every frame MB':>15}")
    tracemalloc.start()
    checkpoints = {max(1, round(windows * f)) for f in (0.1, 0.25, 0.5, 0.75, 1.0)}
    for i in range(windows):
        book.window(window("yard", 1000.0 + i * SPAN, True, rng), True, "region 2 %")
        if i + 1 in checkpoints:  # the window and its frames are gone here, as in the daemon
            current, peak = tracemalloc.get_traced_memory()
            seen = (i + 1) * FRAMES
            print(f"  {(i + 1) * SPAN / 60:6.1f} {seen:11d} {book.kept_bytes() / 1e6:8.1f} "
                  f"{current / 1e6:8.1f} ({peak / 1e6:5.1f}) {seen * frame_bytes / 1e6:15.0f}")
    out = book.window(window("yard", 1000.0 + windows * SPAN + 60, False, rng), False, "static")
    story = book.story(out[-1].event)
    current, _ = tracemalloc.get_traced_memory()
    print(f"  story frames at {', '.join(f'{f.ts - 1000:.0f}' for f in story.frames)} s of "
          f"{windows * SPAN:.0f} s; after the story is taken the book keeps {book.kept_bytes()} bytes")
    del story
    tracemalloc.stop()


def npu_cost() -> None:
    from bench_window import PROMPTS, SYSTEM, model

    from daemon.engine.bundle import load_embeddings
    from daemon.engine.engine import Engine
    from daemon.engine.export.tiny import build_tokenizer
    from daemon.engine.sessions import VIT_MS, Meter
    from daemon.types import Prompt
    from fullsize import HIDDEN, VOCAB

    settings = EventSettings()
    tokenizer = build_tokenizer()
    rng = np.random.default_rng(0)
    frames = [Frame("cam", float(i), i, rng.integers(0, 255, (720, 1280, 3), np.uint8)) for i in range(FRAMES)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.npy"
        np.lib.format.open_memmap(path, "w+", np.float32, (VOCAB, HIDDEN)).flush()
        table = load_embeddings(path, HIDDEN)
        rows = []
        for label, prompts in (("one window: 2 yes/no rules + 64-token description", PROMPTS),
                               *((f"one event's story: {n} tokens", [Prompt("story", settings.prompt,
                                                                            max_new_tokens=n)])
                                 for n in (48, settings.max_new_tokens))):
            meter = Meter()
            engine = Engine(model(table, tokenizer, meter), system=SYSTEM, max_new_tokens=settings.max_new_tokens)
            engine.ask(frames, prompts)  # sessions that compute nothing: every answer runs to max_new_tokens
            vit = meter.count("vit") * VIT_MS
            rows.append((label, vit, meter.npu_ms - vit, meter.host_ms))
    print("NPU time, modelled AX650N seconds (ViT, LLM, host<->NPU traffic, total):")
    for label, vit, llm, traffic in rows:
        print(f"  {label:55}{vit / 1e3:6.1f}{llm / 1e3:7.1f}{traffic / 1e3:8.1f}{(vit + llm + traffic) / 1e3:8.1f}")
    print("  an event adds its story to the windows it contains (one-window events reuse the description: 0 s)")


def messages(visit: float, gap: float) -> None:
    """Per hour of activity: before (a description per analysed window) and with events."""
    rng = np.random.default_rng(1)
    settings = EventSettings()
    results = {}
    for label, events in (("before (description per window)", None), ("with events, defaults", settings),
                          ("with events, description_every 60 s", EventSettings(description_every=60)),
                          ("with events, no description sensor updates",
                           EventSettings(description_every=10 ** 6))):
        book = EventBook(events or settings, random.Random(0))
        count = {"description": 0, "event": 0, "activity": 0, "story": 0, "snapshot": 0}
        t, hour = 0.0, 3600.0
        while t < hour:
            changed = (t % (visit + gap)) < visit
            w = Window("yard", t, t + SPAN, (), 0.02 if changed else 0.0,
                       (Region(0.2, 0.3, 0.1, 0.2, 0.02),) if changed else ())
            out = book.window(w, changed, "region 2 %" if changed else "static")
            if changed:  # the NPU describes it; the result arrives a few seconds later
                if events is None or book.publish_description("yard", f"text {rng.integers(9)}", t + 4):
                    count["description"] += 1
                if events is not None:
                    out += book.described("yard", t, t + SPAN, "a person", t + 4)
            for tr in out:
                if events is None:
                    continue
                if tr.kind == "closing":  # told at once here: the story's message count, not its time
                    tr_end = book.told(tr.event.id, "story", "model")
                    out += tr_end
                if tr.kind in ("new", "update", "end"):
                    count["event"] += 1
                if tr.kind in ("new", "end"):
                    count["activity"] += 1
                if tr.kind == "end":
                    count["story"] += 1
                    count["snapshot"] += 1
            t += SPAN
        results[label] = count
    active = visit / (visit + gap)
    print(f"MQTT messages per hour of activity (visits of {visit:.0f} s every {visit + gap:.0f} s, 8-second "
          "windows; rule answers and alerts are the same before and after and left out):")
    base = None
    for label, count in results.items():
        total = sum(count.values()) / active
        base = base or total
        detail = ", ".join(f"{k} {v / active:.0f}" for k, v in count.items() if v)
        print(f"  {label:45} {total:6.0f}  ({detail}; {total / base:.2f}x before)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 minutes of change and no NPU part")
    args = parser.parse_args()
    started = time.perf_counter()
    memory(2.0 if args.quick else 10.0)
    if not args.quick:
        npu_cost()
    messages(visit=120.0, gap=60.0)
    print(f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
