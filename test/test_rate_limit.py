"""RateLimiter: the average rate is the cap when offered more, with jittered frames, and no bursts."""

from __future__ import annotations

import random

import pytest

from lens_ros.rate_limit import RateLimiter


def passed_per_second(offered_hz: float, max_hz: float, seconds: float = 20.0, jitter_s: float = 0.0) -> float:
    rng = random.Random(0)
    limiter, passed = RateLimiter(max_hz), 0
    for i in range(int(offered_hz * seconds)):
        passed += limiter.take(i / offered_hz + rng.uniform(0.0, jitter_s))
    return passed / seconds


@pytest.mark.parametrize("offered, cap", [(30.0, 10.0), (30.0, 7.0), (60.0, 25.0), (25.0, 10.0)])
def test_average_rate_is_the_cap_when_offered_more(offered, cap):
    assert passed_per_second(offered, cap) == pytest.approx(cap, rel=0.02)
    assert passed_per_second(offered, cap, jitter_s=0.3 / offered) == pytest.approx(cap, rel=0.03)


def test_everything_passes_below_the_cap_and_nothing_bursts_after_a_pause():
    assert passed_per_second(5.0, 10.0) == pytest.approx(5.0)
    limiter = RateLimiter(10.0)
    assert limiter.take(100.0)
    passed = [t for t in (100.001, 100.01, 100.03, 100.049) if limiter.take(t)]
    assert passed == [], "nothing within half a period after an event that follows a pause"
    assert limiter.wait_s(100.0) == pytest.approx(0.05) and limiter.take(100.05)
    with pytest.raises(ValueError):
        RateLimiter(0.0)
