"""`vlmwatch check-config` and `vlmwatch run`: validate everything, then start."""

from __future__ import annotations

import logging
from pathlib import Path

from daemon.errors import ConfigError


def add_cli(sub) -> None:
    p = sub.add_parser("check-config", help="validate the config, rule files and model files; start nothing")
    p.add_argument("-c", "--config", type=Path, required=True, help="configuration file")
    p.set_defaults(func=run_check)
    add_run_cli(sub)


def run_check(args) -> int:
    from daemon.checks import check_all, report

    cfg, problems = check_all(args.config)
    if report(problems):
        return ConfigError.exit_code
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

    from daemon.checks import check_all, report

    cfg, problems = check_all(args.config)
    if report(problems):
        return ConfigError.exit_code
    logging.getLogger().setLevel(cfg.logging.level.upper())
    app, closers = build_app(cfg, once=args.once)
    previous = {s: signal.signal(s, lambda *_: app.stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return app.run(once=args.once)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for close in reversed(closers):
            close()


def build_app(cfg, once: bool = False):
    """Open everything the config names; return the App and what to close afterwards, in order."""
    from daemon.app import App
    from daemon.bundle import locate, open_model
    from daemon.engine import Engine, Sampling
    from daemon.history import History
    from daemon.metrics import Metrics
    from daemon.notify import Notifier
    from daemon.sources import open_source

    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state_dir {cfg.state_dir}: cannot create it ({exc.strerror});"
                          " point state_dir at a writable folder") from None
    closers = []
    m = cfg.model
    notifier = Notifier()
    notifier.extend_timeout(300)  # loading 30 graphs onto the NPU takes a while
    engine = Engine(open_model(locate(m.dir, m.tokenizer, m.vit), m.backend, m.device_id), system=m.system,
                    sampling=Sampling(**m.sampling.model_dump()), max_new_tokens=cfg.prompts.max_new_tokens)
    history = History(cfg.state_dir / "history.sqlite").open()
    closers.append(history.close)
    rules = build_rules(cfg, engine, history, closers)
    metrics = Metrics()
    if cfg.metrics.enabled:
        endpoint = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        closers.append(metrics.close)
        logging.getLogger(__name__).info("metrics on %s", endpoint.url)
    on_event = lambda e: metrics.source_event(e.camera, e.kind)  # noqa: E731
    sources = {c.name: open_source(c.name, c.source, c, on_event=on_event, state_dir=cfg.state_dir, once=once)
               for c in cfg.cameras}
    publisher = make_publisher(cfg, rules, on_ask=lambda request: app.on_ask(request))
    scheduler = build_scheduler(cfg, history, closers)
    app = App(cfg, engine, sources, history, metrics, notifier, publisher, rules=rules, scheduler=scheduler)
    if publisher is not None:
        publisher.start()  # connects in the background; a bad password or TLS file fails here (exit 2)
    return app, closers


def build_scheduler(cfg, history, closers):
    """The scheduler of cfg.summaries (None without jobs); the jobs' last runs live in the history file."""
    if not cfg.summaries:
        return None
    from daemon.scheduler import SummaryScheduler
    from daemon.summaries import RunLog

    runlog = RunLog(history.path).open()
    closers.append(runlog.close)
    return SummaryScheduler(cfg.summaries, runlog)


def make_publisher(cfg, rules, on_ask):
    """The MQTT publisher for cfg.mqtt, or None: without an mqtt section nothing is published."""
    if cfg.mqtt is None:
        return None
    from daemon.mqtt import Publisher

    rule_infos = rules.rule_infos() if rules is not None else ()
    return Publisher(cfg.mqtt, cfg.state_dir / "outbox.sqlite", [c.name for c in cfg.cameras], rule_infos,
                     [j.id for j in cfg.summaries], on_ask=on_ask)


def build_rules(cfg, engine, history, closers):
    """The rule runner for cfg.rules (None without rules), its questions checked against the model.
    The App hands it its publisher."""
    from daemon.alerting import RuleRunner, check_questions
    from daemon.rule_files import load_rules
    from daemon.rule_state import RuleStateStore

    if cfg.rules is None:
        return None
    rules = load_rules(cfg.rules, cameras=[c.name for c in cfg.cameras], timezone=cfg.tzinfo)
    check_questions(rules, engine, {c.name: c.frames for c in cfg.cameras})
    store = RuleStateStore(history.path).open()
    closers.append(store.close)
    return RuleRunner(rules, store, history, cameras=[c.name for c in cfg.cameras])
