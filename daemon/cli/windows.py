"""`vlmwatch windows`: a source and the gate without a model, one line per window.
"""

from __future__ import annotations

import json
import threading
import time

from daemon.errors import SourceError, UsageError
from daemon.times import iso
from daemon.types import Region, Window
from daemon.video.gate import Decision, Gate

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
    p.add_argument("--username", metavar="USER", help="camera login, put into the URL (instead of user@ in it)")
    p.add_argument("--password-env", metavar="VAR", help="read the camera password from environment variable VAR"
                   " (keeps it out of the command line and shell history)")
    p.add_argument("--password-file", metavar="FILE", help="read the camera password from FILE")
    p.add_argument("--span", type=float, help="seconds a window covers (default 8)")
    p.add_argument("--stride", type=float, help="seconds between window starts (default: span)")
    p.add_argument("--frames", type=int, help="frames per window (default 8)")
    p.add_argument(
        "--gate-threshold", type=float, metavar="X",
        help="smallest changed region that counts, as a fraction of the picture (default 0.0005 = 0.05 %%)",
    )
    p.add_argument(
        "--mask", action="append", default=[], metavar='"x,y x,y x,y ..."',
        help="a polygon (relative coordinates 0..1) whose change the gate ignores; repeatable",
    )
    p.add_argument("--no-gate", action="store_true", help="analyse every window (change scores are still printed)")
    p.add_argument("--realtime", action="store_true", help="replay files at wall-clock speed")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N windows")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="cameras: give up when no window has come for S seconds (default 30; 0: keep retrying,"
                   " as the daemon does)")
    p.add_argument("--state-dir", help="folder sources: remember processed clips here across runs")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run_windows)


def settings_from_args(args):
    """SourceSettings from command-line options; a bad value is a UsageError naming the option."""
    from pydantic import ValidationError

    from daemon.config.cameras import SourceSettings

    values: dict = {"gate": {}}
    for key in ("span", "stride", "frames"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.realtime:
        values["realtime"] = True
    if args.gate_threshold is not None:
        values["gate"]["threshold"] = args.gate_threshold
    if args.mask:
        values["gate"]["masks"] = list(args.mask)
    if args.no_gate:
        values["gate"]["enabled"] = False
    try:
        return SourceSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"] if not str(part).isdigit()]
        option = "--mask" if loc[-1:] == ["masks"] else "--" + "-".join(loc).replace("_", "-")
        raise UsageError(f"{option}: {err['msg']} (got {err.get('input')!r})") from None


def region_json(region: Region, width: int, height: int) -> dict:
    """A region relative to the picture (0..1) and in the frame's pixels."""
    return {"x": round(region.x, 4), "y": round(region.y, 4), "w": round(region.w, 4), "h": round(region.h, 4),
            "area": round(region.area, 6), "px": list(region.pixels(width, height))}


def window_json(window: Window, decision: Decision) -> str:
    height, width = window.frames[-1].image.shape[:2]
    return json.dumps(
        {
            "source": window.camera,
            "start": iso(window.start),
            "end": iso(window.end),
            "frame_ts": [iso(t) for t in window.frame_ts],
            "change": None if window.change is None else round(window.change, 6),
            "analyse": decision.analyse,
            "reason": decision.reason,
            "regions": [region_json(r, width, height) for r in window.regions],
            "zones": sorted(window.zones),
        }
    )


def window_line(window: Window, decision: Decision, origin: float) -> str:
    """Human-readable; times relative to the first window (`origin`)."""
    change = "-" if window.change is None else f"{100 * window.change:.3f}%"
    verdict = "ANALYSE" if decision.analyse else "skip"
    span = f"+{window.start - origin:.1f}s..+{window.end - origin:.1f}s"
    return f"{window.camera}  {span:>17}  change {change:>6}  {verdict:7}  {decision.reason}"


def run_windows(args) -> int:
    from daemon.video import StreamSource, open_source
    from daemon.video.events import source_name

    settings = settings_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit: must be at least 1 (got {args.limit})")
    if args.timeout < 0:
        raise UsageError(f"--timeout: must be 0 (no limit) or more seconds (got {args.timeout})")
    errors = []  # already logged by the source, with the remedy

    def on_event(event) -> None:
        if event.kind == "error":
            errors.append(event)

    name = args.name or source_name(args.source)
    source = open_source(name, source_with_login(args), settings, on_event=on_event, state_dir=args.state_dir)
    gate, stop = Gate(settings.gate), threading.Event()
    patience = Patience(args.timeout if isinstance(source, StreamSource) else 0.0, stop)
    windows, count, origin = source.windows(stop), 0, None
    try:
        for window in windows:
            patience.reset()
            window, decision = gate.check(window, now=window.end)  # the source's timeline, also for fast replays
            origin = window.start if origin is None else origin
            print(window_json(window, decision) if args.json else window_line(window, decision, origin), flush=True)
            count += 1
            if args.limit and count >= args.limit:
                break
    finally:
        stop.set()
        windows.close()
    if patience.expired:
        why = (f"the last attempt: {errors[-1].message}" if errors else
               "it connected but sent no complete window; check that it sends video (span and frames)")
        raise SourceError(f"{name}: no window in {args.timeout:g} s, gave up (--timeout 0 keeps retrying, as the"
                          f" daemon does); {why}")
    # A camera that failed and came back reached the limit: fine. A file that ended on an error: not.
    return 1 if errors and not (args.limit and count >= args.limit) else 0


def source_with_login(args) -> str:
    """The source URL with --username and the password from --password-env/--password-file in it."""
    import os
    from urllib.parse import quote, urlsplit, urlunsplit

    if args.password_env and args.password_file:
        raise UsageError("give the camera password one way: --password-env or --password-file, not both")
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise UsageError(f"--password-env {args.password_env}: that environment variable is not set; set it"
                             f" first, e.g. read -rs {args.password_env} && export {args.password_env}")
    elif args.password_file:
        try:
            password = open(args.password_file, encoding="utf-8").read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--password-file {args.password_file}: cannot read it"
                             f" ({getattr(exc, 'strerror', None) or exc})") from None
    if password is None and args.username is None:
        return args.source
    if "://" not in args.source:
        raise UsageError("--username and --password-* are for cameras (rtsp://, http://), not files")
    url = urlsplit(args.source)
    userinfo, _, host = url.netloc.rpartition("@")
    user = quote(args.username, safe="") if args.username else userinfo.split(":", 1)[0]
    if not user:
        raise UsageError("a password needs a user: give --username, or write it in the URL (rtsp://user@host/...)")
    kept = userinfo.partition(":")[1:]  # a password written in the URL stays when none is given
    secret = f":{quote(password, safe='')}" if password is not None else "".join(kept)
    return urlunsplit(url._replace(netloc=f"{user}{secret}@{host}"))


class Patience:
    """Sets `stop` when no window came for `timeout` seconds (0: never): one-shot commands give up
    on a camera that does not answer, where the daemon retries for ever."""

    def __init__(self, timeout: float, stop: threading.Event):
        self.timeout, self.stop, self.expired = timeout, stop, False
        self._last = time.monotonic()
        if timeout > 0:
            threading.Thread(target=self._watch, name="windows-timeout", daemon=True).start()

    def reset(self) -> None:
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self.stop.wait(min(0.2, self.timeout)):
            if time.monotonic() - self._last > self.timeout:
                self.expired = True
                self.stop.set()
