"""Decoding only what is needed: keyframe windows (pure), FFmpeg options per capture (real files),
hardware decoder detection through its probe (a fake probe, and FFmpeg's own decoder standing in by
name), and a camera whose gate reads keyframes while passed windows get exact frames (real RTSP server)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time

import numpy as np
import pytest
from clips import Scene, Thing, read_clip, scene_frames, write_h264, write_jpeg_frames
from rtsp_camera import RtspServer, gstreamer_rtsp_missing

from daemon.config.cameras import CameraSettings, SourceSettings
from daemon.types import Frame, Window
from daemon.video import open_main_frames, open_source
from daemon.video.decoders import (FFMPEG_OPTIONS_ENV, KEYFRAMES_ONLY, CameraDecoder, Decoding, decoder_works,
                                   detect, open_capture)
from daemon.video.mainframes import StreamFrames
from daemon.video.windows import KeyframeWindows, segment_times

PIXEL = np.zeros((4, 4, 3), np.uint8)


def frame(ts: float) -> Frame:
    return Frame("cam", ts, round(ts * 100), PIXEL)


def feed(windows: KeyframeWindows, times) -> list:
    done = []
    for t in times:
        if windows.wants(t):
            done += windows.add(frame(t))
    return done


# ---------------------------------------------------------------- keyframe windows (pure)


def test_a_window_takes_its_keyframes_and_the_first_after_its_end():
    done = feed(KeyframeWindows("cam", 8, 8, 8, max_gap=10), [2.0 * i for i in range(9)])  # GOP 2 s
    assert [(w.start, w.end) for w in done] == [(0, 8), (8, 16)]
    assert [f.ts for f in done[0].frames] == [0, 2, 4, 6, 8]
    assert done[0].frames[-1] is done[1].frames[0]  # shared: the gate's signature is per frame object


def test_a_gop_longer_than_the_span_still_gives_every_window_a_frame():
    done = feed(KeyframeWindows("cam", 4, 4, 4, max_gap=10), [0.0, 10.0, 20.0])
    assert [(w.start, [f.ts for f in w.frames]) for w in done] == [(0, [0, 10]), (4, [10]), (8, [10, 20]),
                                                                   (12, [20]), (16, [20])]


def test_a_paused_stream_drops_the_windows_it_left_empty():
    windows = KeyframeWindows("cam", 8, 8, 8, max_gap=10)
    done = feed(windows, [0.0, 2.0, 60.0])
    assert [(w.start, [f.ts for f in w.frames]) for w in done] == [(0, [0, 2]), (48, [60])]
    assert windows.incomplete == 5  # 8..48: no keyframe within 10 s of their end


def test_an_all_keyframe_stream_is_thinned_to_the_gates_rate():
    done = feed(KeyframeWindows("cam", 8, 8, 8, max_gap=10), [i / 25 for i in range(25 * 9)])  # MJPEG
    assert len(done) == 1 and 8 <= len(done[0].frames) <= 12


# ---------------------------------------------------------------- FFmpeg options per capture


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory):
    """6 s at 10 fps, a keyframe every 2 s, every frame different."""
    scene = Scene(duration=6.0, fps=10.0, things=(Thing(0.0, 6.0, (20, 100), (260, 100), 0.0, 6.0),))
    return write_h264(tmp_path_factory.mktemp("gop") / "gop.mp4", scene_frames(scene), fps=10, gop=20)


def count_frames(capture) -> int:
    frames = 0
    while capture.grab():
        frames += 1
    capture.release()
    return frames


def test_options_apply_to_one_capture_and_the_users_own_come_first(gop_clip, monkeypatch):
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "rtsp_transport;udp")
    assert count_frames(open_capture(str(gop_clip), (), (KEYFRAMES_ONLY,))) == 3
    assert os.environ[FFMPEG_OPTIONS_ENV] == "rtsp_transport;udp"  # restored
    assert count_frames(open_capture(str(gop_clip))) == 60  # the next capture decodes everything
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV)
    open_capture(str(gop_clip), (), (KEYFRAMES_ONLY,)).release()
    assert FFMPEG_OPTIONS_ENV not in os.environ


def test_cameras_opening_together_never_get_each_others_options(gop_clip):
    counts: dict[str, list[int]] = {"keyframes": [], "all": []}

    def open_many(kind: str) -> None:
        for _ in range(5):
            options = (KEYFRAMES_ONLY,) if kind == "keyframes" else ()
            counts[kind].append(count_frames(open_capture(str(gop_clip), (), options)))

    threads = [threading.Thread(target=open_many, args=(k,)) for k in counts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert counts == {"keyframes": [3] * 5, "all": [60] * 5}


def test_a_passed_windows_frames_are_decoded_exactly_at_its_segment_midpoints(gop_clip):
    settings = SourceSettings.model_validate({"span": 4.0, "stride": 4.0, "stream": {"gate_decode": "keyframes"}})
    ticks = itertools.count()
    packets = StreamFrames("cam", str(gop_clip), settings, clock=lambda: next(ticks) / 10)  # media time
    packets._read(packets._open(), threading.Event())
    gate_frames = (Frame("cam", 2.0, 0, PIXEL), Frame("cam", 4.0, 1, PIXEL), Frame("cam", 6.0, 2, PIXEL))
    window = packets.take(Window("cam", 1.02, 5.02, gate_frames))  # two keyframes and the one after
    wanted = [round(t * 10) for t in segment_times(1.02, 5.02, 8)]  # 13, 18, 23, ...: the nearest frames
    assert [f.index - 1 for f in window.frames] == wanted
    decoded = read_clip(gop_clip)
    assert all(np.array_equal(f.image, decoded[n]) for f, n in zip(window.frames, wanted))  # bit-identical


# ---------------------------------------------------------------- hardware decoders


def test_the_probe_finds_a_decoder_by_name_and_refuses_a_missing_one():
    assert decoder_works("h264", "h264") and decoder_works("hevc", "hevc")  # FFmpeg's own: present
    assert not decoder_works("h264_axdec", "h264")  # off the board, OpenCV's FFmpeg has no Axera decoder
    assert not decoder_works("hevc", "h264")  # a decoder for another codec does not pass


def test_detection_keeps_what_the_probe_accepts_and_says_so():
    board = detect(probe=lambda name, codec: name == "h264_axdec")  # a board whose FFmpeg has only one
    assert board.hardware == {"h264": "h264_axdec"} and board.absent == ("hevc_axdec",)
    assert board.options("h264") == ("video_codec;h264_axdec",) and board.options("hevc") == ()
    assert board.describe() == "hardware (h264 by h264_axdec); software for the rest (hevc_axdec absent)"
    assert board.as_json()["decoding"] == "hardware"
    here = detect()  # the real probe on this machine
    assert here.hardware == {} and here.as_json() == {"decoding": "software", "decoders": {},
                                                      "absent": ["h264_axdec", "hevc_axdec"]}
    assert here.describe() == "software (FFmpeg's own decoders: the FFmpeg OpenCV uses has no h264_axdec, hevc_axdec)"


def test_a_camera_learns_its_codec_and_reopens_with_the_hardware_decoder(gop_clip):
    # FFmpeg's software "h264" decoder stands in for a hardware one: the path is the same (video_codec;NAME)
    decoder = CameraDecoder("cam", Decoding({"h264": "h264"}))
    assert count_frames(decoder.open(str(gop_clip), ())) == 60
    assert (decoder.codec, decoder.in_use) == ("h264", "h264")
    count_frames(decoder.open(str(gop_clip), ()))  # reconnects go straight to it
    assert decoder.in_use == "h264"


def test_a_hardware_decoder_that_cannot_open_the_stream_falls_back_to_software(gop_clip, caplog):
    decoder = CameraDecoder("cam", Decoding({"h264": "hevc"}), codec="h264")  # opens, but not this codec
    with caplog.at_level(logging.WARNING):
        assert count_frames(decoder.open(str(gop_clip), ())) == 60
    assert decoder.in_use == "software"
    assert "camera cam: the hardware decoder hevc cannot open this stream; decoding in software" in caplog.text


@pytest.fixture
def stand_in_hardware(monkeypatch):
    """The process's detection says "h264 by the decoder named h264": FFmpeg's own, standing in by name."""
    from daemon.video import decoders

    monkeypatch.setattr(decoders, "_detected", detect({"h264": "h264"}))


def test_files_decode_with_the_detected_decoder_and_describe_json_says_which(stand_in_hardware, gop_clip,
                                                                              tiny_model, capsys):
    from daemon.cli import main
    from daemon.video.file import VideoFile

    video = VideoFile(gop_clip)
    assert video.decoder.in_use == "h264" and len(list(video.read([0, 30, 59]))) == 3
    video.close()
    assert main(["describe", "--model", str(tiny_model), "-q", "What moves?", "--max-new-tokens", "2", "--frames", "2", "--json",
                 str(gop_clip)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["video"] == {"decoding": "hardware", "decoders": {"h264": "h264"}, "absent": []}


# ---------------------------------------------------------------- configuration


def test_keyframe_decoding_is_for_cameras_only():
    camera = CameraSettings(name="cam", source="rtsp://cam/main", stream={"gate_decode": "keyframes"})
    assert camera.takes_main_frames
    assert not CameraSettings(name="cam", source="rtsp://cam/main").takes_main_frames
    with pytest.raises(ValueError, match="stream.gate_decode: keyframes applies to cameras"):
        CameraSettings(name="cam", source="/clips/a.mp4", stream={"gate_decode": "keyframes"})
    with pytest.raises(ValueError, match="gate_decode"):
        CameraSettings(name="cam", source="rtsp://cam/main", stream={"gate_decode": "some"})


def test_check_config_names_a_bad_gate_decode(tmp_path, capsys):
    from daemon.cli import main

    path = tmp_path / "config.yaml"
    path.write_text("cameras:\n  - name: porch\n    source: /clips/porch.mp4\n    stream:\n"
                    "      gate_decode: keyframes\n")
    assert main(["check-config", "-c", str(path)]) != 0
    err = capsys.readouterr().err
    assert "cameras[0]" in err and "gate_decode: keyframes applies to cameras" in err


def test_the_watchdog_leaves_a_keyframe_camera_time_for_the_keyframe_after_its_first_window(tmp_path, tiny_model,
                                                                                             capsys):
    from daemon.cli import main

    path = tmp_path / "config.yaml"
    path.write_text(f"model:\n  dir: {tiny_model}\ncameras:\n  - name: porch\n    source: rtsp://cam/main\n"
                    f"    stream:\n      gate_decode: keyframes\nstate_dir: {tmp_path}\nhealth:\n  stall_after: 30\n")
    assert main(["check-config", "-c", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:10: health.stall_after: 30 s is too short for camera porch: its first window may take "
        "stream.open_timeout + span + stride + 10 s for a keyframe = 36 s; raise stall_after above that"]


# ---------------------------------------------------------------- a real camera


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    """10 fps, a keyframe every second (the server's GOP), a thing crossing all the time."""
    scene = Scene(duration=4.0, fps=10.0, noise=2.0, things=(Thing(0.0, 4.0, (40, 80), (240, 100), 0.0, 4.0),))
    server = RtspServer(write_jpeg_frames(tmp_path_factory.mktemp("cam"), scene_frames(scene)), fps=10).start()
    yield server
    server.stop()


@pytest.mark.skipif(bool(gstreamer_rtsp_missing()), reason=str(gstreamer_rtsp_missing()))
def test_the_gate_reads_keyframes_and_passed_windows_get_frames_at_the_segment_midpoints(camera):
    settings = SourceSettings.model_validate({"span": 4.0, "frames": 8, "stream": {
        "open_timeout": 5, "read_timeout": 3, "gate_decode": "keyframes"}})
    events = []
    source = open_source("porch", camera.url(), settings, on_event=events.append)
    main = open_main_frames("porch", camera.url(), settings, source)
    stop = threading.Event()
    main.start(stop)
    windows, taken = source.windows(stop), []
    try:
        deadline = time.monotonic() + 40
        for window in windows:
            full = main.take(window)
            if full is not None:
                taken.append((window, full))
            if len(taken) >= 2 or time.monotonic() > deadline:
                break
    finally:
        stop.set()
        windows.close()
        main.close()
    assert len(taken) >= 2, "no window got the camera's frames"
    assert [e.message for e in events if e.kind == "connected"][0].endswith(
        "(320x240, 10 fps; the gate decodes keyframes only)")
    for window, full in taken:
        gaps = np.diff([f.ts for f in window.frames])
        assert 2 <= len(window.frames) <= 6 and np.median(gaps) > 0.9  # keyframes only: about one a second
        assert window.frames[0].model_input is None  # gate frames: nothing made for the model
        midpoints = segment_times(window.start, window.end, 8)
        assert len(full.frames) == 8 and len({id(f) for f in full.frames}) == 8
        offsets = [round(f.ts - t, 3) for f, t in zip(full.frames, midpoints)]
        assert all(abs(o) < 0.25 for o in offsets), offsets  # the nearest packet; arrival jitters under load
        assert full.frames[0].image.shape == (240, 320, 3)


@pytest.mark.skipif(bool(gstreamer_rtsp_missing()), reason=str(gstreamer_rtsp_missing()))
def test_the_daemon_analyses_a_keyframe_cameras_window_on_frames_at_its_segment_midpoints(camera, tiny_model,
                                                                                           tmp_path):
    from daemons import running
    from mosquitto import wait_until

    from daemon.config import Config

    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model), "system": "You watch a camera."},
        "cameras": [{"name": "yard", "source": camera.url(), "frames": 4, "span": 2.0, "gate": {"enabled": False},
                     "stream": {"gate_decode": "keyframes", "open_timeout": 5, "read_timeout": 3}}],
        "prompts": {"max_new_tokens": 2}, "state_dir": str(tmp_path / "state")})
    with running(cfg) as daemon:
        rows = wait_until(lambda: daemon.history.windows(0, 1e12, "yard", analysed=True), 90, "an analysed window")
    row = rows[0]
    midpoints = segment_times(row.start, row.end, 4)
    assert len(row.frame_ts) == 4 and all(abs(t - m) < 0.25 for t, m in zip(row.frame_ts, midpoints)), row
