"""Per-source settings: windowing, the gate, camera connections and folder watching.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GateSettings(BaseModel):
    """Per-source scene-change gate (`gate:` under a camera)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Skip windows without scene change; false analyses every window.")
    threshold: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Fraction of the picture (in 64-cell-wide grayscale cells) that must change against the "
        "last analysed window for the window to be analysed. 0.01 = 1 %.",
    )
    heartbeat: float = Field(
        600.0,
        gt=0,
        description="Seconds: analyse a window at least this often even in a static scene, so descriptions stay fresh.",
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
