"""Video: sources (cameras, files, folders) turned into 8-frame windows, and the gate.

    source = open_source("porch", "rtsp://user:pw@cam/stream", SourceSettings())
    for window in source.windows(stop):      # blocks; ends when `stop` is set
        ...

- `stream.StreamSource`: rtsp://, rtsps://, http(s):// through OpenCV's FFmpeg
  backend, one capture thread reading continuously, reconnect with capped
  exponential backoff. Never ends until `stop`.
- `file.FileSource`: one video file through OpenCV's FFmpeg backend, read
  forward with bounded memory, windows along the file's own timeline. Ends at
  the end of the file.
- `folder.FolderSource`: each clip appearing in a folder, once.
- `windows`: where windows lie and which frames they take (pure).
- `frames`: what a captured frame keeps (a reduced picture, the model's input).
- `gate`: skips windows in which nothing changed (pure).
- `events`: what sources report (never exceptions out of `windows()`).
- `mainframes`: the main stream's frames for windows the gate passed on a substream (or on keyframes).
- `decoders`: FFmpeg options per capture; the board's hardware decoders when present.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from daemon.config.cameras import SourceSettings
from daemon.errors import SourceError
from daemon.redact import mistyped_url, redact_url
from daemon.video.events import STREAM_SCHEMES, EventSink, Source, SourceBase
from daemon.video.file import FileProgress, FileSource
from daemon.video.folder import FolderSource, ProcessedFiles
from daemon.video.frames import FrameMaker, ModelInput
from daemon.video.mainframes import FileFrames, MainFrames, StreamFrames
from daemon.video.stream import StreamSource

PROCESSED_FILE = "processed.sqlite"  # under state_dir: clips done (folders) and progress in files

__all__ = ["FileSource", "FolderSource", "MainFrames", "Source", "SourceBase", "StreamSource", "open_main_frames",
           "open_source"]


def open_source(
    name: str,
    uri: str,
    settings: SourceSettings,
    *,
    on_event: EventSink | None = None,
    state_dir: str | os.PathLike | None = None,
    once: bool = False,
    model_input: ModelInput | None = None,
) -> Source:
    """The source for a URL, a video file or a folder of clips. Opens nothing yet.

    `state_dir`: where files and folders keep what they have processed (processed.sqlite), so a
    restart resumes after the last finished window. `once`: a folder source ends when every clip
    present has been processed. `model_input`: the engine's resize to the ViT's input; frames then
    keep that and a picture reduced to `settings.picture_width` instead of the decoded picture."""
    mistyped = mistyped_url(uri)
    if mistyped is not None:
        raise SourceError(f"camera {name}: source {redact_url(uri)!r} looks like a {mistyped}:// URL, but '//' does "
                          f"not follow '{mistyped}:'; write {mistyped}://HOST/PATH")
    keyframes = settings.stream.gate_decode == "keyframes"  # gate-only frames: the model's are decoded apart
    make_frame = FrameMaker(settings.picture_width, None if keyframes else model_input)
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in STREAM_SCHEMES:
        return StreamSource(name, uri, settings, on_event=on_event, make_frame=make_frame)
    if scheme == "file":
        uri = urlsplit(uri).path
    elif scheme:
        raise SourceError(
            f"camera {name}: unsupported source {redact_url(uri)!r}; use rtsp://, rtsps://, http(s)://, "
            "a video file or a folder"
        )
    record = Path(state_dir) / PROCESSED_FILE if state_dir else None
    progress = FileProgress(record) if record else None
    if uri.endswith("/") or Path(uri).is_dir():
        processed = ProcessedFiles(record) if record else None
        return FolderSource(name, Path(uri), settings, processed=processed, on_event=on_event, once=once,
                            progress=progress, make_frame=make_frame)
    return FileSource(name, Path(uri), settings, on_event=on_event, progress=progress, make_frame=make_frame)


def open_main_frames(name: str, uri: str, settings: SourceSettings, detect: Source, *,
                     on_event: EventSink | None = None) -> MainFrames:
    """Where a camera whose gate reads `detect` (its substream, or a low-resolution copy of a file)
    takes the frames of the windows that pass: the main stream's packets, or the main file."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in STREAM_SCHEMES:
        return StreamFrames(name, uri, settings, on_event=on_event)
    if not isinstance(detect, FileSource):
        raise SourceError(f"camera {name}: detect_source and source must both be cameras or both be video files")
    path = Path(urlsplit(uri).path if scheme == "file" else uri)
    return FileFrames(name, path, lambda ts: None if detect.origin is None else ts - detect.origin)
