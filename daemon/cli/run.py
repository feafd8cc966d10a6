"""`vlmwatch check-config` and `vlmwatch run`: validate everything, then start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from daemon.errors import EXIT_NEEDS_FIX


def add_cli(sub) -> None:
    p = sub.add_parser("check-config", help="validate the config, rule files and model files; start nothing")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.set_defaults(func=run_check)
    add_run_cli(sub)


def run_check(args) -> int:
    from daemon.cli.common import report
    from daemon.service.preflight import check_all

    cfg, problems = check_all(args.config)
    if report(problems):
        return EXIT_NEEDS_FIX
    print(f"{args.config}: OK ({len(cfg.cameras)} camera(s), model {cfg.model.dir})")
    return 0


def add_run_cli(sub) -> None:
    p = sub.add_parser("run", help="run the daemon: watch the cameras, analyse windows, publish")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.add_argument("--once", action="store_true",
                   help="process file and folder sources to their end, then stop (live cameras run until stopped)")
    p.set_defaults(func=run_daemon)


def run_daemon(args) -> int:
    import signal

    from daemon.cli.common import report
    from daemon.service.preflight import check_all

    cfg, problems = check_all(args.config)
    if report(problems):
        return EXIT_NEEDS_FIX
    logging.getLogger().setLevel(cfg.logging.level.upper())
    from daemon.service.build import build_app

    app, closers = build_app(cfg, once=args.once)
    previous = {s: signal.signal(s, lambda *_: app.stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return app.run(once=args.once)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for close in reversed(closers):
            close()
