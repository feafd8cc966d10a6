"""Window layout (files and live streams), frame sharing, and the `vlmwatch windows` command."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime

import numpy as np
import pytest
from clips import EVENT_SCENE, Scene, Thing, write_scene

from daemon import cli
from daemon.config.cameras import SourceSettings
from daemon.types import Frame
from daemon.video.file import FileSource
from daemon.video.windows import (
    LiveWindows,
    file_layout,
    segment_indices,
    segment_times,
)

# ---------------------------------------------------------------- layout


def test_segment_indices_are_internvl_mid_points():
    # InternVL's get_index(num_segments=8) on 200 frames: the middle of each 25-frame segment.
    assert segment_indices(0, 200, 8) == [12, 37, 62, 87, 112, 137, 162, 187]
    # Uneven segments (7.875 frames), worked by hand with numpy's round-half-to-even.
    assert segment_indices(0, 63, 8) == [3, 11, 19, 27, 35, 42, 50, 58]
    assert segment_indices(100, 300, 8)[0] == 112  # offsets move with the bound


def test_segment_times_are_mid_points():
    assert segment_times(10.0, 18.0, 8) == [10.5, 11.5, 12.5, 13.5, 14.5, 15.5, 16.5, 17.5]


def test_file_layout_default_and_overlap():
    plans = file_layout(frame_count=800, fps=25, span=8, stride=8, frames=8)  # 32 s
    assert [(p.start, p.end) for p in plans] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert plans[0].indices == (12, 37, 62, 87, 112, 137, 162, 187)
    overlapping = file_layout(frame_count=800, fps=25, span=8, stride=4, frames=8)
    assert [p.start for p in overlapping] == [0, 4, 8, 12, 16, 20, 24]
    assert set(overlapping[0].indices[4:]) == set(overlapping[1].indices[:4])  # shared positions


def test_file_layout_keeps_the_tail_and_short_clips():
    tail = file_layout(frame_count=250, fps=25, span=8, stride=8, frames=8)  # 10 s
    assert [(p.start, p.end) for p in tail] == [(0, 8), (2, 10)]
    assert max(tail[-1].indices) <= 249
    short = file_layout(frame_count=75, fps=25, span=8, stride=8, frames=8)  # 3 s
    assert [(p.start, p.end) for p in short] == [(0, 3)]
    gaps = file_layout(frame_count=750, fps=25, span=8, stride=20, frames=8)  # 30 s, sampled every 20 s
    assert [p.start for p in gaps] == [0, 20]
    assert file_layout(frame_count=0, fps=25, span=8, stride=8, frames=8) == []


# ---------------------------------------------------------------- live assembly


def feed(windows: LiveWindows, times, camera="cam"):
    """Offer frames at `times` the way the capture thread does; return (windows, converted frames)."""
    done, converted = [], 0
    for i, ts in enumerate(times):
        if windows.wants(ts):
            converted += 1
            done += windows.add(Frame(camera, ts, i, np.zeros((2, 2, 3), np.uint8)))
    return done, converted


def test_live_windows_take_mid_points_and_convert_only_needed_frames():
    live = LiveWindows("cam", span=8, stride=8, frames=8)
    times = [1000 + i / 25 for i in range(25 * 33)]  # 33 s at 25 fps
    done, converted = feed(live, times)
    assert [(w.start - 1000, w.end - 1000) for w in done] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    for w in done:
        for frame, target in zip(w.frames, segment_times(w.start, w.end, 8)):
            assert 0 <= frame.ts - target < 1 / 25 + 1e-9  # first frame at or after the mid-point
    assert converted == 4 * 8 + 1  # the 33rd second started a fifth window's first frame only


def test_live_overlapping_windows_share_frame_objects():
    live = LiveWindows("cam", span=4, stride=2, frames=8)
    done, converted = feed(live, [i / 25 for i in range(25 * 10)])
    assert len(done) >= 3
    for a, b in zip(done, done[1:]):
        assert all(x is y for x, y in zip(a.frames[4:], b.frames[:4]))
    assert len({id(f) for w in done for f in w.frames}) == converted


def test_live_windows_with_a_pause_inside_are_dropped_and_the_next_whole_one_follows():
    live = LiveWindows("cam", span=2, stride=2, frames=4)
    times = [i / 10 for i in range(10)] + [5 + i / 10 for i in range(30)]  # 4 s without frames
    done, _ = feed(live, times)
    assert live.incomplete == 3  # 0-2, 2-4 and 4-6 s: each misses frames near its mid-points
    assert [w.start for w in done] == [6]  # on the same 2 s grid after the gap; frames end at 7.9 s
    assert all(max(f.ts - t for f, t in zip(w.frames, segment_times(w.start, w.end, 4))) <= 0.5 for w in done)


def test_live_memory_is_bounded():
    live = LiveWindows("cam", span=8, stride=1, frames=8)
    feed(live, [i / 25 for i in range(25 * 60)])
    assert len(live._open) <= 9


# ---------------------------------------------------------------- file windows share frames


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    scene = Scene(duration=8.0, things=(Thing(appear=4.0, leave=9.0, start=(100, 100)),))
    return write_scene(tmp_path_factory.mktemp("clip") / "yard.mp4", scene)


def test_file_overlapping_windows_share_frames(small_clip):
    settings = SourceSettings(span=4, stride=2, frames=8)
    windows = list(FileSource("yard", small_clip, settings).windows(threading.Event()))
    assert len(windows) == 3
    for a, b in zip(windows, windows[1:]):
        assert all(x is y for x, y in zip(a.frames[4:], b.frames[:4]))
        assert b.start - a.start == pytest.approx(2.0)
    assert [f.index for f in windows[0].frames] == segment_indices(0, 40, 8)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def run_cli(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["daemon.cli.windows"])  # only this feature's command

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(["windows", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(scope="module")
def event_clip(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("events") / "events.mp4", EVENT_SCENE)


def test_cli_json_one_object_per_window(run_cli, event_clip):
    code, out, _ = run_cli(str(event_clip), "--span", "4", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 16
    assert set(rows[0]) == {"source", "start", "end", "frame_ts", "change", "analyse", "reason", "regions", "zones"}
    assert rows[0]["source"] == "events"
    assert (rows[0]["change"], rows[0]["analyse"], rows[0]["reason"]) == (None, True, "first window")
    start, end = datetime.fromisoformat(rows[5]["start"]), datetime.fromisoformat(rows[5]["end"])
    assert (end - start).total_seconds() == pytest.approx(4.0)
    assert len(rows[5]["frame_ts"]) == 8
    assert all(start <= datetime.fromisoformat(t) <= end for t in rows[5]["frame_ts"])
    analysed = {i for i, r in enumerate(rows) if r["analyse"]}
    assert analysed == {0, 5, 7, 11, 13}
    assert rows[1]["reason"].startswith("static: ") and rows[1]["regions"] == []
    appeared = rows[5]["regions"][0]  # the 40x40 square at (60, 100) of the 320x240 picture
    x, y, w, h = appeared["px"]
    assert x <= 60 + 40 and 60 <= x + w and y <= 100 + 40 and 100 <= y + h
    assert 0.01 <= appeared["area"] <= 0.04 and rows[5]["change"] == appeared["area"]
    assert rows[5]["reason"] == f"region {100 * appeared['area']:.2f} % at {x},{y},{w},{h}"
    assert rows[5]["zones"] == []


def test_cli_mask_hides_an_event_and_a_bad_mask_is_named(run_cli, event_clip):
    everywhere_left = ["--mask", "0,0 0.6,0 0.6,1 0,1"]
    _, out, _ = run_cli(str(event_clip), "--span", "4", "--json", *everywhere_left)
    analysed = {i for i, line in enumerate(out.splitlines()) if json.loads(line)["analyse"]}
    assert analysed == {0, 13}  # the first square appears (5), moves (7) and leaves (11) left of x = 0.6
    code, _, err = run_cli(str(event_clip), "--mask", "0,0 1,0")
    assert code == 2 and "vlmwatch: error: --mask: Value error, a polygon needs at least 3 points (got 2)" in err


def test_cli_options_limit_no_gate_and_threshold(run_cli, event_clip):
    code, out, _ = run_cli(str(event_clip), "--span", "8", "--stride", "4", "--frames", "4", "--no-gate",
                           "--limit", "3", "--json", "--name", "porch")  # fmt: skip
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    assert all(r["analyse"] and r["source"] == "porch" for r in rows)
    assert [r["reason"] for r in rows[1:]] == ["gate disabled", "gate disabled"]
    assert len(rows[0]["frame_ts"]) == 4
    assert rows[1]["change"] is not None  # scores are still printed for tuning
    _, out, _ = run_cli(str(event_clip), "--span", "4", "--gate-threshold", "0.9", "--json")
    assert sum(json.loads(line)["analyse"] for line in out.splitlines()) == 1  # only the first


def test_cli_human_output(run_cli, event_clip):
    code, out, _ = run_cli(str(event_clip), "--span", "4", "--limit", "2")
    assert code == 0
    first, second = out.splitlines()
    assert first.split() == ["events", "+0.0s..+4.0s", "change", "-", "ANALYSE", "first", "window"]
    assert "skip" in second.split() and "static: largest region" in second


def test_cli_missing_file_is_reported_not_a_crash(run_cli, tmp_path, caplog):
    code, out, _ = run_cli(str(tmp_path / "nope.mp4"))
    assert code == 1 and out == ""
    assert f"camera nope: cannot read {tmp_path / 'nope.mp4'}: no such file; check the path" in caplog.text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--span", "0"], "--span: Input should be greater than 0 (got 0.0)"),
        (["--frames", "100"], "--frames: Input should be less than or equal to 64 (got 100)"),
        (["--gate-threshold", "2"], "--gate-threshold: Input should be less than or equal to 1 (got 2.0)"),
        (["--limit", "0"], "--limit: must be at least 1 (got 0)"),
    ],
)
def test_cli_bad_options_exit_2_with_the_option_named(run_cli, event_clip, argv, message):
    code, _, err = run_cli(str(event_clip), *argv)
    assert code == 2
    assert f"vlmwatch: error: {message}" in err


def test_cli_gives_up_on_a_camera_that_never_answers_without_native_noise(tmp_path):
    """A closed port: the command stops after --timeout with one clear line, and none of OpenCV's or
    FFmpeg's own stderr lines ("[tcp @ 0x...]", "[ WARN:0@...]") interleave with vlmwatch's."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from mosquitto import free_port

    url = f"rtsp://127.0.0.1:{free_port()}/nope"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "daemon", "windows", url, "--limit", "1", "--timeout", "2"],
                          cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and proc.stdout == ""
    assert re.fullmatch(re.escape("vlmwatch: error: 127.0.0.1: no window in 2 s, gave up (--timeout 0 keeps retrying,"
                                  f" as the daemon does); the last attempt: cannot open {url} after ") + r"\d+\.\d"
                        + re.escape(f" s: unreachable: connection refused by {url[7:].split('/')[0]}: nothing listens on"
                                    " that port; check the address and port, and that the camera is on"),
                        lines[-1]), lines[-1]
    assert all(re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (WARNING|INFO) daemon\.|vlmwatch: error:)", line)
               for line in lines), lines
    assert elapsed < 15
