"""Cameras: the source (URL, file or folder), its windowing, gate, connection and folder watching,
prompt overrides, triggers, and its login (kept out of the config like the MQTT password).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from daemon.config.base import NAME_RE, NAME_RULE, Name, Section
from daemon.config.secrets import read_secret
from daemon.config.triggers import TriggerSettings
from daemon.redact import mistyped_url

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


class GateSettings(Section):
    """Per-source scene-change gate (`gate:` under a camera)."""


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

KEYFRAME_GAP = 10.0  # seconds: the longest keyframe interval waited for when the gate decodes keyframes only
LIVE_DECODE_THREADS = 2  # a 25 fps 1080p camera on the board's A55 cores needs more than one
FILE_DECODE_THREADS = 1  # a recording is read at the NPU's pace: one thread is far ahead of it


class StreamSettings(Section):
    """Camera connection behaviour (`stream:` under a camera)."""


    open_timeout: float = Field(10.0, gt=0, description="Seconds to wait for a camera to answer when connecting.")
    read_timeout: float = Field(
        5.0, gt=0, description="Seconds without a frame after which the stream counts as frozen and is reopened."
    )
    retry_min: float = Field(1.0, gt=0, description="Seconds before the first reconnect attempt.")
    retry_max: float = Field(60.0, gt=0, description="Cap of the exponential reconnect backoff, seconds.")
    queue: int = Field(
        2, ge=1, description="Finished windows held for a slow consumer; the oldest is dropped (and counted) beyond."
    )
    gate_decode: Literal["all", "keyframes"] = Field(
        "all",
        description="What the capture decodes for the gate: every frame (all), or only the camera's keyframes "
        "(keyframes: about 1/5 of the decode CPU; the gate then sees a frame every keyframe interval, 1-4 s on "
        "most cameras, instead of every second, and windows it passes are decoded exactly from the stream's "
        "packets, kept over a second connection). Cameras only.",
    )

    @model_validator(mode="after")
    def _retry_order(self) -> "StreamSettings":
        if self.retry_min > self.retry_max:
            raise ValueError(f"retry_min ({self.retry_min}) must not exceed retry_max ({self.retry_max})")
        return self


class FolderSettings(Section):
    """Watching a folder of clips (`folder:` under a camera)."""


    poll: float = Field(2.0, gt=0, description="Seconds between scans of the folder for new clips.")
    settle: float = Field(
        5.0, ge=0, description="Seconds a clip's size must stay unchanged before it counts as completely written."
    )


class SourceSettings(Section):
    """Per-source windowing, gating and connection settings (embedded under each camera)."""


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


URL_SCHEMES = ("rtsp", "rtsps", "http", "https")
ZONE_RE = NAME_RE  # zone names: as rule ids, they reach MQTT payloads


class CameraPrompts(Section):
    description: str | None = Field(None, description="This camera's description question (overrides prompts.description).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest description for this camera.")


PASSWORD_KEYS = ("password_env", "password_file", "password_credential")


class CameraSettings(SourceSettings):
    """One camera: a name, a source, the window/gate/connection settings of its source, prompt overrides,
    and its login, kept out of the config like the MQTT password."""

    name: Name = Field(description="Unique name: 1-64 lower-case letters, digits, '_' and '-'.")
    source: str = Field(min_length=1, description="rtsp://, rtsps://, http(s):// (MJPEG) URL, a video file or a folder.")
    username: str | None = Field(None, min_length=1,
                                 description="Camera user, put into the source URL (instead of one written there).")
    password_env: str | None = Field(None, min_length=1,
                                     description="Name of an environment variable holding the camera password.")
    password_file: Path | None = Field(
        None, description="File whose content (trailing newline stripped) is the camera password.")
    password_credential: str | None = Field(
        None, min_length=1, pattern=r"^[^/]+$",
        description="Name of a systemd credential (LoadCredential=) holding the camera password; "
        "read from $CREDENTIALS_DIRECTORY/<name>.")
    prompts: CameraPrompts = Field(default_factory=CameraPrompts, description="Per-camera prompt overrides.")
    detect_source: str | None = Field(
        None, min_length=1,
        description="A low-resolution substream (rtsp://...) or a low-resolution copy of the file that feeds the "
        "gate; windows that pass are taken from `source` (see frames_from). Default: the gate reads `source`. "
        "The camera's username and password apply to it too.")
    frames_from: Literal["main", "detect"] = Field(
        "main", description="With detect_source: take an analysed window's frames from the main `source` (main) or "
        "from the substream itself (detect: the main stream is never opened).")
    zones: dict[str, PolygonField] = Field(
        default_factory=dict,
        description="Named polygons (relative coordinates 0..1) that rules can require the change to touch "
        "(`zones: [porch]` in a rule), e.g. {porch: [[0, 0.5], [0.4, 0.5], [0.4, 1], [0, 1]]}.")
    triggers: list[TriggerSettings] = Field(
        default_factory=list,
        description="MQTT messages (e.g. Frigate events, a motion sensor) that make the camera's next window "
        "analysed whatever the gate says; needs the mqtt section.")

    @model_validator(mode="after")
    def _login(self) -> CameraSettings:
        given = [key for key in PASSWORD_KEYS if getattr(self, key) is not None]
        if not given and self.username is None:
            return self
        first = given[0] if given else "username"
        if "://" not in self.source:
            raise ValueError(f"{first} is set but the source is a file or folder, which has no login")
        if len(given) > 1:
            raise ValueError(f"give the camera password one way only, not {' and '.join(given)}")
        url = urlsplit(self.source)
        if given and url.password is not None:
            raise ValueError(f"{first} is set but the source URL holds a password too: remove it from the URL")
        if given and self.detect_source and urlsplit(self.detect_source).password is not None:
            raise ValueError(f"{first} is set but detect_source holds a password too: remove it from the URL"
                             " (the camera's login applies to both streams)")
        if given and self.username is None and not url.username:
            raise ValueError(f"{first} is set but there is no user: set username, or write it in the URL "
                             "(rtsp://user@host/...)")
        return self

    def source_url(self, key: str) -> str:
        """The source with the camera's login in the URL (user and password percent-encoded). It
        holds the password: hand it to the capture, never to a log line. ConfigError naming
        `key`.password_* when the password cannot be read."""
        return self._with_login(self.source, key)

    def detect_url(self, key: str) -> str | None:
        """`detect_source` with the camera's login, as `source_url` (a camera's substream takes the
        same login as its main stream), or None without one."""
        return None if self.detect_source is None else self._with_login(self.detect_source, key)

    def _with_login(self, source: str, key: str) -> str:
        password = read_secret(f"{key}.password", env=self.password_env, file=self.password_file,
                               credential=self.password_credential, what="the password")
        if (password is None and self.username is None) or "://" not in source:
            return source
        url = urlsplit(source)
        userinfo, _, host = url.netloc.rpartition("@")
        main_user = urlsplit(self.source).netloc.rpartition("@")[0].split(":", 1)[0]  # a substream takes the main's
        user = quote(self.username, safe="") if self.username is not None else userinfo.split(":", 1)[0] or main_user
        secret = f":{quote(password, safe='')}" if password is not None else ""
        if userinfo and password is None:
            secret = userinfo[len(userinfo.split(":", 1)[0]):]  # keep a password written in the URL
        return urlunsplit(url._replace(netloc=f"{user}{secret}@{host}"))

    @field_validator("zones", mode="before")
    @classmethod
    def _zone_names(cls, zones):
        for name in zones if isinstance(zones, dict) else ():
            if not ZONE_RE.fullmatch(str(name)):
                raise ValueError(f"zone name {name!r} must be {NAME_RULE}")
        return zones

    @property
    def takes_main_frames(self) -> bool:
        """Are the model's frames of a passed window decoded apart from the gate's (a substream's main
        stream, or the camera's packets when the gate decodes keyframes only)?"""
        if self.detect_source is not None:
            return self.frames_from == "main"
        return self.stream.gate_decode == "keyframes"

    @model_validator(mode="after")
    def _keyframes_for_cameras(self) -> "CameraSettings":
        if self.stream.gate_decode == "keyframes" and "://" not in (self.detect_source or self.source):
            raise ValueError("stream.gate_decode: keyframes applies to cameras (rtsp://...); a file or folder is "
                             "read at the NPU's pace and decodes only the frames its windows take: remove it")
        return self

    @model_validator(mode="after")
    def _detect_pairs(self) -> "CameraSettings":
        if self.detect_source is not None:
            main_stream, detect_stream = "://" in self.source, "://" in self.detect_source
            if main_stream != detect_stream:
                raise ValueError("source and detect_source must both be camera URLs or both be video files")
            if not main_stream and (self.source.endswith("/") or self.detect_source.endswith("/")):
                raise ValueError("detect_source pairs a camera's streams or two files, not folders")
        return self

    @field_validator("source", "detect_source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = mistyped_url(v)
        if scheme is not None:
            raise ValueError(f"this looks like a {scheme}:// URL, but '//' does not follow '{scheme}:', so it would "
                             f"be taken for a file path: write {scheme}://HOST/PATH")
        if "://" in v:
            url = urlsplit(v)
            if url.scheme not in URL_SCHEMES:
                raise ValueError(f"unsupported URL scheme {url.scheme!r}: use one of {', '.join(URL_SCHEMES)},"
                                 " or a file or folder path")
            if not url.hostname:
                raise ValueError("the URL has no host (expected e.g. rtsp://camera.local:554/stream)")
        return v
