from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain.alerts import AlertPrefs, Drop, TokenBuckets, before_binding, collection_decision

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("prefs", "kind", "decision"),
    [
        (AlertPrefs(), "motion", None),
        (AlertPrefs(message_alerts=False), "motion", Drop.ALERTS_OFF),
        (AlertPrefs(message_alerts=False, muted=True), "motion", Drop.ALERTS_OFF),
        (AlertPrefs(muted=True), "person", Drop.MUTED),
        (AlertPrefs(snoozed_until=NOW + timedelta(minutes=5)), "motion", Drop.SNOOZED),
        (AlertPrefs(snoozed_until=NOW), "motion", None),  # a snooze ending now has ended
        (AlertPrefs(event_kinds=frozenset({"person"})), "motion", Drop.KIND_NOT_WANTED),
        (AlertPrefs(event_kinds=frozenset({"person"})), "person", None),
        (AlertPrefs(event_kinds=frozenset()), "person", Drop.KIND_NOT_WANTED),
    ],
)
def test_collection_decision(prefs: AlertPrefs, kind: str, decision: Drop | None) -> None:
    assert collection_decision(prefs, kind, NOW) == decision


def test_token_bucket_allows_burst_then_rate() -> None:
    buckets = TokenBuckets(burst=3, per_second=1.0)
    assert [buckets.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b", 0.0), "another camera is not affected"
    assert not buckets.take("a", 0.5)
    assert buckets.take("a", 1.6)
    assert not buckets.take("a", 1.7)
    assert [buckets.take("a", 100.0) for _ in range(4)] == [True, True, True, False]  # refills to burst only


def test_token_buckets_stay_bounded() -> None:
    buckets = TokenBuckets(burst=1, per_second=1.0, max_keys=10)
    for i in range(1000):
        assert buckets.take(f"cam{i}", float(i))
    assert len(buckets._buckets) <= 11


def test_allows_peeks_without_spending() -> None:
    buckets = TokenBuckets(burst=1, per_second=1.0)
    assert buckets.allows("a", 0.0) and buckets.allows("a", 0.0)
    assert buckets.take("a", 0.0)
    assert not buckets.allows("a", 0.5)


def test_before_binding_trusts_the_camera_clock_only_while_it_is_believable() -> None:
    bound = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    now = bound + timedelta(minutes=5)
    skew = timedelta(days=1)
    assert before_binding(bound - timedelta(minutes=10), bound, now, skew)  # the previous owner's, queued
    assert not before_binding(bound + timedelta(minutes=1), bound, now, skew)
    assert not before_binding(datetime(2001, 1, 1, tzinfo=UTC), bound, now, skew)  # a clock that cannot say
    assert not before_binding(bound - timedelta(minutes=10), None, now, skew)  # unbound: decided elsewhere
