"""The HTTP API on a busy NPU (tiny model at AX650N speed): a full queue answers 429, a client
that leaves cancels its request, and a client flooding the API cannot starve camera windows."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from daemon.config import Config
from daemons import SYSTEM, board_speed_engine, running
from mosquitto import free_port, wait_until


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_model, long_clip):
    """A live-paced camera (a 2-frame window every 4 s, every window analysed), one request may wait."""
    tmp = tmp_path_factory.mktemp("http-load")
    cfg = Config.model_validate({
        "model": {"dir": str(tiny_model), "system": SYSTEM},
        "cameras": [{"name": "yard", "source": str(long_clip), "realtime": True, "span": 4, "stride": 4,
                     "frames": 2, "gate": {"enabled": False}}],
        "prompts": {"max_new_tokens": 2},
        "asks": {"per_minute": 0},
        "http": {"enabled": True, "port": free_port(), "max_waiting": 1, "max_tokens": 256},
        "state_dir": str(tmp / "state"), "metrics": {"enabled": False}})
    with running(cfg, board_speed_engine(tiny_model)) as app:
        app.client = openai.OpenAI(base_url=f"http://127.0.0.1:{cfg.http.port}/v1", api_key="none", max_retries=0,
                                   timeout=60)
        yield app


def ask(client, max_tokens=8, **options):
    return client.chat.completions.create(model="any", max_tokens=max_tokens,
                                          messages=[{"role": "user", "content": "What is there?"}], **options)


def test_a_full_queue_answers_429_with_retry_after(daemon):
    gate, outcomes = threading.Barrier(4), []

    def request():
        gate.wait()
        try:
            outcomes.append(ask(daemon.client, max_tokens=24).choices[0].message.content)
        except openai.RateLimitError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(outcomes) == 4 and refused and len(refused) < 4  # one runs, one waits, the rest are refused
    assert all(o.status_code == 429 and o.body["code"] == "queue_full" for o in refused)
    assert int(refused[0].response.headers["Retry-After"]) >= 1
    assert "(http.max_waiting)" in refused[0].message


def test_a_client_that_disconnects_cancels_its_request(daemon):
    cancelled = daemon.metrics.http_cancelled._value.get()
    stream = ask(daemon.client, max_tokens=250, stream=True)  # ~4 s of decoding at board speed
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    left = time.monotonic()
    stream.close()  # the client goes away mid-answer
    wait_until(lambda: daemon.metrics.http_cancelled._value.get() == cancelled + 1, 10, "the request cancelled")
    assert daemon.queue.wait_idle(10)
    assert time.monotonic() - left < 3.0  # stopped at the next step, not after the remaining ~4 s of tokens
    assert ask(daemon.client).choices[0].message.content  # and the NPU serves the next request


def analysed_times(daemon, count: int, after: float, timeout: float) -> list[float]:
    """Monotonic times at which the next `count` windows were analysed (polling the metric)."""
    counter = daemon.metrics.windows_analysed.labels(camera="yard")
    seen, times = counter._value.get(), []
    deadline = time.monotonic() + timeout
    while len(times) < count:
        now = time.monotonic()
        assert now < deadline, f"only {len(times)} of {count} windows analysed within {timeout} s"
        n = counter._value.get()
        if n > seen:
            times += [now] * int(n - seen) if now > after else []
            seen = n
        time.sleep(0.02)  # polling a counter; the measurement is over seconds
    return times[:count]


def test_windows_keep_flowing_while_a_client_floods_the_api(daemon):
    base = analysed_times(daemon, 4, after=0.0, timeout=60)
    quiet_rate = 3 / (base[-1] - base[0])
    stop, answered, refused = threading.Event(), [0], [0]

    def flood():  # as fast as it can: the next request as soon as the last is answered or refused
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                ask(daemon.client)
                answered[0] += 1
            except openai.RateLimitError:
                refused[0] += 1

    clients = [threading.Thread(target=flood, name=f"flood-{i}") for i in range(2)]
    start = time.monotonic()
    for c in clients:
        c.start()
    try:
        during = analysed_times(daemon, 3, after=start, timeout=40)
    finally:
        stop.set()
        for c in clients:
            c.join(30)
    flood_rate = 3 / (during[-1] - start)
    print(f"\nwindows/s: {quiet_rate:.3f} without requests, {flood_rate:.3f} under a request flood "
          f"({flood_rate / quiet_rate:.0%}); {answered[0]} requests answered, {refused[0]} refused (429)")
    assert flood_rate >= 0.5 * quiet_rate
    assert answered[0] >= 5
