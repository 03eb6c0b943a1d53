"""Token buckets and keyed limiters (pure: the clock is passed in)."""

from __future__ import annotations

import pytest

from trio_stream.hub.limits import KeyedLimiter, TokenBucket, retry_after


def test_bucket_spends_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0, 3) == 0.0  # refilled, but never beyond the burst
    assert bucket.take(100.0) == pytest.approx(0.5)


def test_a_request_bigger_than_the_burst_waits_for_a_full_bucket() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert bucket.take(0.0, 2) == 0.0
    assert bucket.take(0.0, 50) == pytest.approx(0.2)
    assert bucket.take(0.2, 50) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0), (float("inf"), 1), (-1, 1)])
def test_bad_settings_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


def test_keyed_limiter_keeps_keys_apart_and_forgets_the_oldest() -> None:
    limiter = KeyedLimiter(1.0, 1.0, max_keys=2)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0 and limiter.refused == 1
    assert limiter.take("b", 0.0) == 0.0
    assert limiter.take("c", 0.0) == 0.0
    assert len(limiter) == 2
    assert limiter.take("a", 0.0) == 0.0  # "a" was forgotten: a fresh bucket


def test_per_minute_and_retry_after() -> None:
    limiter = KeyedLimiter.per_minute(600)
    assert limiter.rate == 10.0 and limiter.burst == 60.0
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"
