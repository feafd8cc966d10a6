"""daemon.metrics: a real HTTP endpoint, scraped the way Prometheus does."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from daemon.config.daemon import MetricsSettings
from daemon.errors import ConfigError
from daemon.service.metrics import SOURCE_STATES, Metrics
from daemon.types import Timings


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics():
    m = Metrics()
    yield m
    m.close()


def test_scrape_shows_the_values(metrics):
    metrics.add_camera("front")
    metrics.window_analysed("front")
    metrics.window_analysed("front")
    metrics.window_skipped("front")
    metrics.window_dropped("back", 3)
    metrics.observe_timings(Timings(vit_ms=500, prefill_ms=400, decode_ms=100, generated=5, modelled_npu_ms=2500))
    metrics.observe_timings(Timings(prefill_ms=1000, modelled_npu_ms=500))  # a choice prompt: no decode
    metrics.set_queue_depth(2)
    metrics.set_source_state("front", "connected")
    metrics.set_mqtt_connected(True)
    metrics.outbox_depth.set_function(lambda: 7)

    endpoint = metrics.serve("127.0.0.1", 0)
    assert endpoint.port > 0
    assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
    values = _scrape(endpoint.url)

    assert values[("vlmwatch_windows_analysed_total", (("camera", "front"),))] == 2
    assert values[("vlmwatch_windows_skipped_total", (("camera", "front"),))] == 1
    assert values[("vlmwatch_windows_dropped_total", (("camera", "front"),))] == 0
    assert values[("vlmwatch_windows_dropped_total", (("camera", "back"),))] == 3
    assert values[("vlmwatch_npu_seconds_total", (("kind", "real"),))] == pytest.approx(2.0)
    assert values[("vlmwatch_npu_seconds_total", (("kind", "modelled"),))] == pytest.approx(3.0)
    assert values[("vlmwatch_tokens_per_second", ())] == pytest.approx(50.0)
    assert values[("vlmwatch_npu_queue_depth", ())] == 2
    assert values[("vlmwatch_mqtt_connected", ())] == 1
    assert values[("vlmwatch_outbox_depth", ())] == 7
    states = {labels: v for (name, labels), v in values.items() if name == "vlmwatch_source_state"}
    assert states[(("camera", "front"), ("vlmwatch_source_state", "connected"))] == 1
    assert states[(("camera", "front"), ("vlmwatch_source_state", "connecting"))] == 0
    assert len(states) == 5

    metrics.set_source_state("front", "lost")
    metrics.set_mqtt_connected(False)
    values = _scrape(endpoint.url)
    assert values[("vlmwatch_source_state", (("camera", "front"), ("vlmwatch_source_state", "lost")))] == 1
    assert values[("vlmwatch_mqtt_connected", ())] == 0


def test_each_npu_has_its_busy_time_jobs_and_load(metrics):
    for npu in ("npu0", "npu1"):
        metrics.add_npu(npu)
    metrics.npu_job("npu1", "window", 20.0)
    metrics.npu_job("npu1", "ask", 1.5)
    metrics.set_npu_load("npu1", 0.75)
    values = _scrape(metrics.serve("127.0.0.1", 0).url)
    assert values[("vlmwatch_npu_busy_seconds_total", (("npu", "npu0"),))] == 0
    assert values[("vlmwatch_npu_busy_seconds_total", (("npu", "npu1"),))] == 21.5
    assert values[("vlmwatch_npu_jobs_total", (("kind", "window"), ("npu", "npu1")))] == 1
    assert values[("vlmwatch_npu_jobs_total", (("kind", "summary"), ("npu", "npu0")))] == 0
    assert values[("vlmwatch_npu_load", (("npu", "npu1"),))] == 0.75


def test_close_releases_the_port(metrics):
    endpoint = metrics.serve("127.0.0.1", 0)
    _scrape(endpoint.url)
    metrics.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(endpoint.url, timeout=5)
    # SO_REUSEADDR only tolerates the scrape's TIME_WAIT; a live listener would still refuse the bind.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", endpoint.port))
    again = metrics.serve("127.0.0.1", endpoint.port)
    assert again.port == endpoint.port
    metrics.close()
    metrics.close()  # idempotent


def test_source_events_drive_the_state(metrics):
    def state(camera: str) -> str:
        [name] = [s for s in SOURCE_STATES
                  if metrics.registry.get_sample_value(
                      "vlmwatch_source_state", {"camera": camera, "vlmwatch_source_state": s}) == 1]
        return name

    for kind, expected in [("connected", "connected"), ("lost", "lost"), ("retrying", "connecting"),
                           ("error", "error"), ("finished", "ended"), ("something-new", "ended")]:
        metrics.source_event("front", kind)
        assert state("front") == expected


def test_the_kv_cache_path_is_exported(metrics):
    metrics.set_kv_path("resident")
    values = _scrape(metrics.serve("127.0.0.1", 0).url)
    assert values[("vlmwatch_kv_path", (("vlmwatch_kv_path", "resident"),))] == 1
    assert values[("vlmwatch_kv_path", (("vlmwatch_kv_path", "copied"),))] == 0
    with pytest.raises(ValueError, match="unknown KV cache path 'host'; expected one of resident, copied"):
        metrics.set_kv_path("host")


def test_the_daemon_sets_the_kv_path_of_its_engine(daemon_config, yard_clip):
    from daemon.config import load_config
    from daemon.service.build import build_app

    app, closers = build_app(load_config(daemon_config(yard_clip)))
    try:  # the tiny model runs on ONNX Runtime, which takes every input with each call
        assert app.metrics.registry.get_sample_value("vlmwatch_kv_path", {"vlmwatch_kv_path": "copied"}) == 1
        assert app.engine.kv_path == "copied"
    finally:
        for close in reversed(closers):
            close()


def test_instances_do_not_collide():
    a, b = Metrics(), Metrics()
    a.window_analysed("cam")
    assert a.registry.get_sample_value("vlmwatch_windows_analysed_total", {"camera": "cam"}) == 1
    assert b.registry.get_sample_value("vlmwatch_windows_analysed_total", {"camera": "cam"}) is None


def test_port_in_use_is_a_clear_error(metrics):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}: .*metrics.port"):
            metrics.serve("127.0.0.1", port)


def test_unknown_source_state_is_refused(metrics):
    with pytest.raises(ValueError, match="unknown source state 'sleeping' for camera 'front'"):
        metrics.set_source_state("front", "sleeping")


def test_settings():
    assert MetricsSettings() == MetricsSettings(enabled=True, host="127.0.0.1", port=9108)
    assert all(field.description for field in MetricsSettings.model_fields.values())
    with pytest.raises(ValidationError, match="prot"):
        MetricsSettings.model_validate({"prot": 1})
    with pytest.raises(ValidationError):
        MetricsSettings(port=70000)
