"""Prometheus metrics, on the instance's own registry (never the global one: several daemons in one
process do not collide, nothing registers at import). Labels are configured camera names.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server

from daemon.errors import ConfigError
from daemon.types import Timings

log = logging.getLogger(__name__)


SOURCE_STATES = ("connecting", "connected", "lost", "ended", "error")
KV_PATHS = ("resident", "copied")  # daemon.engine.Engine.kv_path
# What each kind of `daemon.sources.SourceEvent` means for the source_state metric.
_EVENT_STATES = {"connected": "connected", "lost": "lost", "retrying": "connecting", "error": "error",
                 "finished": "ended"}


@dataclass(frozen=True)
class MetricsEndpoint:
    """Where a started metrics server listens (the real port when 0 was asked for)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


class Metrics:
    """The daemon's metrics on a private registry, and the HTTP server that exposes them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self.windows_analysed = Counter(
            "vlmwatch_windows_analysed", "Windows the NPU analysed.", ["camera"], registry=r)
        self.windows_skipped = Counter(
            "vlmwatch_windows_skipped", "Windows the scene-change gate skipped.", ["camera"], registry=r)
        self.windows_dropped = Counter(
            "vlmwatch_windows_dropped", "Windows dropped unanalysed: a newer one of the same camera replaced them "
            "in the NPU queue, or the camera's capture queue was full.", ["camera"], registry=r)
        self.camera_last_frame_age = Gauge(
            "vlmwatch_camera_last_frame_age_seconds", "Seconds since each camera's last frame (before the first: "
            "since its capture started).", ["camera"], registry=r)
        self.capture_restarts = Counter(
            "vlmwatch_capture_restarts", "Captures the camera watchdog restarted: the thread died, or a live camera "
            "gave no window for health.stall_after.", ["camera"], registry=r)
        self.camera_down = Gauge(
            "vlmwatch_camera_down", "1 while a camera is down for health.down_after or longer (the daemon then "
            "reports itself unhealthy), else 0.", ["camera"], registry=r)
        self.npu_seconds = Counter(
            "vlmwatch_npu_seconds", "NPU time: kind=real is measured wall-clock time of engine calls, "
            "kind=modelled is the AX650N cost of the same calls (published per-graph times plus host<->NPU "
            "copies).", ["kind"], registry=r)
        self.npu_queue_depth = Gauge(
            "vlmwatch_npu_queue_depth", "Windows and summary jobs waiting for the NPU worker.", registry=r)
        self.tokens_per_second = Gauge(
            "vlmwatch_tokens_per_second", "Decode speed of the most recent generation.", registry=r)
        self.source_state = Enum(
            "vlmwatch_source_state", "State of each camera's source.", ["camera"], states=list(SOURCE_STATES),
            registry=r)
        self.mqtt_connected = Gauge(
            "vlmwatch_mqtt_connected", "1 while connected to the MQTT broker, else 0.", registry=r)
        self.outbox_depth = Gauge(
            "vlmwatch_outbox_depth", "QoS 1 MQTT messages waiting for the broker's acknowledgement.", registry=r)
        self.mqtt_dead_letters = Counter(
            "vlmwatch_mqtt_dead_letters", "MQTT messages that can never be published (topic or payload refused "
            "by MQTT, paho or the broker's limit), moved to the outbox's dead letters so the rest go out.", registry=r)
        self._dead_letters_seen = 0
        self.asks_refused = Counter(
            "vlmwatch_asks_refused", "Questions refused before the NPU: source=mqtt|http, reason=rate (the client's "
            "rate limit) or queue (too many waiting).", ["source", "reason"], registry=r)
        self.http_requests = Counter(
            "vlmwatch_http_requests", "HTTP API requests answered, by endpoint and status code.",
            ["endpoint", "status"], registry=r)
        self.http_seconds = Histogram(
            "vlmwatch_http_request_seconds", "Latency of HTTP API requests (queueing and NPU time included).",
            ["endpoint"], buckets=(0.05, 0.25, 1, 2.5, 5, 10, 20, 40, 60, 120, 300), registry=r)
        self.http_tokens = Counter(
            "vlmwatch_http_tokens", "Tokens of HTTP chat completions: kind=prompt or completion.", ["kind"],
            registry=r)
        self.http_cancelled = Counter(
            "vlmwatch_http_cancelled", "HTTP chat completions abandoned because the client went away or gave up "
            "waiting for the NPU.", registry=r)
        self.kv_path = Enum(
            "vlmwatch_kv_path", "Where the LLM's KV cache lives: resident in the NPU runtime's input buffers (each "
            "call writes only its new rows) or copied whole into the runtime with every call.",
            states=list(KV_PATHS), registry=r)
        self.npu_busy_seconds = Counter(
            "vlmwatch_npu_busy_seconds", "Wall-clock seconds each NPU worker spent on jobs; its rate is the "
            "NPU's load. npu: npu<i>, the i-th entry of model.devices (npu0 alone by default).", ["npu"], registry=r)
        self.npu_jobs = Counter(
            "vlmwatch_npu_jobs", "Jobs each NPU worker finished, by kind: window, story (an event's), ask, summary (one model call "
            "of a summary).", ["npu", "kind"], registry=r)
        self.npu_load = Gauge(
            "vlmwatch_npu_load", "Fraction of the last minute each NPU worker spent on jobs (0..1).", ["npu"],
            registry=r)
        for kind in ("real", "modelled"):
            self.npu_seconds.labels(kind=kind)  # export both series as 0 from the start
        for kind in ("prompt", "completion"):
            self.http_tokens.labels(kind=kind)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- updates ------------------------------------------------------------

    def add_camera(self, camera: str) -> None:
        """Export a camera's counters as 0 before its first window, so rates start from a known point."""
        for counter in (self.windows_analysed, self.windows_skipped, self.windows_dropped, self.capture_restarts):
            counter.labels(camera=camera)
        self.camera_down.labels(camera=camera).set(0)
        self.source_state.labels(camera=camera).state("connecting")

    def add_npu(self, npu: str) -> None:
        """Export an NPU's series as 0 before its first job."""
        self.npu_busy_seconds.labels(npu=npu)
        for kind in ("window", "story", "ask", "summary"):
            self.npu_jobs.labels(npu=npu, kind=kind)
        self.npu_load.labels(npu=npu).set(0)

    def npu_job(self, npu: str, kind: str, seconds: float) -> None:
        """An NPU worker finished a job of `kind` that took `seconds` of wall-clock time."""
        self.npu_busy_seconds.labels(npu=npu).inc(seconds)
        self.npu_jobs.labels(npu=npu, kind=kind).inc()

    def set_npu_load(self, npu: str, load: float) -> None:
        self.npu_load.labels(npu=npu).set(load)

    def window_analysed(self, camera: str) -> None:
        self.windows_analysed.labels(camera=camera).inc()

    def window_skipped(self, camera: str) -> None:
        self.windows_skipped.labels(camera=camera).inc()

    def window_dropped(self, camera: str, count: int = 1) -> None:
        self.windows_dropped.labels(camera=camera).inc(count)

    def capture_restarted(self, camera: str) -> None:
        self.capture_restarts.labels(camera=camera).inc()

    def camera_health(self, camera: str, last_frame_age: float, down: bool) -> None:
        self.camera_last_frame_age.labels(camera=camera).set(last_frame_age)
        self.camera_down.labels(camera=camera).set(1 if down else 0)

    def observe_timings(self, timings: Timings) -> None:
        """Account one engine call: its real and modelled NPU time, and its decode speed if it decoded."""
        real_ms = timings.vit_ms + timings.prefill_ms + timings.decode_ms
        self.npu_seconds.labels(kind="real").inc(real_ms / 1000.0)
        self.npu_seconds.labels(kind="modelled").inc(timings.modelled_npu_ms / 1000.0)
        if timings.generated and timings.decode_ms > 0:
            self.tokens_per_second.set(timings.tokens_per_s)

    def ask_refused(self, source: str, reason: str) -> None:
        self.asks_refused.labels(source=source, reason=reason).inc()

    def http_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.http_requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.http_seconds.labels(endpoint=endpoint).observe(seconds)

    def http_completion(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.http_tokens.labels(kind="prompt").inc(prompt_tokens)
        self.http_tokens.labels(kind="completion").inc(completion_tokens)

    def set_source_state(self, camera: str, state: str) -> None:
        if state not in SOURCE_STATES:
            raise ValueError(f"unknown source state {state!r} for camera {camera!r}; "
                             f"expected one of {', '.join(SOURCE_STATES)}")
        self.source_state.labels(camera=camera).state(state)

    def source_event(self, camera: str, kind: str) -> None:
        """Follow a source event (`SourceEvent.kind`); kinds that say nothing about the state are ignored."""
        state = _EVENT_STATES.get(kind)
        if state is None:
            log.debug("metrics: source event %r of camera %s does not change its state", kind, camera)
            return
        self.source_state.labels(camera=camera).state(state)

    def set_queue_depth(self, depth: int) -> None:
        self.npu_queue_depth.set(depth)

    def set_mqtt_connected(self, connected: bool) -> None:
        self.mqtt_connected.set(1 if connected else 0)

    def set_outbox_depth(self, depth: int) -> None:
        self.outbox_depth.set(depth)

    def set_dead_letters(self, total: int) -> None:
        """Follow the publisher's count of dead letters since start (a counter only goes up)."""
        if total > self._dead_letters_seen:
            self.mqtt_dead_letters.inc(total - self._dead_letters_seen)
            self._dead_letters_seen = total

    def set_kv_path(self, path: str) -> None:
        if path not in KV_PATHS:
            raise ValueError(f"unknown KV cache path {path!r}; expected one of {', '.join(KV_PATHS)}")
        self.kv_path.state(path)

    # -- HTTP endpoint ------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 9108) -> MetricsEndpoint:
        """Start the endpoint on a background thread; port 0 picks a free port."""
        if self._server is not None:
            raise RuntimeError("the metrics endpoint is already running; close() it first")
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc}. Set metrics.port to a free port "
                "(or metrics.host to an address of this machine), or metrics.enabled: false to turn the "
                "endpoint off.") from exc
        thread.name = "metrics-http"
        self._server, self._thread = server, thread
        endpoint = MetricsEndpoint(host, server.server_address[1])
        log.info("metrics: serving Prometheus metrics at %s", endpoint.url)
        return endpoint

    def close(self, timeout: float = 5.0) -> None:
        """Stop the endpoint and release its port; safe to call when not serving."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("metrics: the HTTP thread did not stop within %.0f s", timeout)
