"""Scene-change gate: skip windows in which nothing changed since the model last looked.

Pure logic: a window's frames, the gate state and `now` in; a decision with its
reason and the new state out. No clock, no I/O.

How the change score works:

- Each frame becomes a *signature*: grayscale, area-averaged down to 64 cells
  wide (1280x720 -> 64x36 cells of 20x20 px). Averaging 400 pixels per cell
  divides sensor noise by 20 and smooths compression blocks away.
- The reference is the signature of the last frame of the last *analysed*
  window: what the model saw most recently.
- Gradual light change (dusk, clouds, auto exposure) is global, so a gain and
  an offset fitted between frame and reference (least squares, refitted
  without the outlier cells) cancel it. A gain beyond one exposure stop
  (0.5..2) is not drift but lights switched on or off: the whole picture
  counts as changed.
- A cell has changed when it still differs by more than `CELL_DELTA` gray
  levels and by more than `NOISE_FACTOR` times the pair's own noise level
  (robustly, from the median cell), so the grain of a night picture or of a
  small frame with few pixels per cell is not taken for change.
- A frame's score is the fraction of cells changed; a window's score is the
  largest over its frames, so something seen in one frame only is not
  averaged away.

The default threshold is 0.01 (1 % of the picture), not 0.02, from generated
scenes (`tests/clips.py`: 320x240 and 1280x720; mp4v and MJPEG quality 30;
sensor noise sigma 4..30 levels; light drifting +-25 % over a minute):

- static windows score 0.000 up to noise sigma 8 and at most 0.0013 at
  sigma 12..30 (the noise-scaled cell bar keeps grain out);
- an event scores about the share of the picture that changed: a square of
  0.5 % of the picture appearing or leaving scores 0.005, 1.0 % scores
  0.009..0.012, 2.1 % scores 0.017..0.022 (down to 0.008 at sigma 20..30,
  where the noise bar also hides part of the object);
  a move scores about twice that (old and new place).

At 0.02 half of the 2 % events fall below the bar, so the gate would only
promise things of ~2.5 % of the picture; 0.01 sees things of ~1.3 % (at
1280x720 a 65x185 px person) and still sits 7x above the worst noise floor
measured. Real scenes add leaves, rain and flicker that no synthetic noise
models: raise it for such a camera, lower it (0.005) for small subjects on a
clean picture. `vlmwatch windows SOURCE --no-gate --json` prints the scores
to tune with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from daemon.types import Frame, Window
from daemon.video.settings import GateSettings

SIGNATURE_WIDTH = 64  # cells across; the height follows the aspect ratio
CELL_DELTA = 12.0  # gray levels (of 255) a cell must move, after the light fit, to count as changed
NOISE_FACTOR = 4.0  # a cell must also move this many noise sigmas
GAIN_RANGE = (0.5, 2.0)  # light changing by more than one exposure stop is a change, not drift


@dataclass(frozen=True, eq=False)
class GateState:
    """What the gate remembers per source: the last analysed picture and when."""

    reference: np.ndarray | None = None  # [h, 64] float32 signature of the last analysed frame
    analysed_at: float | None = None  # `now` of the last analysed window


@dataclass(frozen=True)
class Decision:
    analyse: bool
    reason: str  # e.g. "first window", "change 0.034 >= 0.010", "static 0.001 < 0.010"
    change: float | None  # None when there was nothing to compare with


def signature(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 BGR -> [h, 64] float32 grayscale cell means."""
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    height, width = gray.shape
    cells_high = max(1, round(SIGNATURE_WIDTH * height / width))
    return cv2.resize(gray, (SIGNATURE_WIDTH, cells_high), interpolation=cv2.INTER_AREA).astype(np.float32)


def _light_fit(frame: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """The reference with the frame's global gain and offset applied (robust least
    squares), or None when the gain is beyond gradual drift (lights on or off)."""
    x, y = reference.ravel(), frame.ravel()
    keep = np.ones(x.shape, dtype=bool)
    fitted = reference
    for _ in range(2):  # fit, drop cells that changed, fit again
        xs, ys = x[keep], y[keep]
        variance = float(xs.var())
        gain = float(((xs - xs.mean()) * (ys - ys.mean())).mean() / variance) if variance > 1.0 else 1.0
        if not GAIN_RANGE[0] <= gain <= GAIN_RANGE[1]:
            return None
        fitted = gain * reference + float(ys.mean() - gain * xs.mean())
        inliers = np.abs(frame - fitted).ravel() <= CELL_DELTA
        if inliers.sum() < x.size // 2:  # most of the picture changed: keep the first fit
            break
        keep = inliers
    return fitted


def frame_change(frame: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of cells that changed between two signatures, light drift removed."""
    if frame.shape != reference.shape:
        return 1.0  # resolution or aspect changed: a different picture
    fitted = _light_fit(frame, reference)
    if fitted is None:
        return 1.0  # the light jumped: the whole picture changed
    residual = np.abs(frame - fitted)
    # A grainy picture (night, small frames: few pixels per cell) raises the bar
    # above its own noise level, estimated robustly from the median cell.
    noise = 1.4826 * float(np.median(residual))
    return float(np.mean(residual > max(CELL_DELTA, NOISE_FACTOR * noise)))


def window_change(signatures: Sequence[np.ndarray], reference: np.ndarray) -> float:
    """The largest frame change in a window: one frame with an event is enough."""
    return max(frame_change(s, reference) for s in signatures)


def decide(
    frames: Sequence[Frame], state: GateState, settings: GateSettings, now: float
) -> tuple[Decision, GateState]:
    """Analyse this window or skip it? Returns the decision and the gate's next state."""
    signatures = [signature(f.image) for f in frames]
    analysed = GateState(reference=signatures[-1], analysed_at=now)
    if state.reference is None:
        return Decision(True, "first window", None), analysed
    change = window_change(signatures, state.reference)
    if not settings.enabled:
        return Decision(True, "gate disabled", change), analysed
    if change >= settings.threshold:
        return Decision(True, f"change {change:.3f} >= {settings.threshold:.3f}", change), analysed
    since = now - (state.analysed_at if state.analysed_at is not None else now)
    if since >= settings.heartbeat:
        return Decision(True, f"heartbeat: {since:.0f} s since last analysis", change), analysed
    return Decision(False, f"static {change:.3f} < {settings.threshold:.3f}", change), state


class Gate:
    """`decide` with the state kept for one source; not thread-safe (one per source)."""

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self.state = GateState()

    def check(self, window: Window, now: float) -> tuple[Window, Decision]:
        """The window with its change score filled in, and whether to analyse it."""
        decision, self.state = decide(window.frames, self.state, self.settings, now)
        return replace(window, change=decision.change), decision
