"""`vlmwatch check-config` and `vlmwatch run`: validate everything, then start.

Both go through daemon.service.preflight, so check-config refuses exactly what
`run` would refuse before it reports READY, with the same lines and exit code.
"""

from __future__ import annotations

import logging
from pathlib import Path

from daemon.errors import EXIT_NEEDS_FIX


def add_cli(sub) -> None:
    p = sub.add_parser(
        "check-config", help="validate the config, rule files and model files; start nothing",
        description="Check everything `vlmwatch run` checks before it starts: the config, the model folder and"
        " backend, rule files, secrets (MQTT and camera passwords, TLS files), state_dir, file sources, MQTT"
        " names, and that every camera's prompts fit the model. Prints FILE:LINE: key: message for each problem"
        " and exits 2, or prints OK and exits 0: then `vlmwatch run` starts.")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.add_argument("--probe", action="store_true", help="also connect to each camera once, as check-cameras does:"
                   " OK with resolution and fps, unauthorized, unreachable or not a video stream")
    p.set_defaults(func=run_check)
    add_run_cli(sub)


def run_check(args) -> int:
    from daemon.cli.common import report
    from daemon.service.preflight import check_all

    cfg, problems = check_all(args.config)
    if report(problems):
        return EXIT_NEEDS_FIX
    print(f"{args.config}: OK ({len(cfg.cameras)} camera(s), model {cfg.model.dir})", flush=True)
    if args.probe:
        from daemon.cli.cameras import probe_cameras

        return probe_cameras(cfg)
    return 0


def add_run_cli(sub) -> None:
    p = sub.add_parser(
        "run", help="run the daemon: watch the cameras, analyse windows, publish",
        description="Run the daemon: check the configuration (as check-config does; exit 2 on a problem), load"
        " the model, then watch every camera, analyse the windows the gate lets through, apply the rules and"
        " publish to MQTT until SIGTERM or Ctrl-C. Under systemd it reports READY and pings the watchdog.")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.add_argument("--once", action="store_true",
                   help="process file and folder sources to their end, then stop (live cameras run until stopped)")
    p.set_defaults(func=run_daemon)


def run_daemon(args) -> int:
    import signal

    from daemon.cli.common import report
    from daemon.service.preflight import check_before_model, open_checked_engine

    cfg, problems = check_before_model(args.config)
    if report(problems):
        return EXIT_NEEDS_FIX
    logging.getLogger().setLevel(cfg.logging.level.upper())
    from daemon.service.build import build_app, open_metrics, starting_notifier

    notifier = starting_notifier()
    metrics = open_metrics(cfg)  # a port in use fails now, not after the model has loaded
    engine, problems = open_checked_engine(args.config, cfg)
    if report(problems):
        metrics.close()
        return EXIT_NEEDS_FIX
    try:
        app, closers = build_app(cfg, once=args.once, engine=engine, notifier=notifier, metrics=metrics)
    except BaseException:
        metrics.close()
        raise
    previous = {s: signal.signal(s, lambda *_: app.stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return app.run(once=args.once)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for close in reversed(closers):
            close()
