"""Pure fairness bookkeeping: NPU share by job kind over a sliding window, per-client rate limits."""

import pytest

from daemon.service.workqueue import NpuShare, RateLimiter


def test_share_is_busy_time_of_a_kind_over_all_busy_time():
    share = NpuShare(horizon=60)
    assert share.fraction("ask", now=0) == 0.0  # idle: nothing used
    share.record("ask", 3.0, now=3)
    assert share.fraction("ask", now=3) == 1.0
    share.record("window", 1.0, now=4)
    share.record("summary", 2.0, now=6)
    assert share.fraction("ask", now=6) == pytest.approx(3 / 6)
    assert share.fraction("window", now=6) == pytest.approx(1 / 6)


def test_share_forgets_jobs_that_ended_before_the_horizon():
    share = NpuShare(horizon=10)
    share.record("ask", 5.0, now=5)
    share.record("window", 1.0, now=12)
    assert share.fraction("ask", now=12) == pytest.approx(5 / 6)
    assert share.fraction("ask", now=15.5) == 0.0  # the ask ended at 5, more than 10 s before 15.5
    assert share.seconds("window", now=15.5) == 1.0
    assert share.fraction("window", now=23) == 0.0


def test_share_needs_a_positive_horizon():
    with pytest.raises(ValueError, match="horizon must be positive"):
        NpuShare(horizon=0)


def test_rate_limiter_allows_a_burst_then_the_rate():
    limits = RateLimiter(per_minute=6, burst=3)  # one every 10 s
    assert [limits.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limits.take("a", now=0.0) == pytest.approx(10.0)  # the bucket is empty: wait a whole token
    assert limits.take("a", now=4.0) == pytest.approx(6.0)  # refused asks do not use up tokens
    assert limits.take("a", now=10.0) == 0.0
    assert limits.take("a", now=10.0) == pytest.approx(10.0)


def test_rate_limiter_keeps_one_bucket_per_client():
    limits = RateLimiter(per_minute=60, burst=1)
    assert limits.take("mqtt:porch", now=0) == 0.0
    assert limits.take("mqtt:porch", now=0) > 0
    assert limits.take("mqtt:yard", now=0) == 0.0  # another camera topic has its own budget
    assert limits.take("http:127.0.0.1", now=0) == 0.0


def test_rate_limiter_refills_only_up_to_the_burst():
    limits = RateLimiter(per_minute=60, burst=2)
    limits.take("a", now=0)
    assert [limits.take("a", now=1000) for _ in range(3)][2] > 0  # an hour idle still allows only 2 at once


def test_rate_limiter_zero_is_off_and_bounds_its_memory():
    assert RateLimiter(per_minute=0, burst=1).take("a", now=0) == 0.0
    limits = RateLimiter(per_minute=1, burst=1, max_clients=3)
    for i in range(10):
        limits.take(f"client-{i}", now=0)
    assert len(limits._buckets) == 3
    assert limits.take("client-9", now=0) > 0  # the most recent clients are remembered
    with pytest.raises(ValueError):
        RateLimiter(per_minute=-1, burst=1)
