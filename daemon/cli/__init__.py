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
    "daemon.cli.demo",
    "daemon.cli.describe",
    "daemon.cli.export",
    "daemon.cli.model",
    "daemon.cli.replay",
    "daemon.cli.rules",
    "daemon.cli.tiny",
    "daemon.cli.run",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
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
