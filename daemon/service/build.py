"""`vlmwatch check-config` and `vlmwatch run`: validate everything, then start."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from daemon.errors import ConfigError
from daemon.rules.model import RuleSet


def build_app(cfg, once: bool = False):
    """Open everything the config names; return the App and what to close afterwards, in order."""
    from daemon.engine.bundle import locate, open_model
    from daemon.engine.engine import Engine, Sampling
    from daemon.service.app import App
    from daemon.service.history import History
    from daemon.service.metrics import Metrics
    from daemon.service.notify import Notifier
    from daemon.video import open_source

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
    from daemon.summaries.runner import RunLog
    from daemon.summaries.scheduler import SummaryScheduler

    runlog = RunLog(history.path).open()
    closers.append(runlog.close)
    return SummaryScheduler(cfg.summaries, runlog)


def make_publisher(cfg, rules, on_ask):
    """The MQTT publisher for cfg.mqtt, or None: without an mqtt section nothing is published."""
    if cfg.mqtt is None:
        return None
    from daemon.mqtt.publisher import Publisher

    rule_infos = rules.rule_infos() if rules is not None else ()
    return Publisher(cfg.mqtt, cfg.state_dir / "outbox.sqlite", [c.name for c in cfg.cameras], rule_infos,
                     [j.id for j in cfg.summaries], on_ask=on_ask)


def build_rules(cfg, engine, history, closers):
    """The rule runner for cfg.rules (None without rules), its questions checked against the model.
    The App hands it its publisher."""
    from daemon.rules.files import load_rules
    from daemon.rules.runner import RuleRunner, check_questions
    from daemon.rules.state import RuleStateStore

    if cfg.rules is None:
        return None
    rules = load_rules(cfg.rules, cameras=[c.name for c in cfg.cameras], timezone=cfg.tzinfo)
    check_questions(rules, engine, {c.name: c.frames for c in cfg.cameras})
    store = RuleStateStore(history.path).open()
    closers.append(store.close)
    return RuleRunner(rules, store, history, cameras=[c.name for c in cfg.cameras])


def rule_infos(rules: RuleSet, cameras: Sequence[str]):
    """What MQTT discovery needs: each rule with the configured cameras it watches."""
    from daemon.mqtt.discovery import RuleInfo

    return [RuleInfo(r.id, tuple(c for c in cameras if r.applies_to(c)), max(1, round(r.off_delay)))
            for r in rules.rules]
