"""Where windows lie and which frames they take, and the `vlmwatch windows` command.

A window covers `span` seconds; windows start every `stride` seconds (less
than `span` overlaps them); each takes `frames` frames at the mid-points of
equal segments, as InternVL's `get_index(num_segments=frames)` does for video.

Files are laid out by frame index along their own timeline (`file_layout`);
live streams by wall-clock time as frames arrive (`LiveWindows`). Either way a
frame that two overlapping windows both want is one `Frame` object, so the
engine's ViT feature cache (keyed by frame identity) computes it once.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from daemon.errors import UsageError
from daemon.gate import Decision, Gate
from daemon.types import Frame, Window

log = logging.getLogger(__name__)


def segment_indices(start_idx: int, end_idx: int, num_segments: int) -> list[int]:
    """InternVL's `get_index` for one bound: the middle frame of each of `num_segments`
    equal segments of [start_idx, end_idx]."""
    seg_size = float(end_idx - start_idx) / num_segments
    return [int(start_idx + seg_size / 2 + np.round(seg_size * i)) for i in range(num_segments)]


def segment_times(start: float, end: float, num_segments: int) -> list[float]:
    """The same mid-points in seconds, for live streams."""
    seg = (end - start) / num_segments
    return [start + seg * (i + 0.5) for i in range(num_segments)]


@dataclass(frozen=True)
class FileWindow:
    """One planned window of a file: media seconds and the frame indices it takes."""

    start: float
    end: float
    indices: tuple[int, ...]


def file_layout(frame_count: int, fps: float, span: float, stride: float, frames: int) -> list[FileWindow]:
    """Windows every `stride` s along a file. A window that would start inside the
    file but run past its end is pulled back to end with the file, so the tail of
    a clip (where an NVR export often ends on the event) is never dropped."""
    if frame_count <= 0 or fps <= 0:
        return []
    duration = frame_count / fps
    starts: list[float] = []
    k = 0
    while k * stride + span <= duration + 1e-6:
        starts.append(k * stride)
        k += 1
    if k * stride < duration - 1e-6:  # the next window would start inside the file
        tail = max(0.0, duration - span)
        if not starts or tail > starts[-1] + 1e-6:
            starts.append(tail)
    plans = []
    for start in starts:
        end = min(start + span, duration)
        indices = segment_indices(round(start * fps), min(round(end * fps), frame_count - 1), frames)
        plans.append(FileWindow(start, end, tuple(indices)))
    return plans


@dataclass(eq=False)
class _OpenWindow:
    start: float
    end: float
    targets: list[float]
    frames: list[Frame | None] = field(default_factory=list)


class LiveWindows:
    """Assembles windows from a live stream of frame timestamps.

    The capture thread asks `wants(ts)` for every frame it grabs and converts
    only the frames that fill a segment mid-point (the first frame at or after
    it), so frames no window needs are never converted or kept. Memory is
    bounded: at most ceil(span / stride) + 1 windows are open at a time.
    """

    def __init__(self, camera: str, span: float, stride: float, frames: int) -> None:
        self.camera, self.span, self.stride, self.frames = camera, span, stride, frames
        self.max_lag = span / frames  # a frame later than this after its mid-point belongs elsewhere
        self.incomplete = 0  # windows dropped because the stream paused inside them
        self._open: list[_OpenWindow] = []
        self._next_start: float | None = None

    def reset(self) -> None:
        """Forget partial windows (after a reconnect: they would span the gap)."""
        self._open.clear()
        self._next_start = None

    def _open_until(self, ts: float) -> None:
        if self._next_start is None:
            self._next_start = ts  # windows are anchored at the first frame
        while self._next_start <= ts:
            start = self._next_start
            targets = segment_times(start, start + self.span, self.frames)
            self._open.append(_OpenWindow(start, start + self.span, targets, [None] * self.frames))
            self._next_start = start + self.stride

    def wants(self, ts: float) -> bool:
        """Does a frame grabbed at `ts` fill any window's segment mid-point?"""
        self._open_until(ts)
        return any(f is None and t <= ts for w in self._open for t, f in zip(w.targets, w.frames))

    def add(self, frame: Frame) -> list[Window]:
        """Place a frame in every open window that wants it; return the windows now complete."""
        self._open_until(frame.ts)
        done: list[Window] = []
        still_open: list[_OpenWindow] = []
        for w in self._open:
            for i, target in enumerate(w.targets):
                if w.frames[i] is None and target <= frame.ts:
                    w.frames[i] = frame
            if any(f is not None and f.ts - t > self.max_lag for f, t in zip(w.frames, w.targets)):
                self.incomplete += 1
                log.debug("camera %s: window at %.1f dropped: stream paused inside it", self.camera, w.start)
            elif all(f is not None for f in w.frames):
                done.append(Window(self.camera, w.start, w.end, tuple(w.frames)))  # type: ignore[arg-type]
            else:
                still_open.append(w)
        self._open = still_open
        return done


# ---------------------------------------------------------------- CLI


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "windows",
        help="run a source and the gate without a model; one line per window",
        description="Run a camera, video file or folder through windowing and the scene-change gate, "
        "without any model, and print one line per window. Use it to tune span, stride and the gate.",
    )
    p.add_argument("source", metavar="SOURCE", help="rtsp://, rtsps://, http(s):// URL, video file, or folder of clips")
    p.add_argument("--name", help="source name in the output (default: file name, folder name or host)")
    p.add_argument("--span", type=float, help="seconds a window covers (default 8)")
    p.add_argument("--stride", type=float, help="seconds between window starts (default: span)")
    p.add_argument("--frames", type=int, help="frames per window (default 8)")
    p.add_argument(
        "--gate-threshold", type=float, metavar="X", help="fraction of the picture that must change (default 0.01)"
    )
    p.add_argument("--no-gate", action="store_true", help="analyse every window (change scores are still printed)")
    p.add_argument("--realtime", action="store_true", help="replay files at wall-clock speed")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N windows")
    p.add_argument("--state-dir", help="folder sources: remember processed clips here across runs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_windows)


def settings_from_args(args):
    """SourceSettings from command-line options; a bad value is a UsageError naming the option."""
    from pydantic import ValidationError

    from daemon.sources import SourceSettings

    values: dict = {"gate": {}}
    for key in ("span", "stride", "frames"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.realtime:
        values["realtime"] = True
    if args.gate_threshold is not None:
        values["gate"]["threshold"] = args.gate_threshold
    if args.no_gate:
        values["gate"]["enabled"] = False
    try:
        return SourceSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        option = "--" + "-".join(str(part) for part in err["loc"]).replace("_", "-")
        raise UsageError(f"{option}: {err['msg']} (got {err.get('input')!r})") from None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def window_json(window: Window, decision: Decision) -> str:
    return json.dumps(
        {
            "source": window.camera,
            "start": _iso(window.start),
            "end": _iso(window.end),
            "frame_ts": [_iso(t) for t in window.frame_ts],
            "change": None if window.change is None else round(window.change, 4),
            "analyse": decision.analyse,
            "reason": decision.reason,
        }
    )


def window_line(window: Window, decision: Decision, origin: float) -> str:
    """Human-readable; times relative to the first window (`origin`)."""
    change = "-" if window.change is None else f"{window.change:.4f}"
    verdict = "ANALYSE" if decision.analyse else "skip"
    span = f"+{window.start - origin:.1f}s..+{window.end - origin:.1f}s"
    return f"{window.camera}  {span:>17}  change {change:>6}  {verdict:7}  {decision.reason}"


def run_windows(args) -> int:
    from daemon.sources import open_source, source_name

    settings = settings_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit: must be at least 1 (got {args.limit})")
    errors = []  # already logged by the source, with the remedy

    def on_event(event) -> None:
        if event.kind == "error":
            errors.append(event)

    name = args.name or source_name(args.source)
    source = open_source(name, args.source, settings, on_event=on_event, state_dir=args.state_dir)
    gate, stop = Gate(settings.gate), threading.Event()
    windows, count, origin = source.windows(stop), 0, None
    try:
        for window in windows:
            window, decision = gate.check(window, now=window.end)  # the source's timeline, also for fast replays
            origin = window.start if origin is None else origin
            print(window_json(window, decision) if args.json else window_line(window, decision, origin), flush=True)
            count += 1
            if args.limit and count >= args.limit:
                break
    finally:
        stop.set()
        windows.close()
    # A camera that failed and came back reached the limit: fine. A file that ended on an error: not.
    return 1 if errors and not (args.limit and count >= args.limit) else 0
