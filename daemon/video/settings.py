"""Per-source settings: windowing, the gate, camera connections and folder watching.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator


Point = tuple[float, float]
Polygon = tuple[Point, ...]


def parse_polygon(value) -> Polygon:
    """A polygon in relative coordinates (0..1, x to the right, y down): a list of [x, y] pairs,
    or the text "x,y x,y x,y ..."; at least 3 points. ValueError says what is wrong."""
    if isinstance(value, str):
        pairs = []
        for word in value.replace(";", " ").split():
            parts = word.split(",")
            if len(parts) != 2:
                raise ValueError(f"point {word!r} is not x,y (write \"x,y x,y x,y\" with 0..1 coordinates)")
            try:
                pairs.append((float(parts[0]), float(parts[1])))
            except ValueError:
                raise ValueError(f"point {word!r} is not two numbers x,y") from None
        value = pairs
    if not isinstance(value, (list, tuple)):
        raise ValueError("a polygon is a list of [x, y] points, or the text \"x,y x,y x,y ...\"")
    points = []
    for point in value:
        if (not isinstance(point, (list, tuple)) or len(point) != 2
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in point)):
            raise ValueError(f"point {point!r} is not a pair of numbers [x, y]")
        x, y = float(point[0]), float(point[1])
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point [{x:g}, {y:g}] is outside the picture: coordinates are relative, 0..1 "
                             "(0,0 top left; 1,1 bottom right)")
        points.append((x, y))
    if len(points) < 3:
        raise ValueError(f"a polygon needs at least 3 points (got {len(points)})")
    return tuple(points)


PolygonField = Annotated[Polygon, BeforeValidator(parse_polygon)]


class GateSettings(BaseModel):
    """Per-source scene-change gate (`gate:` under a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Skip windows without scene change; false analyses every window.")
    threshold: float = Field(
        0.0005,
        ge=0.0,
        le=1.0,
        description="Smallest connected changed region, as a fraction of the picture, that makes a window "
        "analysed (against the last analysed window). 0.0005 = 0.05 %: a thing of 0.1 % of the picture is seen.",
    )
    heartbeat: float = Field(
        600.0,
        gt=0,
        description="Seconds: analyse a window at least this often even in a static scene, so descriptions stay fresh.",
    )
    masks: tuple[PolygonField, ...] = Field(
        (),
        description="Polygons (relative coordinates 0..1) whose change the gate ignores: a swaying tree, a road, "
        "a timestamp overlay. Each is a list of [x, y] points or the text \"x,y x,y x,y ...\".",
    )


# ---------------------------------------------------------------- settings

LIVE_DECODE_THREADS = 2  # a 25 fps 1080p camera on the board's A55 cores needs more than one
FILE_DECODE_THREADS = 1  # a recording is read at the NPU's pace: one thread is far ahead of it


class StreamSettings(BaseModel):
    """Camera connection behaviour (`stream:` under a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    open_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a camera to answer when connecting.")
    read_timeout: float = Field(
        5.0, gt=0, description="Seconds without a frame after which the stream counts as frozen and is reopened."
    )
    retry_min: float = Field(1.0, gt=0, description="Seconds before the first reconnect attempt.")
    retry_max: float = Field(60.0, gt=0, description="Cap of the exponential reconnect backoff, seconds.")
    queue: int = Field(
        2, ge=1, description="Finished windows held for a slow consumer; the oldest is dropped (and counted) beyond."
    )

    @model_validator(mode="after")
    def _retry_order(self) -> "StreamSettings":
        if self.retry_min > self.retry_max:
            raise ValueError(f"retry_min ({self.retry_min}) must not exceed retry_max ({self.retry_max})")
        return self


class FolderSettings(BaseModel):
    """Watching a folder of clips (`folder:` under a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll: float = Field(2.0, gt=0, description="Seconds between scans of the folder for new clips.")
    settle: float = Field(
        5.0, ge=0, description="Seconds a clip's size must stay unchanged before it counts as completely written."
    )


class SourceSettings(BaseModel):
    """Per-source windowing, gating and connection settings (embedded under each camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    span: float = Field(8.0, gt=0, description="Seconds of video one window covers.")
    stride: float = Field(
        8.0, gt=0, description="Seconds between window starts; default: same as span. Smaller overlaps windows."
    )
    frames: int = Field(8, ge=1, le=64, description="Frames per window, taken at the mid-points of equal segments.")
    realtime: bool = Field(
        False, description="Files only: emit windows at wall-clock speed, as if the recording were live."
    )
    picture_width: int = Field(
        640,
        ge=0,
        description="Frames keep their picture (what the gate compares and alert snapshots show) at most this "
        "many pixels wide; the model's 448x448 input is cut from the full picture first, so this never changes "
        "what the model sees. 0 keeps full resolution (a 1080p frame is 6.2 MB instead of 0.7 MB).",
    )
    decode_threads: int | None = Field(
        None,
        ge=0,
        description="FFmpeg decoder threads of this camera or file. Each holds its own frame buffers (about "
        "10 MB at 1080p). Unset: 2 for cameras (they must keep up with real time), 1 for files (read at the "
        "NPU's pace); 0 lets FFmpeg use one per CPU.",
    )
    gate: GateSettings = Field(default_factory=GateSettings, description="Scene-change gate.")
    stream: StreamSettings = Field(default_factory=StreamSettings, description="Camera connection and reconnects.")
    folder: FolderSettings = Field(default_factory=FolderSettings, description="Folder watching.")

    def threads(self, live: bool) -> int:
        """FFmpeg decoder threads for a camera (`live`) or a file: `decode_threads`, or the default."""
        if self.decode_threads is not None:
            return self.decode_threads
        return LIVE_DECODE_THREADS if live else FILE_DECODE_THREADS

    @model_validator(mode="before")
    @classmethod
    def _stride_defaults_to_span(cls, data):
        if isinstance(data, dict) and data.get("stride") is None:
            data = {k: v for k, v in data.items() if k != "stride"}
            span = data.get("span", cls.model_fields["span"].default)
            if isinstance(span, (int, float)) and not isinstance(span, bool):  # a bad span is reported once, as span
                data["stride"] = span
        return data
