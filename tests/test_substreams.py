"""Substreams: the gate reads a low-resolution stream (or file), analysed windows take the main
stream's frames. Packets kept and decoded on demand (a real H.264 file read like a camera), two
mounts of the GStreamer RTSP server, and a pair of files through the running daemon and mosquitto."""

from __future__ import annotations

import itertools
import threading
import time

import cv2
import numpy as np
import pytest
from clips import Scene, Thing, read_clip, scene_frames, write_h264, write_jpeg_frames, write_scene
from rtsp_camera import RtspServer, gstreamer_rtsp_missing

from daemon.cli import main
from daemon.config.cameras import GateSettings, SourceSettings
from daemon.state.history import History
from daemon.types import Frame, Window
from daemon.video import open_main_frames, open_source
from daemon.video.gate import Gate
from daemon.video.mainframes import StreamFrames

MOVING = Thing(appear=1.0, leave=9.0, start=(20, 100), stop=(260, 100), move_from=1.0, move_to=9.0)


def window_at(times: list[float]) -> Window:
    placeholder = np.zeros((8, 8, 3), np.uint8)
    frames = tuple(Frame("cam", t, i, placeholder) for i, t in enumerate(times))
    return Window("cam", times[0] - 0.1, times[-1] + 0.1, frames)


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory):
    """30 s at 10 fps, a keyframe every second, with a thing crossing (so every frame differs)."""
    scene = Scene(duration=30.0, fps=10.0, things=(MOVING,))
    path = write_h264(tmp_path_factory.mktemp("main") / "main.mp4", scene_frames(scene), fps=10, quantizer=20, gop=10)
    return path, read_clip(path)


def read_as_camera(path, settings: SourceSettings) -> StreamFrames:
    """StreamFrames reading a file to its end, stamping packet n at n / 10 s (the clip's media time)."""
    ticks = itertools.count()
    main = StreamFrames("cam", str(path), settings, clock=lambda: next(ticks) / 10)
    capture = main._open()
    assert capture is not None
    main._read(capture, threading.Event())
    return main


def test_kept_packets_decode_to_exactly_the_main_streams_frames(h264_clip):
    path, decoded = h264_clip
    main = read_as_camera(path, SourceSettings(span=4, stride=4))  # keeps 4 + 4 + 10 s
    times = [26.02 + 0.5 * i for i in range(8)]  # frames 260, 265, ... of the clip (packet n at n / 10 s)
    window = main.take(window_at(times))
    assert window is not None and window.start == times[0] - 0.1
    for frame, t in zip(window.frames, times):
        n = round(t * 10)
        assert frame.ts == pytest.approx(n / 10) and frame.index == n + 1
        assert np.array_equal(frame.image, decoded[n])  # bit-identical to decoding the whole clip


def test_only_the_last_seconds_are_kept_from_a_keyframe(h264_clip):
    path, _ = h264_clip
    main = read_as_camera(path, SourceSettings(span=4, stride=4))
    packets = list(main._packets)
    assert packets[0].key
    assert 29.9 - main.keep - 1.0 <= packets[0].ts <= 29.9 - main.keep  # at most one GOP (1 s) more
    assert main.take(window_at([2.0 + 0.5 * i for i in range(8)])) is None  # long gone: the caller keeps its frames


def test_a_high_bit_rate_keeps_whole_gops_within_the_byte_limit(h264_clip, monkeypatch):
    from daemon.video import mainframes

    path, _ = h264_clip
    monkeypatch.setattr(mainframes, "MAX_BYTES", 200_000)
    main = read_as_camera(path, SourceSettings(span=4, stride=4))
    packets = list(main._packets)
    gop = max(sum(len(p.data) for p in packets[i : i + 10]) for i in range(0, len(packets), 10))
    assert packets[0].key and main._bytes == sum(len(p.data) for p in packets)
    assert main._bytes <= 200_000 + gop  # the newest GOP is never cut
    assert packets[-1].ts - packets[0].ts < main.keep  # fewer seconds than the time limit alone would keep


# ---------------------------------------------------------------- RTSP: a main stream and a substream


pytestmark_rtsp = pytest.mark.skipif(bool(gstreamer_rtsp_missing()), reason=str(gstreamer_rtsp_missing()))


@pytest.fixture(scope="module")
def two_streams(tmp_path_factory):
    """The same scene at 640x480 (main) and 320x240 (sub), served as /cam and /sub."""
    folder = tmp_path_factory.mktemp("streams")
    scene = Scene(duration=4.0, fps=10.0, noise=2.0, things=(Thing(1.0, 3.0, (40, 80), (240, 100), 1.0, 3.0),))
    main = write_jpeg_frames(folder / "main", scene_frames(Scene(**{**scene.__dict__, "width": 640, "height": 480})))
    sub = write_jpeg_frames(folder / "sub", scene_frames(scene))
    server = RtspServer(main, fps=10, mounts={"/sub": sub}).start()
    yield server
    server.stop()


@pytestmark_rtsp
def test_the_gate_reads_the_substream_and_passed_windows_carry_main_stream_frames(two_streams):
    settings = SourceSettings.model_validate({"span": 1.0, "frames": 4, "stream": {"open_timeout": 5, "read_timeout": 3}})
    sub = open_source("porch", two_streams.url(path="/sub"), settings)
    main = open_main_frames("porch", two_streams.url(), settings, sub)
    stop = threading.Event()
    main.start(stop)
    gate, taken = Gate(GateSettings(enabled=False)), []
    windows = sub.windows(stop)
    try:
        deadline = time.monotonic() + 30
        for window in windows:
            window, decision = gate.check(window, now=window.end)
            assert window.frames[0].image.shape == (240, 320, 3)  # the gate saw the substream
            full = main.take(window)
            if full is not None:
                taken.append((window, full))
            if len(taken) >= 3 or time.monotonic() > deadline:
                break
    finally:
        stop.set()
        windows.close()
        main.close()
    assert len(taken) >= 3, "the main stream never delivered frames"
    for window, full in taken:
        assert [f.image.shape for f in full.frames] == [(480, 640, 3)] * 4
        assert (full.start, full.end) == (window.start, window.end)
        # the main stream's frames at the substream frames' times, within a frame interval or two
        assert all(abs(m.ts - s.ts) < 0.25 for m, s in zip(full.frames, window.frames))
        small = [cv2.resize(f.image, (320, 240), interpolation=cv2.INTER_AREA) for f in full.frames]
        assert np.mean([np.abs(a.astype(int) - s.image).mean() for a, s in zip(small, window.frames)]) < 40


# ---------------------------------------------------------------- files, through the daemon


@pytest.mark.parametrize("frames_from, shape", [("main", (480, 640)), ("detect", (240, 320))])
def test_a_file_pair_runs_the_gate_on_the_small_copy_and_shows_the_model_the_chosen_one(
        tmp_path, tiny_model, mosquitto, listen, frames_from, shape):
    scene = Scene(duration=16.0, things=(Thing(appear=9.0, leave=15.0, start=(60, 100)),))
    main_clip = write_scene(tmp_path / "main.mp4", Scene(**{**scene.__dict__, "width": 640, "height": 480}))
    detect_clip = write_scene(tmp_path / "detect.mp4", scene)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text("- id: anything\n  ask: Is anything there?\n  threshold: 0\n"
                                               "  cooldown: 0s\n  snapshot: true\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model:\n  dir: {tiny_model}\n  backend: onnxruntime\n  system: You watch a camera.\n"
        f"cameras:\n  - name: yard\n    source: {main_clip}\n    detect_source: {detect_clip}\n"
        f"    frames_from: {frames_from}\n    span: 4\n    frames: 4\n"
        f"prompts:\n  max_new_tokens: 4\nmqtt:\n  host: {mosquitto.host}\n  port: {mosquitto.port}\n"
        f"rules: {tmp_path / 'rules'}\nstate_dir: {tmp_path / 'state'}\nmetrics:\n  enabled: false\n")
    listener = listen(mosquitto, "vlmwatch/#")
    assert main(["run", "-c", str(config), "--once"]) == 0
    with History(tmp_path / "state" / "history.sqlite") as history:
        # by window start: a skipped window is recorded at once, an analysed one when the NPU is done with it
        reasons = [w.reason for w in sorted(history.windows(0, time.time() + 1), key=lambda w: w.start)]
    assert reasons[0] == "first window" and reasons[1].startswith("static") and reasons[2].startswith("region")
    snapshot = listener.wait_topic("vlmwatch/yard/snapshot").payload
    picture = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[:2] == shape
