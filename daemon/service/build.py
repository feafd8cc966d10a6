"""Wiring: the one place that opens what the config names and connects the parts.

    app, closers = build_app(cfg)      # opens the model, history, sources, MQTT, ...
    app.run()
    for close in reversed(closers): close()

`assemble` connects parts that are already open (tests pass fakes for any of
them); `build_app` opens the real ones and calls it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

from daemon.engine.engine import Engine, open_engine
from daemon.errors import ConfigError
from daemon.rules.files import load_rules
from daemon.rules.model import RuleSet
from daemon.rules.runner import RuleRunner, check_questions
from daemon.rules.state import RuleStateStore
from daemon.service.app import App, Camera, Publisher
from daemon.service.history import History
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.worker import NpuWorker, WorkQueue
from daemon.summaries.runner import RunLog, Summarizer
from daemon.summaries.scheduler import SummaryScheduler
from daemon.video import MainFrames, Source, open_main_frames, open_source
from daemon.video.gate import Gate
from daemon.video.snapshot import snapshot

if TYPE_CHECKING:
    from daemon.config import Config

log = logging.getLogger(__name__)


def build_app(cfg: Config, once: bool = False) -> tuple[App, list[Callable[[], None]]]:
    """Open everything the config names; return the App and what to close afterwards, in order."""
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state_dir {cfg.state_dir}: cannot create it ({exc.strerror});"
                          " point state_dir at a writable folder") from None
    closers: list[Callable[[], None]] = []
    notifier = Notifier()
    notifier.extend_timeout(300)  # loading 30 graphs onto the NPU takes a while
    engine = open_engine(cfg.model, max_new_tokens=cfg.prompts.max_new_tokens)
    history = History(cfg.state_dir / "history.sqlite").open()
    closers.append(history.close)
    ruleset = open_rules(cfg, engine)
    metrics = Metrics()
    if cfg.metrics.enabled:
        endpoint = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        closers.append(metrics.close)
        log.info("metrics on %s", endpoint.url)
    on_event = lambda e: metrics.source_event(e.camera, e.kind)  # noqa: E731
    sources = {c.name: open_source(c.name, c.detect_source or c.source, c, on_event=on_event,
                                   state_dir=cfg.state_dir, once=once) for c in cfg.cameras}
    mains = {c.name: open_main_frames(c.name, c.source, c, sources[c.name])  # logged; metrics follow the gate's
             for c in cfg.cameras if c.detect_source is not None and c.frames_from == "main"}
    publisher = make_publisher(cfg, ruleset, on_ask=lambda request: app.on_ask(request))
    app = assemble(cfg, engine, sources, history, metrics=metrics, notifier=notifier, publisher=publisher,
                   ruleset=ruleset, closers=closers, mains=mains)
    if publisher is not None:
        publisher.start()  # connects in the background; a bad password or TLS file fails here (exit 2)
    start_triggers(cfg, app, closers)
    return app, closers


def start_triggers(cfg: Config, app: App, closers: list[Callable[[], None]]):
    """Subscribe to the cameras' MQTT triggers (if any); a match makes that camera's gate pass its
    next window. Returns the subscriber, or None."""
    triggers = [(c.name, t) for c in cfg.cameras for t in c.triggers]
    if not triggers or cfg.mqtt is None:
        return None
    from daemon.mqtt.triggers import TriggerSubscriber

    subscriber = TriggerSubscriber(cfg.mqtt, triggers, lambda camera, label: app.cameras[camera].gate.trigger(label))
    subscriber.start()
    closers.append(subscriber.stop)
    return subscriber


def assemble(cfg: Config, engine: Engine, sources: dict[str, Source], history: History, *,
             metrics: Metrics | None = None, notifier: Notifier | None = None, publisher: Publisher | None = None,
             ruleset: RuleSet | None = None, closers: list[Callable[[], None]] | None = None,
             clock: Callable[[], float] = time.time, mains: dict[str, MainFrames] | None = None) -> App:
    """Connect open parts into an App: a gate per camera (`mains`: main-stream frames of cameras whose gate
    reads a substream), the NPU queue and worker, the rule runner
    (persisting its state in the history file), the summarizer and its scheduler."""
    closers = closers if closers is not None else []
    stop = threading.Event()
    queue = WorkQueue()
    cameras = {c.name: Camera(c, sources[c.name], Gate(c.gate, zones=tuple(c.zones.items())),
                              main=(mains or {}).get(c.name)) for c in cfg.cameras}
    rules = None
    if ruleset is not None:
        store = RuleStateStore(history.path).open()
        closers.append(store.close)
        rules = RuleRunner(ruleset, store, history, publisher, snapshot)
    summarizer = scheduler = None
    if cfg.summaries:
        runlog = RunLog(history.path).open()
        closers.append(runlog.close)
        publish = publisher.publish_summary if publisher is not None else None
        summarizer = Summarizer(history, engine, runlog, [c.name for c in cfg.cameras], publish, clock)
        scheduler = SummaryScheduler(cfg.summaries, runlog)
    return App(cfg, engine, cameras, history, queue, NpuWorker(queue, stop), stop,
               metrics=metrics or Metrics(), notifier=notifier or Notifier(""), publisher=publisher, rules=rules,
               summarizer=summarizer, scheduler=scheduler, clock=clock)


def open_rules(cfg: Config, engine: Engine) -> RuleSet | None:
    """The rule files of cfg.rules (None without rules), their questions checked against the model."""
    if cfg.rules is None:
        return None
    ruleset = load_rules(cfg.rules, cameras=[c.name for c in cfg.cameras], timezone=cfg.tzinfo,
                         zones={c.name: c.zones for c in cfg.cameras})
    check_questions(ruleset, engine, {c.name: c.frames for c in cfg.cameras})
    return ruleset


def make_publisher(cfg: Config, ruleset: RuleSet | None, on_ask):
    """The MQTT publisher for cfg.mqtt, or None: without an mqtt section nothing is published."""
    if cfg.mqtt is None:
        return None
    from daemon.mqtt.publisher import Publisher  # paho only when MQTT is configured

    cameras = [c.name for c in cfg.cameras]
    infos = rule_infos(ruleset, cameras) if ruleset is not None else ()
    return Publisher(cfg.mqtt, cfg.state_dir / "outbox.sqlite", cameras, infos, [j.id for j in cfg.summaries],
                     on_ask=on_ask)


def rule_infos(rules: RuleSet, cameras: Sequence[str]):
    """What MQTT discovery needs: each rule with the configured cameras it watches."""
    from daemon.mqtt.discovery import RuleInfo

    return [RuleInfo(r.id, tuple(c for c in cameras if r.applies_to(c)), max(1, round(r.off_delay)))
            for r in rules.rules]
