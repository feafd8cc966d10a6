"""How captures decode: FFmpeg options per capture, and the board's hardware decoders when present.

    capture = open_capture(url, params, ("avdiscard;nonkey",))   # this capture only: keyframes
    decoding().options("h264")   # ("video_codec;h264_axdec",) on a board whose FFmpeg has it, else ()

FFmpeg options per capture. OpenCV's FFmpeg backend reads its options from
one process-wide environment variable (OPENCV_FFMPEG_CAPTURE_OPTIONS,
"key;value|key;value") when a capture opens, and only then. Cameras open on
their own threads, so one camera's options (keyframes only, a decoder by
name) would leak into another camera, or a file, opening at the same time.
Every capture of `daemon.video` therefore opens through `open_capture`,
which sets the variable under one lock for the duration of the open and
restores it after. The user's own value (e.g. `rtsp_transport;udp`) comes
first; without one, `rtsp_transport;tcp` is used (UDP smears frames on busy
Wi-Fi and through NAT).

Hardware decoding. Axera's FFmpeg build for the AX650N (AXERA-TECH/ffmpeg)
adds the decoders `h264_axdec` and `hevc_axdec` on the board's video decoder.
They are used when the FFmpeg that OpenCV links has them: `detect` opens a
tiny embedded sample of each codec with `video_codec;NAME` (an FFmpeg
without that decoder refuses to open; one that has it must decode the
sample), once per process, and the result is logged and shown by `describe
--json`. A camera learns its codec at its first connection (software), and
reopens with the hardware decoder at once when there is one for that codec;
a hardware open that fails falls back to software for that camera.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
DEFAULT_FFMPEG_OPTIONS = "rtsp_transport;tcp"
KEYFRAMES_ONLY = "avdiscard;nonkey"  # FFmpeg's skip_frame = AVDISCARD_NONKEY: the decoder drops every other frame
AXERA_DECODERS = {"h264": "h264_axdec", "hevc": "hevc_axdec"}  # Axera's FFmpeg build (AXERA-TECH/ffmpeg)
CODECS = {"h264": "h264", "avc1": "h264", "hevc": "hevc", "hev1": "hevc", "hvc1": "hevc", "h265": "hevc"}  # fourcc

# One black 128x128 keyframe per codec, Annex B, SEI removed (111 and 112 bytes), made with
# `gst-launch-1.0 videotestsrc num-buffers=1 pattern=black ! video/x-raw,width=128,height=128 ! x264enc
# pass=quant quantizer=45` (x265enc qp=45 for HEVC): what the probe asks a decoder to decode.
SAMPLES = {
    "h264": "AAAAAQkQAAAAAWdCwAvZAgRsBagwMDUoAAADAAgAAAMB5HihUkAAAAABaMuATSyAAAAAAWWIhD8mKAAIBcnJycnJycnXXXXXXXXX"
            "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXg",
    "hevc": "AAAAAUABDAH//wFgAAADAJAAAAMAAAMAHpWYCQAAAAFCAQEBYAAAAwCQAAADAAADAB6gECAgWWVmkkyv/wABAAFqDAwMCAAAAwAI"
            "AAADAPBAAAAAAUQBwXGhEgAAAAEoAa8EGPxiv9kkLwqitRCSvg==",
}
SUFFIXES = {"h264": ".h264", "hevc": ".hevc"}

_env_lock = threading.Lock()


def open_capture(source: str, params: Sequence[int] = (), options: Sequence[str] = ()):
    """cv2.VideoCapture(source) through FFmpeg, with `options` ("key;value") added to the process's
    FFmpeg options for this open only (see the module's docstring)."""
    import cv2

    with _env_lock:
        saved = os.environ.get(FFMPEG_OPTIONS_ENV)
        os.environ[FFMPEG_OPTIONS_ENV] = "|".join([saved or DEFAULT_FFMPEG_OPTIONS, *options])
        try:
            return cv2.VideoCapture(source, cv2.CAP_FFMPEG, list(params))
        finally:
            if saved is None:
                del os.environ[FFMPEG_OPTIONS_ENV]
            else:
                os.environ[FFMPEG_OPTIONS_ENV] = saved


def codec_of(capture) -> str | None:
    """"h264" or "hevc" for an open capture of those codecs, else None."""
    import cv2

    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").lower()
    return CODECS.get(fourcc)


def decoder_works(name: str, codec: str) -> bool:
    """Does the FFmpeg that OpenCV uses have decoder `name`, and does it decode a keyframe of `codec`?
    OpenCV's own error lines about a missing decoder are kept out unless debug logging is on."""
    import cv2

    level = cv2.utils.logging.getLogLevel()
    if not log.isEnabledFor(logging.DEBUG):
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with tempfile.NamedTemporaryFile(suffix=SUFFIXES[codec], prefix="vlmwatch-probe-") as file:
            file.write(base64.b64decode(SAMPLES[codec]))
            file.flush()
            capture = open_capture(file.name, (), (f"video_codec;{name}",))
            try:
                ok, image = capture.read() if capture.isOpened() else (False, None)
                return bool(ok) and image is not None
            finally:
                capture.release()
    finally:
        cv2.utils.logging.setLogLevel(level)


Probe = Callable[[str, str], bool]  # (decoder name, codec) -> usable


@dataclass(frozen=True)
class Decoding:
    """Which decoders captures use: `hardware` maps a codec to the decoder that replaces FFmpeg's
    software one; `absent` lists the candidates this FFmpeg lacks (or that failed the probe)."""

    hardware: Mapping[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()

    def options(self, codec: str | None) -> tuple[str, ...]:
        """The FFmpeg options that select the hardware decoder for `codec` (none: software)."""
        name = self.hardware.get(codec or "")
        return (f"video_codec;{name}",) if name else ()

    def describe(self) -> str:
        if self.hardware:
            names = ", ".join(f"{codec} by {name}" for codec, name in sorted(self.hardware.items()))
            rest = f"; software for the rest ({', '.join(self.absent)} absent)" if self.absent else ""
            return f"hardware ({names}){rest}"
        why = f": the FFmpeg OpenCV uses has no {', '.join(self.absent)}" if self.absent else ""
        return f"software (FFmpeg's own decoders{why})"

    def as_json(self) -> dict:
        return {"decoding": "hardware" if self.hardware else "software", "decoders": dict(self.hardware),
                "absent": list(self.absent)}


def detect(candidates: Mapping[str, str] = AXERA_DECODERS, probe: Probe = decoder_works) -> Decoding:
    """Try each candidate decoder (codec -> FFmpeg decoder name) with `probe`."""
    hardware, absent = {}, []
    for codec, name in candidates.items():
        try:
            usable = probe(name, codec)
        except Exception as exc:  # noqa: BLE001 - a broken FFmpeg build fails in many ways: software then
            log.debug("decoder %s: probe failed (%s)", name, exc)
            usable = False
        if usable:
            hardware[codec] = name
        else:
            absent.append(name)
    return Decoding(hardware, tuple(absent))


_detected: Decoding | None = None
_detect_lock = threading.Lock()


def decoding() -> Decoding:
    """What this process decodes with, detected (and logged) on first use."""
    global _detected
    with _detect_lock:
        if _detected is None:
            _detected = detect()
            log.info("video decoding: %s", _detected.describe())
        return _detected


@dataclass
class CameraDecoder:
    """One camera's choice between software and hardware decoding, kept across its reconnects: the
    codec is learnt at the first connection; a hardware open that fails sends the camera to software."""

    name: str
    decoding: Decoding | None = None  # None: the process's `decoding()`
    codec: str | None = None
    in_use: str = "software"  # or the hardware decoder's name
    _failed: bool = False

    def open(self, url: str, params: Sequence[int], options: Sequence[str] = ()):
        """An open capture (check isOpened()) decoding in hardware when possible."""
        chosen = self.decoding or decoding()
        hardware = () if self._failed else chosen.options(self.codec)
        capture = open_capture(url, params, (*options, *hardware))
        if hardware and not capture.isOpened():
            capture.release()
            log.warning("camera %s: the hardware decoder %s cannot open this stream; decoding in software",
                        self.name, chosen.hardware[self.codec or ""])
            self._failed, hardware = True, ()
            capture = open_capture(url, params, options)
        if capture.isOpened() and self.codec is None:
            self.codec = codec_of(capture)
            if not self._failed and chosen.options(self.codec):  # learnt the codec: reopen in hardware
                capture.release()
                return self.open(url, params, options)
        self.in_use = chosen.hardware[self.codec or ""] if hardware and capture.isOpened() else "software"
        return capture
