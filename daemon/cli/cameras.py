"""`vlmwatch check-cameras` (and `check-config --probe`): connect to each camera once and say what it is.
"""

from __future__ import annotations

from pathlib import Path

from daemon.errors import EXIT_NEEDS_FIX, EXIT_OK, EXIT_TRANSIENT


def add_cli(sub) -> None:
    p = sub.add_parser(
        "check-cameras", help="connect to each camera once: OK with its resolution, or why not",
        description="Open each camera of the config once, as the daemon would (its login included), read one"
        " frame, and print one line per camera: OK with resolution and fps, unauthorized (a login is missing or"
        " refused), unreachable (refused, no answer, unknown host) or not a video stream (a wrong path or port,"
        " or no video the daemon can decode). Exits 0 when every camera is OK, 2 when one needs a fix in the"
        " config or on the camera, 1 when one is only unreachable.")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds to wait for each camera (default: its stream.open_timeout)")
    p.set_defaults(func=run_check_cameras)


def run_check_cameras(args) -> int:
    from daemon.config import load_config

    return probe_cameras(load_config(args.config), args.timeout)


def probe_cameras(cfg, timeout: float | None = None) -> int:
    """Print one line per camera; the exit code of the worst."""
    from daemon.redact import redact_url
    from daemon.video.probe import OK, UNREACHABLE
    from daemon.video.stream import probe_camera

    worst = EXIT_OK
    for i, cam in enumerate(cfg.cameras):
        for label, source in [("", cam.source)] + ([(" (detect_source)", cam.detect_source)]
                                                  if cam.detect_source else []):
            if "://" not in source:
                print(f"{cam.name}{label}: a file or folder ({source}); nothing to connect to")
                continue
            url = cam.source_url(f"cameras[{i}]") if source == cam.source else cam.detect_url(f"cameras[{i}]")
            result = probe_camera(url, timeout or cam.stream.open_timeout)
            print(f"{cam.name}{label}: {result.verdict.upper() if result.verdict == OK else result.verdict}:"
                  f" {result.detail} ({redact_url(source)})", flush=True)
            if result.verdict != OK:
                worst = max(worst, EXIT_TRANSIENT if result.verdict == UNREACHABLE else EXIT_NEEDS_FIX)
    return worst
