"""Load-mode pacing: the token bucket meets its rate whatever the wake-up pattern, and a stall does
not turn into a burst larger than the bucket."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_sim.load import TokenBucket


@given(
    rate=st.floats(min_value=1.0, max_value=5000.0),
    wakeups=st.lists(st.floats(min_value=0.0001, max_value=0.05), min_size=20, max_size=400),
)
def test_tokens_follow_the_rate_when_wakeups_are_frequent(rate: float, wakeups: list[float]) -> None:
    burst = max(1.0, rate * 0.1)
    bucket, now, taken = TokenBucket(rate, burst, 0.0), 0.0, 0
    for step in wakeups:
        now += min(step, int(burst) / rate)  # never stall longer than the bucket holds
        taken += bucket.take(now)
    assert rate * now - 1 - 1e-6 <= taken <= rate * now + 1e-6


def test_a_paced_loop_sends_rate_times_duration() -> None:
    rng = random.Random(4)
    bucket, now, taken = TokenBucket(100.0, 10.0, 0.0), 0.0, 0
    while now < 3.0:
        taken += bucket.take(now)
        # Sleep until the next token, plus the scheduler's jitter.
        now += bucket.wait_s(now) + rng.uniform(0.0, 0.004)
    assert 295 <= taken <= 300


def test_a_stall_loses_tokens_beyond_the_burst() -> None:
    bucket = TokenBucket(100.0, 10.0, 0.0)
    assert bucket.take(5.0) == 10
    assert bucket.take(5.0) == 0
    assert bucket.wait_s(5.0) == pytest.approx(0.01)
    assert bucket.take(5.015) == 1


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1.0), (-1.0, 5.0), (10.0, 0.5)])
def test_nonsense_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)
