"""Wiring: the one place that opens what the config names and connects the parts.

    daemon, closers = build_app(cfg)   # opens the model, history, sources, ...
    daemon.run()                       # starts the HTTP server, MQTT, cameras, NPUs; stops them
    for close in reversed(closers): close()

`assemble` connects parts that are already open into a `Daemon` (tests pass
fakes for any of them); `build_app` opens the real ones and calls it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable

from daemon.config.model import ModelSettings
from daemon.engine.bundle import locate
from daemon.engine.engine import Engine, open_engine
from daemon.errors import ConfigError
from daemon.events.book import EventBook
from daemon.rules.files import load_rules
from daemon.rules.model import RuleSet
from daemon.rules.runner import RuleRunner
from daemon.rules.state import RuleStateStore
from daemon.service.asks import AskHandler
from daemon.service.cameras import Camera
from daemon.service.daemon import Daemon, Pipeline, Serving
from daemon.service.ledger import WindowLedger
from daemon.service.metrics import Metrics
from daemon.service.notify import Notifier
from daemon.service.events import EventService
from daemon.service.publishing import Publishing
from daemon.service.windows import WindowHandler
from daemon.service.workers import Npu, NpuPool, NpuWorker
from daemon.service.workqueue import NpuShare, RateLimiter, WorkQueue
from daemon.state.events import EventStore
from daemon.state.history import History
from daemon.summaries.runner import RunLog, Summarizer
from daemon.summaries.scheduler import SummaryScheduler
from daemon.video import MainFrames, Source, open_main_frames, open_source
from daemon.video.gate import Gate
from daemon.video.snapshot import snapshot

if TYPE_CHECKING:
    from daemon.config import Config

log = logging.getLogger(__name__)


def build_app(cfg: Config, once: bool = False, engine: Engine | None = None, *, notifier: Notifier | None = None,
              metrics: Metrics | None = None) -> tuple[Daemon, list[Callable[[], None]]]:
    """Open everything the config names; return the daemon and what to close afterwards, in order.

    `run` passes what it opened first (daemon.cli.run): the notifier and the metrics endpoint
    (a port in use fails before the model loads), and the engine, checked against every prompt
    (daemon.service.preflight)."""
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state_dir {cfg.state_dir}: cannot create it ({exc.strerror});"
                          " point state_dir at a writable folder") from None
    closers: list[Callable[[], None]] = []
    return_freed_memory()
    if notifier is None:
        notifier = starting_notifier()
    if metrics is None:
        metrics = open_metrics(cfg)
    closers.append(metrics.close)
    engines = open_engines(cfg.model, max_new_tokens=cfg.prompts.max_new_tokens, opened=engine)
    release_heap()
    metrics.set_kv_path(engines[0].kv_path)
    history = History(cfg.state_dir / "history.sqlite").open()
    closers.append(history.close)
    ruleset = open_rules(cfg)
    on_event = lambda e: metrics.source_event(e.camera, e.kind)  # noqa: E731
    sources = open_sources(cfg, engines[0], on_event=on_event, once=once)
    closers += [s.close for s in sources.values()]  # their records of processed files
    mains = {c.name: open_main_frames(c.name, c.source_url(f"cameras[{i}]"), c, sources[c.name])
             for i, c in enumerate(cfg.cameras) if c.takes_main_frames}
    publisher = make_publisher(cfg, ruleset, on_ask=lambda request: daemon.pipeline.asks.admit(request),
                               rule_states=lambda: daemon.rule_states())
    triggers = make_triggers(cfg, lambda camera, label: daemon.cameras[camera].gate.trigger(label))
    daemon = assemble(cfg, engines, sources, history, metrics=metrics, notifier=notifier, publisher=publisher,
                      triggers=triggers, ruleset=ruleset, closers=closers, mains=mains)
    return daemon, closers


def starting_notifier() -> Notifier:
    notifier = Notifier()
    notifier.extend_timeout(300)  # loading 30 graphs onto the NPU takes a while
    return notifier


def open_metrics(cfg: Config) -> Metrics:
    """The metrics, served on cfg.metrics unless disabled; ConfigError when the port is taken."""
    metrics = Metrics()
    if cfg.metrics.enabled:
        endpoint = metrics.serve(cfg.metrics.host, cfg.metrics.port)
        log.info("metrics on %s", endpoint.url)
    return metrics


def make_triggers(cfg: Config, on_trigger: Callable[[str, str], None]):
    """The subscriber to the cameras' MQTT triggers, or None without triggers; a match calls
    `on_trigger(camera, label)`, which makes that camera's gate pass its next window."""
    triggers = [(c.name, t) for c in cfg.cameras for t in c.triggers]
    if not triggers or cfg.mqtt is None:
        return None
    from daemon.mqtt.triggers import TriggerSubscriber

    return TriggerSubscriber(cfg.mqtt, triggers, on_trigger)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed


def release_heap() -> bool:
    """Give the free pages inside glibc's heap back to the system (malloc_trim), once the model is open.

    Loading a tokenizer with InternVL3-2B's 151,674-token vocabulary parses its tokenizer.json into many
    small blocks: RssAnon grows by ~95 MiB, of which ~50 MiB are free again afterwards but stay in the heap
    between blocks still in use, where glibc's own trimming (only the heap's top) never reaches them
    (benchmarks/bench_memory.py). False where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def return_freed_memory() -> bool:
    """Make glibc give freed pictures back at once: allocations from 128 KiB up stay mmapped.

    Left to adjust itself, the threshold grows and frame-sized arrays stay in per-thread heaps
    (measured in docs/design.md). False where there is no glibc (nothing changes there)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def open_engines(settings: ModelSettings, max_new_tokens: int = 256, opened: Engine | None = None) -> list[Engine]:
    """One engine per NPU of `settings.devices` (default one: `device_id`), each opened once. `opened`: the
    first NPU's engine, already opened (and checked against every prompt) by `run` (daemon.service.preflight)."""
    devices = settings.device_list
    problem = settings.device_problem(locate(settings.dir, settings.tokenizer, settings.vit).kind)
    if problem is not None:
        raise ConfigError(f"model.devices: {problem}")
    if len(devices) == 1:
        return [opened or open_engine(settings, max_new_tokens=max_new_tokens)]
    engines = [opened] if opened is not None else []
    for i, device in enumerate(devices[len(engines):], start=len(engines)):
        where = "the board's NPU" if device is None else f"M.2 card {device}"
        log.info("npu%d: opening the model on %s", i, where if settings.backend != "onnxruntime" else "the CPU")
        engines.append(open_engine(settings.for_npu(i), max_new_tokens=max_new_tokens))
    return engines


def open_sources(cfg: Config, engine: Engine | None, *, on_event=None, once: bool = False) -> dict[str, Source]:
    """Every camera's source. With an engine that has a ViT, frames keep its input (resized at capture by
    the engine's own resize) and a reduced picture, never the decoded one."""
    model_input = engine.vision.fit if engine is not None and engine.vision is not None else None
    return {c.name: open_source(c.name, c.detect_url(f"cameras[{i}]") or c.source_url(f"cameras[{i}]"), c,
                                on_event=on_event,
                                state_dir=cfg.state_dir, once=once, model_input=model_input)
            for i, c in enumerate(cfg.cameras)}  # with a detect_source the gate reads it (main frames: `mains`)


def assemble(cfg: Config, engine: Engine | Sequence[Engine], sources: dict[str, Source], history: History, *,
             metrics: Metrics | None = None, notifier: Notifier | None = None, publisher: Publishing | None = None,
             triggers: Serving | None = None, ruleset: RuleSet | None = None, closers: list[Callable[[], None]] | None = None,
             clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
             mains: dict[str, MainFrames] | None = None) -> Daemon:
    """Connect open parts into a Daemon: a gate per camera (`mains`: main-stream frames of cameras whose gate
    reads a substream), the NPU queue and a worker per engine (one per NPU), the window ledger and the job
    handlers, the rule runner (persisting its state in the history file), the summarizer and its scheduler,
    and, when http is enabled, the HTTP API's side of the queue and its server (started by the daemon)."""
    closers = closers if closers is not None else []
    metrics = metrics or Metrics()
    stop = threading.Event()
    asks = cfg.asks
    queue = WorkQueue(max_asks=asks.max_waiting, max_chats=cfg.http.max_waiting, ask_share=asks.npu_share,
                      share=NpuShare(asks.share_seconds))
    engines = list(engine) if isinstance(engine, Sequence) else [engine]
    npus = NpuPool([Npu(i, f"npu{i}", e, NpuWorker(queue, stop, i, "npu-worker" if len(engines) == 1
                                                   else f"npu-worker-{i}")) for i, e in enumerate(engines)])
    # No ViT input is made ahead for queued windows: at 2.4 MB a frame that held ~65 MiB more at the peak of
    # two 1080p cameras; the engine normalises each next frame while the ViT runs one (docs/memory.md).
    cameras = {c.name: Camera(c, sources[c.name], Gate(c.gate, zones=tuple(c.zones.items())),
                              main=(mains or {}).get(c.name)) for c in cfg.cameras}
    rules = None
    if ruleset is not None:
        store = RuleStateStore(history.path).open()
        closers.append(store.close)
        rules = RuleRunner(ruleset, store, history, publisher, snapshot)
    events = None
    if cfg.events.enabled:
        event_store = EventStore(history.path, cfg.state_dir / "events").open()
        closers.append(event_store.close)
        book = EventBook(cfg.events, snapshot=lambda window: snapshot(window, None))
        events = EventService(book, event_store, queue, cameras, metrics, stop, publisher=publisher, rules=rules,
                              clock=clock)
    ledger = WindowLedger(history, metrics, sources, clock)
    windows = WindowHandler(cfg, queue, ledger, history, metrics, stop, publisher=publisher, rules=rules,
                            events=events, clock=clock)
    if events is not None:
        ledger.listen(on_answered=events.on_answered)
    limiter = RateLimiter(asks.per_minute, asks.burst)
    ask_handler = AskHandler(list(cameras), windows.latest, queue, limiter, history, metrics, stop,
                             publisher=publisher, max_new_tokens=cfg.prompts.max_new_tokens, clock=clock,
                             monotonic=monotonic)
    chat = open_chat(cfg, engines[0], queue, limiter, metrics, healthy=lambda: daemon.healthy())
    summarizer = scheduler = None
    if cfg.summaries:
        runlog = RunLog(history.path).open()
        closers.append(runlog.close)
        publish = publisher.publish_summary if publisher is not None else None
        summarizer = Summarizer(history, engines[0], runlog, [c.name for c in cfg.cameras], publish, clock,
                                events=events.store if events is not None else None)
        scheduler = SummaryScheduler(cfg.summaries, runlog)
    pipeline = Pipeline(queue, ledger, windows, ask_handler, chat, rules, summarizer, scheduler, events)
    http = (lambda daemon: http_server(cfg, daemon)) if chat is not None else None
    daemon = Daemon(cfg, npus, cameras, pipeline, history, stop, metrics=metrics, notifier=notifier or Notifier(""),
                    publisher=publisher, triggers=triggers, http=http, clock=clock, monotonic=monotonic)
    return daemon


def open_chat(cfg: Config, engine: Engine, queue: WorkQueue, limiter: RateLimiter, metrics: Metrics,
              healthy: Callable[[], bool]):
    """The HTTP API's side of the NPU queue (http.enabled), or None."""
    if not cfg.http.enabled:
        return None
    from daemon.service.chat import ChatService

    return ChatService(engine, queue, limiter, metrics, cfg.http, healthy)


def http_server(cfg: Config, daemon: Daemon):
    """The OpenAI-compatible API and the web page, not yet listening: requests become jobs in the daemon's
    NPU queue. `daemon.start()` makes it and starts it first (a taken port: ConfigError, exit 2)."""
    server_module = http_server_module()
    key = cfg.http.resolve_api_key()
    return server_module.HttpServer(cfg.http, daemon.pipeline.chat, api_key=key, observe=daemon.metrics.http_request,
                                    page=open_page(cfg, daemon, key))


def open_page(cfg: Config, daemon: Daemon, api_key: str | None):
    """The web page's side (daemon.http.web), closed with the server: history's read-only queries and search
    index on a connection of their own, and a read-only view of the running daemon (daemon.service.pageview)."""
    from daemon.http.web import PageApi
    from daemon.service.pageview import LiveView
    from daemon.state.eventbrowse import EventBrowser
    from daemon.times import zone_of

    browser = EventBrowser(daemon.history.path, cfg.state_dir / "events").open()
    return PageApi(browser, LiveView(daemon, cfg.timezone or str(zone_of(None))), api_key,
                   events=daemon.pipeline.events is not None)


def http_server_module():
    """daemon.http.server, or a ConfigError saying how to install aiohttp (the `http` extra)."""
    try:
        from daemon.http import server
    except ImportError as exc:
        raise ConfigError(f"http.enabled is true but the HTTP server cannot be loaded ({exc}): install it with "
                          "pip install 'vlmwatch[http]' (aiohttp), or set http.enabled: false") from None
    return server


def open_rules(cfg: Config) -> RuleSet | None:
    """The rule files of cfg.rules (None without rules); their questions are checked against the
    model before start (daemon.service.preflight)."""
    if cfg.rules is None:
        return None
    return load_rules(cfg.rules, cameras=[c.name for c in cfg.cameras], timezone=cfg.tzinfo,
                      zones={c.name: c.zones for c in cfg.cameras})


def make_publisher(cfg: Config, ruleset: RuleSet | None, on_ask, rule_states=None):
    """The MQTT publisher for cfg.mqtt, or None: without an mqtt section nothing is published.
    `rule_states() -> {(rule, camera): on}` is published on every connect."""
    if cfg.mqtt is None:
        return None
    from daemon.mqtt.publisher import Publisher  # paho only when MQTT is configured

    cameras = [c.name for c in cfg.cameras]
    infos = rule_infos(ruleset, cameras) if ruleset is not None else ()
    return Publisher(cfg.mqtt, cfg.state_dir / "outbox.sqlite", cameras, infos, [j.id for j in cfg.summaries],
                     on_ask=on_ask, rule_states=rule_states, events=cfg.events.enabled)


def rule_infos(rules: RuleSet, cameras: Sequence[str]):
    """What MQTT discovery needs: each rule with the configured cameras it watches."""
    from daemon.mqtt.discovery import RuleInfo

    return [RuleInfo(r.id, tuple(c for c in cameras if r.applies_to(c)), max(1, round(r.off_delay)))
            for r in rules.rules]
