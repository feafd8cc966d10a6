"""History rows for tests, written straight into a `History` (no model, no camera).

    record_description(history, "porch", ts, "A cat crosses the lawn.")
    record_answer(history, "porch", ts, "person", "yes")
    long_history(history, start, hours=6)      # a busy day of two cameras
    damage(path)                               # garbage over the middle pages of a state file

A helper module like clips.py, imported by the summary tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from daemon.state.history import History
from daemon.types import Alert, Frame, Result, Window

IMAGE = np.zeros((2, 2, 3), np.uint8)
SCENES = ["a man in a blue jacket leaves a parcel on the step", "a cat crosses the lawn", "a delivery van stops",
          "a woman makes coffee and reads a letter", "a child opens the fridge and takes an apple",
          "the dog runs to the fence and barks", "a fox appears near the bushes at dusk", "rain falls on the garden"]


def record_description(history: History, camera: str, ts: float, text: str) -> None:
    window = Window(camera, ts - 8, ts, tuple(Frame(camera, ts - 8 + i, i, IMAGE) for i in range(8)))
    window_id = history.record_window(window, True, "changed", ts)
    history.record_result(window_id, Result(camera, "description", "Describe.", ts - 8, ts, ts, text,
                                            stop_reason="stop"))


def record_answer(history: History, camera: str, ts: float, rule: str, choice: str) -> None:
    window = Window(camera, ts - 8, ts, tuple(Frame(camera, ts - 8 + i, i, IMAGE) for i in range(8)))
    window_id = history.record_window(window, True, "changed", ts)
    history.record_result(window_id, Result(camera, rule, "Is it so?", ts - 8, ts, ts, choice=choice,
                                            probabilities={choice: 0.9}, stop_reason="choice"))


def long_history(history: History, start: float, hours: int, cameras=("porch", "garage")) -> None:
    """One description per camera every 5 minutes, each different from the last, a rule answer and an alert an hour."""
    for k in range(hours * 12):
        for c, camera in enumerate(cameras):
            ts = start + k * 300 + c
            record_description(history, camera, ts, f"{SCENES[(k + c) % len(SCENES)].capitalize()}, scene {k}.")
        if k % 12 == 0:
            record_answer(history, cameras[0], start + k * 300 + 5, "person", "yes" if k % 24 else "no")
            history.record_alert(Alert(cameras[0], "person", "warning", "A person is at the door.", start + k * 300 + 6,
                                       start + k * 300 - 2, start + k * 300 + 6, 0.9))


def damage(path: Path, seed: int = 0, page_size: int = 4096) -> None:
    """Garbage over the middle third of an SQLite file's pages (the header page stays intact), as a
    failing disk or a stray write leaves it."""
    pages = path.stat().st_size // page_size
    assert pages >= 3, f"{path} has only {pages} pages"
    rng = random.Random(seed)
    with open(path, "r+b") as f:
        for page in range(max(1, pages // 3), max(2, 2 * pages // 3)):
            f.seek(page * page_size)
            f.write(rng.randbytes(page_size))
