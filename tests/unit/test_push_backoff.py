"""Retry timing of the push outbox: doubling backoff with full jitter, capped; Retry-After wins when longer."""

import random

from gateway.config import PushSettings
from gateway.ports import DeliveryOutcome, DeliveryResult
from gateway.services.push import MAX_RETRY_AFTER_S, backoff_s, full_jitter, retry_delay_s

SETTINGS = PushSettings(backoff_base_s=2.0, backoff_max_s=60.0)


def ceiling(c: float) -> float:
    """A jitter that always takes the longest wait, so the ceiling itself is visible."""
    return c


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, SETTINGS, ceiling) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_s(10_000, SETTINGS, ceiling) == 60  # no overflow on absurd attempt numbers


def test_full_jitter_stays_within_zero_and_the_ceiling() -> None:
    random.seed(7)
    waits = [backoff_s(3, SETTINGS, full_jitter) for _ in range(500)]
    assert all(0 <= w <= 8 for w in waits)
    assert min(waits) < 1 and max(waits) > 7  # spread over the whole range, not clustered


def retry(after: float | None) -> DeliveryResult:
    return DeliveryResult(DeliveryOutcome.RETRY, 429, "HTTP 429", after)


def test_retry_after_wins_when_longer_than_the_backoff() -> None:
    assert retry_delay_s(1, [retry(120)], SETTINGS, ceiling) == 120
    assert retry_delay_s(5, [retry(1)], SETTINGS, ceiling) == 32
    assert retry_delay_s(1, [retry(None), retry(30), retry(90)], SETTINGS, ceiling) == 90
    assert retry_delay_s(1, [retry(10**9)], SETTINGS, ceiling) == MAX_RETRY_AFTER_S
