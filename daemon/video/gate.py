"""Scene-change gate: skip windows in which nothing changed since the model last looked.

Pure: a window's frames, the gate state and `now` in; a decision with its reason,
the changed regions and the zones they touch, and the new state out. `Gate` keeps
the state for one source and takes triggers.

Each frame becomes a ~100-cell-high grayscale signature and is compared with the
last analysed frame's: a global gain and offset are fitted first, so drifting light
is not change; a contrast jump beyond one stop is lights switched, and a picture
that no longer correlates with the reference is another scene (a cut, a clip
starting again), where no gain exists. Cells that still differ by more than
`CELL_DELTA` and the picture's own noise form regions; one of at least `threshold`
makes the window analysed. Why these constants, and what they were measured on:
docs/gate.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from threading import Lock
from typing import Sequence

import numpy as np

from daemon.config.cameras import GateSettings, Polygon
from daemon.types import Frame, Region, Window
from daemon.video.regions import components, polygon_cells, to_regions, zones_touched

SIGNATURE_HEIGHT = 100  # cells high, as Frigate's motion frame; the width follows the aspect ratio
BLUR = 3  # cells: a box blur over the signature divides uncorrelated noise by 3
CELL_DELTA = 16.0  # gray levels (of 255) a cell must move, after the light fit, to count as changed
NOISE_FACTOR = 4.5  # a cell must also move this many noise sigmas of its picture
GAIN_RANGE = (0.5, 2.0)  # light changing by more than one exposure stop is a change, not drift
CUT_CORRELATION = 0.5  # below: another picture, not the same one in other light (cuts measured near 0)
MIN_GAIN = 0.01  # a frame with no contrast left (lights off, lens covered) reads as gain 0.01
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


@dataclass(frozen=True)
class LightFit:
    """How a frame relates to the reference as a whole: `gain` (> 0, its contrast against the
    reference's) outside GAIN_RANGE is a light switched; `correlation` below CUT_CORRELATION is
    another picture (a cut, a clip starting again, a camera turned), for which no gain exists."""

    gain: float = 1.0
    correlation: float = 1.0

    @property
    def jumped(self) -> bool:
        return self.correlation < CUT_CORRELATION or not GAIN_RANGE[0] <= self.gain <= GAIN_RANGE[1]

    def reason(self) -> str:
        if self.correlation < CUT_CORRELATION:
            return f"scene changed: correlation {self.correlation:.2f} with the last analysed picture"
        return f"light changed: gain {self.gain:.2f}"

    def extremity(self) -> float:
        """How far from `same picture, same light`: a cut beats any gain."""
        if self.correlation < CUT_CORRELATION:
            return math.inf
        return abs(math.log(max(self.gain, MIN_GAIN)))


def _light_fit(frame: np.ndarray, reference: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, LightFit]:
    """The reference with the frame's global gain and offset applied (robust least squares over the
    `valid` cells, all without), and how the frame relates to it (see LightFit)."""
    x, y = (reference.ravel(), frame.ravel()) if valid is None else (reference[valid], frame[valid])
    if x.size == 0:
        return reference, LightFit()
    mx, my = float(x.mean()), float(y.mean())
    var_x, var_y = float(np.dot(x - mx, x - mx)) / x.size, float(np.dot(y - my, y - my)) / x.size
    if var_x <= 1.0:  # a flat reference (dark, fogged): only an offset can be fitted
        return reference + (my - mx), LightFit()
    contrast = max(math.sqrt(var_y / var_x), MIN_GAIN)
    if not GAIN_RANGE[0] <= contrast <= GAIN_RANGE[1]:  # lights on or off: the picture's contrast jumped
        return reference, LightFit(gain=contrast)
    correlation = float(np.dot(x - mx, y - my)) / x.size / math.sqrt(var_x * var_y)
    if correlation < CUT_CORRELATION:  # same contrast, unrelated content: not a light change at all
        return reference, LightFit(gain=contrast, correlation=correlation)
    xs, ys = x, y
    gain, offset = 1.0, 0.0
    for attempt in range(2):  # fit, drop cells that changed, fit again
        sx, sy = float(xs.mean()), float(ys.mean())
        variance = float(np.dot(xs - sx, xs - sx)) / xs.size
        fitted = float(np.dot(xs - sx, ys - sy)) / xs.size / variance if variance > 1.0 else 1.0
        if not GAIN_RANGE[0] <= fitted <= GAIN_RANGE[1]:
            if attempt == 0:  # correlated but its fitted gain beyond a stop: a light change
                return reference, LightFit(gain=fitted, correlation=correlation)
            break  # the refit on the inliers is worse: keep the first fit
        gain, offset = fitted, sy - fitted * sx
        inliers = np.abs(y - gain * x - offset) <= CELL_DELTA
        if inliers.sum() < x.size // 2:  # most of the picture changed: keep the first fit
            break
        xs, ys = x[inliers], y[inliers]
    return gain * reference + offset, LightFit(gain=gain, correlation=correlation)


@dataclass(frozen=True, eq=False)
class FrameChange:
    changed: np.ndarray  # [h, w] bool: cells of the regions of at least `min_area`
    largest: float  # the largest region's share of the picture, however small
    jump: LightFit | None = None  # set when the light or the scene jumped (the whole picture counts as changed)


def frame_change(frame: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None,
                 min_area: float) -> FrameChange:
    """Connected regions of cells that changed between two signatures, light drift removed."""
    if frame.shape != reference.shape:  # resolution or aspect changed: a different picture
        return FrameChange(np.ones(reference.shape, bool), 1.0)
    valid = None if ignore is None else ~ignore
    fitted, fit = _light_fit(frame, reference, valid)
    if fit.jumped:
        return FrameChange(np.ones(frame.shape, bool) if valid is None else valid, 1.0, fit)
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
    any frame, and the most extreme light or scene jump if there was one."""
    union = np.zeros(reference.shape, bool)
    largest, jump = 0.0, None
    for sig in signatures:
        change = frame_change(sig, reference, ignore, min_area)
        union |= change.changed
        largest = max(largest, change.largest)
        if change.jump is not None and (jump is None or change.jump.extremity() > jump.extremity()):
            jump = change.jump
    return FrameChange(union, largest, jump)


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
    score = 1.0 if change.jump is not None else regions[0].area if regions else change.largest

    def analyse(reason: str) -> tuple[Decision, GateState]:
        return Decision(True, reason, score, regions, touched), analysed

    if forced:
        return analyse(forced)
    if not settings.enabled:
        return analyse("gate disabled")
    if change.jump is not None:
        return analyse(change.jump.reason())
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

    def __init__(self, settings: GateSettings, zones: Zones = ()) -> None:
        self.settings, self.zones = settings, tuple(zones)
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
        return replace(window, change=decision.change, regions=decision.regions, zones=decision.zones,
                       trigger=trigger), decision
