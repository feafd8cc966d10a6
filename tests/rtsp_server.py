"""A real RTSP camera for the tests: GStreamer's RTSP server looping a generated clip.

Runs under Debian's /usr/bin/python3 (the GStreamer bindings are not importable
from a venv or pyenv interpreter), so the tests start it as a subprocess:

    /usr/bin/python3 tests/rtsp_server.py --frames DIR --port 0 [--fps 10]

DIR holds the clip as numbered JPEG files (00000.jpg, 00001.jpg, ...; see
`tests/clips.py`), which `multifilesrc loop=true` replays forever and x264
encodes to H.264 with a short GOP so that clients can start quickly.

Protocol with the test: one line `READY <port>` on stdout once the server
listens (port 0 picks a free port; pass it back to restart on the same one).
SIGUSR1 drops every connected client (a camera hiccup); SIGTERM or SIGINT
stop the server. Standard library and GStreamer only: no numpy here.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = (
    '( multifilesrc location="{frames}/%05d.jpg" loop=true caps="image/jpeg,framerate={fps}/1" '
    "! jpegdec ! videoconvert "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", required=True, help="folder of 00000.jpg, 00001.jpg, ...")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--path", default="/cam", help="mount point, e.g. /cam")
    parser.add_argument("--kbps", type=int, default=800)
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require this login (HTTP Basic), like a real camera")
    return parser.parse_args(argv)


def drop_all_clients(server: GstRtspServer.RTSPServer) -> bool:
    """Close every client connection; the clients see the stream end."""

    def remove(_server, _client, _data=None):
        return GstRtspServer.RTSPFilterResult.REMOVE

    server.client_filter(remove, None)
    return True


def require_login(server: GstRtspServer.RTSPServer, factory: GstRtspServer.RTSPMediaFactory,
                  user: str, password: str) -> None:
    """Only `user` with `password` may play the stream; anyone else gets 401 Unauthorized."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    role = Gst.Structure.from_string("viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")
    factory.add_role_from_structure(role[0])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(frames=args.frames, fps=args.fps, gop=args.fps, kbps=args.kbps))
    factory.set_shared(True)  # one encoder for all clients, like a camera
    if args.auth:
        require_login(server, factory, *args.auth.split(":", 1))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, lambda: loop.quit() or False)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, lambda: loop.quit() or False)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, lambda: drop_all_clients(server))
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
