"""The `vlmwatch` command: one parser, one place that maps errors to exit codes.

Each feature module registers its own sub-command through `add_cli(subparsers)`
and keeps heavy imports (torch, onnxruntime, cv2) inside the command function,
so `vlmwatch --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from daemon import __version__
from daemon.errors import VlmwatchError

EXIT_READER_GONE = 141  # 128 + SIGPIPE: what cat or grep return when `| head` has read enough

# Modules that contribute sub-commands, in help order.
COMMAND_MODULES = [
    "daemon.cli.bench",
    "daemon.cli.demo",
    "daemon.cli.describe",
    "daemon.cli.events",
    "daemon.cli.export",
    "daemon.cli.model",
    "daemon.cli.replay",
    "daemon.cli.rules",
    "daemon.cli.tiny",
    "daemon.cli.run",
    "daemon.cli.cameras",
    "daemon.cli.summarize",
    "daemon.cli.windows",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmwatch",
        description="Watch cameras and video files with InternVL3-2B and publish what it sees to MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"vlmwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def to_journal() -> bool:
    """Whether stderr is systemd's journal (which stamps every line itself): systemd sets
    JOURNAL_STREAM to the device and inode of the stream it connected."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):  # not set, or stderr is not a real file
        return False


def log_format() -> str:
    """Log lines with the local time to the second, except in the journal, which has its own."""
    if to_journal():
        return "%(levelname)s %(name)s: %(message)s"
    return "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=log_format(),
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except VlmwatchError as exc:
        print(f"vlmwatch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) has gone: stop quietly, as cat and grep do. Point stdout at
        # /dev/null, or Python's own flush at exit fails again and prints a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE
