"""Scene-change gate: skip windows in which nothing changed since the model last looked.

Pure logic: a window's frames, the gate state and `now` in; a decision with its
reason, the changed regions and the zones they touch, and the new state out.
No clock, no I/O. `Gate` keeps the state for one source and takes triggers.

How a window is scored (what a motion detector such as Frigate's sees):

- Each frame becomes a *signature*: grayscale, area-averaged into k x k pixel
  cells with k = round(height / 100) (1080p: 98 x 174 cells of 11 px; 320x240:
  120 x 160 of 2 px), then box-blurred over 3 x 3 cells. A thing of 0.1 % of
  the picture covers about 4 x 4 cells at any resolution.
- The reference is the signature of the last frame of the last *analysed*
  window: what the model saw most recently.
- Gradual light change (dusk, clouds, auto exposure) is global, so a gain and
  an offset fitted between frame and reference (least squares, refitted
  without the outlier cells) cancel it. A gain beyond one exposure stop
  (0.5..2) is not drift but lights switched on or off: the whole picture
  counts as changed. Masked cells take no part in the fit.
- A cell has changed when it still differs by more than `CELL_DELTA` gray
  levels and by more than `NOISE_FACTOR` times the picture's own noise level
  (robustly, from the median cell), so the grain of a night picture is not
  taken for change, and when it also differs that much from the reference as
  it was (before the light fit): a cell that still equals it is a block the
  encoder did not update while the light changed.
- Changed cells are grouped into 8-connected regions; a region of at least
  `threshold` of the picture (default 0.05 %) is an event, scattered single
  cells are noise. A window is analysed when any frame has such a region; its
  regions are the union over its frames (a moving thing leaves one track),
  and `change` is the largest region's share of the picture.

Measured on generated scenes (tests/gate_scenes.py; `python benchmarks/bench_gate.py`
prints the table): a textured room at 320x240, 640x360, 1280x720 and 1920x1080,
sensor noise sigma 0, 8 and 30 gray levels, light drifting +-25 %, frames
through x264 at constant quantizer 38 (a low-quality camera stream; a keyframe
every 8 s, or every 32 s for the first two points), OpenCV's mp4v, or raw;
things with at least 80 gray levels of contrast:

- a thing of 0.1 % of the picture appearing, leaving or moving was found
  (analysed, with a region on it) in every trial of every combination; the
  smallest found in every trial was 0.025 % to 0.05 % of the picture;
- static scenes: no false window in 30 windows (4 min) of any combination,
  nor in an hour (450 windows) at 320x240 and 640x360, sigma 30, x264;
- an exposure step (x1.6) inside a window analyses no window (the light fit
  takes it), a switch to infrared (colour -> gray, other tones) or back at
  most one. Before the not-updated-block test, the switch back through x264
  under fast drift (+-25 % in 72 s) analysed 3 of 8 windows at 320x240. With
  a keyframe only every 32 s the encoder refines the picture for half a
  minute after a switch, and 320x240 took 2 windows (cameras send a keyframe
  every 1-4 s and usually a new one at the switch);
- CELL_DELTA = 10 analysed 7 of 30 static windows at 320x240 without sensor
  noise through x264: under drift the codec updates brightness block by block,
  in steps of its quantizer; 16 analysed none and still finds 0.05 % things;
- cost: 1.3 ms per 1080p frame for the signature (an exact integer reduction;
  a fractional INTER_AREA resize took 8 ms) and 0.3 ms for the comparison;
  per 8-frame 1080p window 15.1 ms against 15.5 ms for the 64-cell gate it
  replaced, side by side (18.4 against 18.0 ms in a more loaded run).

Real scenes add leaves, rain and flicker that no synthetic noise models: mask
them (`gate.masks`), or raise `threshold` for such a camera. `vlmwatch windows
SOURCE --json` prints every window's regions to tune with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from threading import Lock
from typing import Callable, Sequence

import numpy as np

from daemon.config.cameras import GateSettings, Polygon
from daemon.types import Frame, Region, Window
from daemon.video.regions import components, polygon_cells, to_regions, zones_touched

SIGNATURE_HEIGHT = 100  # cells high, as Frigate's motion frame; the width follows the aspect ratio
BLUR = 3  # cells: a box blur over the signature divides uncorrelated noise by 3
CELL_DELTA = 16.0  # gray levels (of 255) a cell must move, after the light fit, to count as changed
NOISE_FACTOR = 4.5  # a cell must also move this many noise sigmas of its picture
GAIN_RANGE = (0.5, 2.0)  # light changing by more than one exposure stop is a change, not drift
Zones = tuple[tuple[str, Polygon], ...]  # (name, polygon), in relative coordinates


@dataclass(frozen=True, eq=False)
class GateState:
    """What the gate remembers per source: the last analysed picture and when."""

    reference: np.ndarray | None = None  # [100, w] float32 signature of the last analysed frame
    analysed_at: float | None = None  # `now` of the last analysed window


@dataclass(frozen=True)
class Decision:
    analyse: bool
    reason: str  # e.g. "first window", "region 0.12 % at 812,300,52,60", "static: largest region 0.008 % < 0.050 %"
    change: float | None  # share of the picture: the largest region, or (static) the largest below the
    # threshold in any frame; 1.0 when the light or the picture size changed; None: nothing to compare with
    regions: tuple[Region, ...] = ()  # connected changed regions of at least `threshold`, largest first
    zones: frozenset[str] = frozenset()  # the zones those regions touch


def signature(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 BGR -> [~100, w] float32 grayscale cell means, box-blurred over 3x3 cells.

    Cells are k x k pixels with k = round(H / 100), so the resize is an exact integer
    reduction (OpenCV's fast path: 1 ms at 1080p, against 8 ms for a fractional one); the
    last H mod k rows and W mod k columns (at most k - 1 pixels) are left out."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    height, width = gray.shape
    k = max(1, round(height / SIGNATURE_HEIGHT))
    rows, cols = max(1, height // k), max(1, width // k)
    small = cv2.resize(gray[: rows * k, : cols * k], (cols, rows), interpolation=cv2.INTER_AREA)
    return cv2.blur(small.astype(np.float32), (BLUR, BLUR), borderType=cv2.BORDER_REFLECT)


def _light_fit(frame: np.ndarray, reference: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, float]:
    """The reference with the frame's global gain and offset applied (robust least squares over the
    `valid` cells, all without), and the gain; the caller treats a gain outside GAIN_RANGE as
    lights switched on or off."""
    x, y = (reference.ravel(), frame.ravel()) if valid is None else (reference[valid], frame[valid])
    xs, ys = x, y
    gain, offset = 1.0, 0.0
    for _ in range(2):  # fit, drop cells that changed, fit again
        mx, my = float(xs.mean()) if xs.size else 0.0, float(ys.mean()) if ys.size else 0.0
        variance = float(np.dot(xs - mx, xs - mx)) / max(1, xs.size)
        gain = float(np.dot(xs - mx, ys - my)) / max(1, xs.size) / variance if variance > 1.0 else 1.0
        if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
            return reference, gain
        offset = my - gain * mx
        inliers = np.abs(y - gain * x - offset) <= CELL_DELTA
        if inliers.sum() < x.size // 2:  # most of the picture changed: keep the first fit
            break
        xs, ys = x[inliers], y[inliers]
    return gain * reference + offset, gain


@dataclass(frozen=True, eq=False)
class FrameChange:
    changed: np.ndarray  # [h, w] bool: cells of the regions of at least `min_area`
    largest: float  # the largest region's share of the picture, however small
    gain: float | None = None  # set when the light jumped (the whole picture counts as changed)


def frame_change(frame: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None,
                 min_area: float) -> FrameChange:
    """Connected regions of cells that changed between two signatures, light drift removed."""
    if frame.shape != reference.shape:  # resolution or aspect changed: a different picture
        return FrameChange(np.ones(reference.shape, bool), 1.0)
    valid = None if ignore is None else ~ignore
    fitted, gain = _light_fit(frame, reference, valid)
    if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
        return FrameChange(np.ones(frame.shape, bool) if valid is None else valid, 1.0, gain)
    residual = np.abs(frame - fitted)
    if valid is not None:
        residual[~valid] = 0.0
    # A grainy picture (night, small or compressed frames) raises the bar above its own noise
    # level, estimated robustly from the median cell (a partition, cheaper than a sort).
    shown = residual.ravel() if valid is None else residual[valid]
    noise = 1.4826 * float(np.partition(shown, shown.size // 2)[shown.size // 2]) if shown.size else 0.0
    bar = max(CELL_DELTA, NOISE_FACTOR * noise)
    # A cell that still shows the reference unadjusted is a block the encoder did not update while
    # the light changed (H.264 skips blocks until their error exceeds its quantizer), not a thing.
    changed = (residual > bar) & (np.abs(frame - reference) > bar)
    if not changed.any():
        return FrameChange(changed, 0.0)
    labels, stats = components(changed)
    cells = stats[:, 4]
    keep = np.zeros(len(stats) + 1, bool)
    keep[1:] = cells >= max(1.0, min_area * frame.size)  # the regions that count, by label
    return FrameChange(keep[labels], float(cells.max()) / frame.size)


def window_change(signatures: Sequence[np.ndarray], reference: np.ndarray, ignore: np.ndarray | None = None,
                  min_area: float = 0.0) -> FrameChange:
    """The union of every frame's regions (one frame with an event is enough), the largest region of
    any frame, and the most extreme light jump if there was one."""
    union = np.zeros(reference.shape, bool)
    largest, gain = 0.0, None
    for sig in signatures:
        change = frame_change(sig, reference, ignore, min_area)
        union |= change.changed
        largest = max(largest, change.largest)
        if change.gain is not None and (gain is None or abs(np.log(change.gain)) > abs(np.log(gain))):
            gain = change.gain
    return FrameChange(union, largest, gain)


def _percent(share: float) -> str:
    return f"{100 * share:.2f} %" if share >= 0.0001 else f"{100 * share:.3f} %"


def decide(frames: Sequence[Frame], state: GateState, settings: GateSettings, now: float, *,
           zones: Zones = (), trigger: str | None = None) -> tuple[Decision, GateState]:
    """Analyse this window or skip it? Returns the decision and the gate's next state.

    `zones`: the camera's named polygons, reported when changed regions touch them.
    `trigger`: an external trigger (e.g. a Frigate event) that makes this window analysed
    whatever the picture says; it becomes the reason."""
    signatures = [signature(f.image) for f in frames]
    analysed = GateState(reference=signatures[-1], analysed_at=now)
    forced = f"trigger: {trigger}" if trigger else None
    if state.reference is None:
        return Decision(True, forced or "first window", None), analysed
    reference = state.reference
    if any(sig.shape != reference.shape for sig in signatures):  # another resolution or aspect: a new picture
        whole = (Region(0.0, 0.0, 1.0, 1.0, 1.0),)
        touched = frozenset(name for name, _ in zones)
        return Decision(True, forced or "picture size changed", 1.0, whole, touched), analysed
    ignore = polygon_cells(settings.masks, reference.shape) if settings.masks else None
    change = window_change(signatures, reference, ignore, settings.threshold)
    _, stats = components(change.changed)
    regions = to_regions(stats, reference.shape)
    touched = zones_touched(change.changed, zones)
    score = 1.0 if change.gain is not None else regions[0].area if regions else change.largest

    def analyse(reason: str) -> tuple[Decision, GateState]:
        return Decision(True, reason, score, regions, touched), analysed

    if forced:
        return analyse(forced)
    if not settings.enabled:
        return analyse("gate disabled")
    if change.gain is not None:
        return analyse(f"light changed: gain {change.gain:.2f}")
    if regions:
        height, width = frames[-1].image.shape[:2]
        x, y, w, h = regions[0].pixels(width, height)
        more = f" (+{len(regions) - 1} more)" if len(regions) > 1 else ""
        return analyse(f"region {_percent(regions[0].area)} at {x},{y},{w},{h}{more}")
    since = now - (state.analysed_at if state.analysed_at is not None else now)
    if since >= settings.heartbeat:
        return analyse(f"heartbeat: {since:.0f} s since last analysis")
    reason = f"static: largest region {_percent(change.largest)} < {_percent(settings.threshold)}"
    return Decision(False, reason, score, regions, touched), state


class Gate:
    """`decide` with the state kept for one source. `check` runs on the source's capture thread;
    `trigger` may be called from any thread (MQTT) and applies to the next window checked."""

    def __init__(self, settings: GateSettings, zones: Zones = (),
                 prepare: Callable[[Window], Window] | None = None) -> None:
        """`prepare`: what a window that passes gets before it leaves the capture thread (the ViT's
        input, `daemon.video.frames.Preparer`)."""
        self.settings, self.zones, self.prepare = settings, tuple(zones), prepare
        self.state = GateState()
        self._lock = Lock()
        self._trigger: str | None = None

    def trigger(self, reason: str) -> None:
        """Analyse the next window whatever the picture says, with `reason` recorded (the first
        trigger wins until that window is checked)."""
        with self._lock:
            self._trigger = self._trigger or reason

    def check(self, window: Window, now: float) -> tuple[Window, Decision]:
        """The window with its change, regions, zones (and trigger) filled in, and whether to analyse it."""
        with self._lock:
            trigger, self._trigger = self._trigger, None
        decision, self.state = decide(window.frames, self.state, self.settings, now, zones=self.zones,
                                      trigger=trigger)
        if decision.analyse and self.prepare is not None:
            window = self.prepare(window)
        return replace(window, change=decision.change, regions=decision.regions, zones=decision.zones,
                       trigger=trigger), decision
