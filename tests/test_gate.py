"""The scene-change gate: pure decisions on synthetic frames, and the generated event scene end to end."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from clips import (
    EVENT_SCENE,
    EVENT_WINDOWS,
    Scene,
    Thing,
    background,
    scene_frames,
    write_scene,
)

from daemon.types import Frame, Window
from daemon.video.file import FileSource
from daemon.video.gate import Gate, GateState, decide, signature, window_change
from daemon.video.settings import GateSettings, SourceSettings

DEFAULTS = GateSettings()


def frames_of(images, t0=0.0):
    return [Frame("cam", t0 + i, i, image) for i, image in enumerate(images)]


def noisy(base: np.ndarray, rng: np.random.Generator, sigma: float = 8.0, gain: float = 1.0) -> np.ndarray:
    image = base * gain + rng.normal(0, sigma, size=base.shape[:2] + (1,))
    return np.clip(image, 0, 255).astype(np.uint8)


def with_square(image: np.ndarray, x: int, y: int, size: int = 40, colour=(230, 230, 230)) -> np.ndarray:
    image = image.copy()
    image[y : y + size, x : x + size] = colour
    return image


@pytest.fixture
def scene():
    return background(320, 240, seed=3), np.random.default_rng(7)


def analysed_state(images, now=0.0) -> GateState:
    return decide(frames_of(images), GateState(), DEFAULTS, now)[1]


def test_first_window_always_goes_through(scene):
    base, rng = scene
    decision, state = decide(frames_of([noisy(base, rng)] * 8), GateState(), DEFAULTS, now=100.0)
    assert (decision.analyse, decision.reason, decision.change) == (True, "first window", None)
    assert state.analysed_at == 100.0 and state.reference is not None


def test_static_noisy_scene_is_skipped_and_state_kept(scene):
    base, rng = scene
    state = analysed_state([noisy(base, rng) for _ in range(8)])
    decision, after = decide(frames_of([noisy(base, rng) for _ in range(8)]), state, DEFAULTS, now=8.0)
    assert not decision.analyse
    assert decision.change < DEFAULTS.threshold / 10
    assert decision.reason == f"static {decision.change:.3f} < 0.010"
    assert after is state  # a skipped window does not move the reference


@pytest.mark.parametrize("x, y", [(0, 0), (140, 100), (280, 200)])
def test_object_appearing_anywhere_is_analysed(scene, x, y):
    base, rng = scene
    state = analysed_state([noisy(base, rng) for _ in range(8)])
    images = [noisy(base, rng) for _ in range(7)] + [with_square(noisy(base, rng), x, y)]  # last frame only
    decision, after = decide(frames_of(images), state, DEFAULTS, now=8.0)
    assert decision.analyse and decision.reason.startswith("change ")
    assert decision.change >= 0.015  # a 40x40 square is 2 % of 320x240
    assert after.analysed_at == 8.0


def test_object_leaving_and_moving_is_analysed(scene):
    base, rng = scene
    present = analysed_state([with_square(noisy(base, rng), 100, 100) for _ in range(8)])
    gone, _ = decide(frames_of([noisy(base, rng) for _ in range(8)]), present, DEFAULTS, now=8.0)
    moved, _ = decide(frames_of([with_square(noisy(base, rng), 160, 100)] * 8), present, DEFAULTS, now=8.0)
    assert gone.analyse and moved.analyse
    assert moved.change > gone.change  # old and new place both changed


def test_gradual_light_change_is_not_change(scene):
    base, rng = scene
    state = analysed_state([noisy(base, rng, gain=0.8) for _ in range(8)])
    brighter = [noisy(base, rng, gain=1.2 - 0.01 * i) for i in range(8)]  # +50 % in exposure terms
    decision, _ = decide(frames_of(brighter), state, DEFAULTS, now=8.0)
    assert not decision.analyse and decision.change < 0.002


def test_lights_switched_off_is_change(scene):
    base, rng = scene
    state = analysed_state([noisy(base, rng) for _ in range(8)])
    decision, _ = decide(frames_of([noisy(base, rng, gain=0.3)] * 8), state, DEFAULTS, now=8.0)
    assert decision.analyse and decision.change > 0.5


def test_grainy_night_picture_is_not_change(scene):
    base, rng = scene
    dark = base * 0.4
    state = analysed_state([noisy(dark, rng, sigma=30) for _ in range(8)])
    decision, _ = decide(frames_of([noisy(dark, rng, sigma=30) for _ in range(8)]), state, DEFAULTS, now=8.0)
    assert not decision.analyse and decision.change < DEFAULTS.threshold / 5


def test_heartbeat_forces_an_analysis(scene):
    base, rng = scene
    settings = GateSettings(heartbeat=60)
    state = analysed_state([noisy(base, rng)] * 8, now=1000.0)
    static = frames_of([noisy(base, rng)] * 8)
    early, _ = decide(static, state, settings, now=1059.0)
    due, after = decide(static, state, settings, now=1060.0)
    assert not early.analyse
    assert due.analyse and due.reason == "heartbeat: 60 s since last analysis"
    assert after.analysed_at == 1060.0


def test_slow_creep_is_measured_against_the_last_analysed_window(scene):
    """A thing that moves a little per window is caught once the total move is large enough."""
    base, rng = scene
    gate = Gate(DEFAULTS)
    verdicts = []
    for step in range(12):
        images = [with_square(noisy(base, rng), 40 + 4 * step, 100) for _ in range(8)]
        verdicts.append(gate.check(Window("cam", step, step + 1, tuple(frames_of(images))), now=step)[1].analyse)
    assert verdicts[0] and any(verdicts[2:])  # 4 px per window is below the bar; the sum is not
    assert not all(verdicts)


def test_disabled_gate_analyses_everything_and_still_scores(scene):
    base, rng = scene
    settings = GateSettings(enabled=False)
    state = analysed_state([noisy(base, rng)] * 8)
    decision, _ = decide(frames_of([noisy(base, rng)] * 8), state, settings, now=8.0)
    assert (decision.analyse, decision.reason) == (True, "gate disabled")
    assert decision.change is not None


def test_resolution_change_counts_as_change(scene):
    base, rng = scene
    state = analysed_state([noisy(base, rng)] * 8)
    wide = np.zeros((180, 320, 3), np.uint8)
    decision, _ = decide(frames_of([wide] * 8), state, DEFAULTS, now=8.0)
    assert decision.analyse and decision.change == 1.0


def test_gate_check_fills_the_window_change_and_keeps_frames(scene):
    base, rng = scene
    gate = Gate(DEFAULTS)
    frames = tuple(frames_of([noisy(base, rng)] * 8))
    first, _ = gate.check(Window("cam", 0, 8, frames), now=8)
    second, decision = gate.check(Window("cam", 8, 16, frames), now=16)
    assert first.change is None and second.change == decision.change
    assert second.frames is frames


def test_signature_is_small_and_keeps_aspect():
    assert signature(np.zeros((720, 1280, 3), np.uint8)).shape == (36, 64)
    assert signature(np.zeros((240, 320, 3), np.uint8)).shape == (48, 64)


def test_margins_behind_the_default_threshold():
    """The measurements in daemon/gate.py's docstring, kept true: static noise far below
    the default threshold, a 2 % object well above it, without encoding (fast)."""
    static = Scene(duration=8.0, noise=12.0, drift=0.25)  # light x1.67 within the window
    sigs = [signature(f) for f in scene_frames(static)]
    assert window_change(sigs[1::10], sigs[0]) < DEFAULTS.threshold / 10
    thing = Thing(appear=4.0, leave=9.0, start=(150, 60))
    event = [signature(f) for f in scene_frames(dataclasses.replace(static, things=(thing,)))]
    assert window_change(event[40::5], event[0]) > 1.5 * DEFAULTS.threshold


# ---------------------------------------------------------------- the generated event scene, end to end


@pytest.mark.parametrize("name, quality", [("scene.mp4", None), ("scene.avi", 30)])
def test_event_scene_gate_sees_every_event_and_skips_static_windows(tmp_path, name, quality):
    """Static noisy scene with light drift; a thing appears, moves, leaves; another passes by
    in one or two frames. Decoded from mp4v and from heavily compressed MJPEG."""
    clip = write_scene(tmp_path / name, dataclasses.replace(EVENT_SCENE, noise=8.0), quality=quality)
    gate = Gate(DEFAULTS)
    analysed = []
    windows = FileSource("scene", clip, SourceSettings(span=4)).windows(threading.Event())
    for number, window in enumerate(windows):
        _, decision = gate.check(window, now=window.end)
        if decision.analyse:
            analysed.append(number)
    assert number == 15
    static = set(range(1, 16)) - EVENT_WINDOWS  # window 0 is the first: always analysed
    assert EVENT_WINDOWS <= set(analysed)
    skipped = len(static - set(analysed)) / len(static)
    assert skipped >= 0.9, f"analysed {analysed}"
    assert analysed == [0, *sorted(EVENT_WINDOWS)]
