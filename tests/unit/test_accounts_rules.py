from datetime import date

import pytest

from gateway.domain.accounts import (
    AgeDecision,
    Channel,
    age_decision,
    age_on,
    parse_identifier,
    password_problem,
)


@pytest.mark.parametrize(
    ("raw", "channel", "value"),
    [
        ("Me@Example.COM", Channel.EMAIL, "Me@example.com"),
        ("  a.b+tag@mail.example.org ", Channel.EMAIL, "a.b+tag@mail.example.org"),
        ("+65 9123-4567", Channel.SMS, "+6591234567"),
        ("+1 (415) 555-0100", Channel.SMS, "+14155550100"),
    ],
)
def test_identifiers_are_normalised(raw: str, channel: Channel, value: str) -> None:
    ident = parse_identifier(raw)
    assert (ident.channel, ident.value) == (channel, value)


@pytest.mark.parametrize(
    "raw", ["", "me@", "@example.com", "me@localhost", "91234567", "+0123456789", "a b@c.d"]
)
def test_bad_identifiers_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_identifier(raw)


@pytest.mark.parametrize(
    ("born", "today", "age"),
    [
        (date(2000, 6, 1), date(2014, 5, 31), 13),
        (date(2000, 6, 1), date(2014, 6, 1), 14),
        (date(2000, 2, 29), date(2018, 2, 28), 17),
        (date(2000, 2, 29), date(2018, 3, 1), 18),
    ],
)
def test_age_counts_completed_years(born: date, today: date, age: int) -> None:
    assert age_on(born, today) == age


@pytest.mark.parametrize(
    ("born", "consent", "decision"),
    [
        (date(2012, 6, 2), True, AgeDecision.TOO_YOUNG),  # 13 the day before the 14th birthday
        (date(2012, 6, 1), False, AgeDecision.NEEDS_GUARDIAN),  # 14 today
        (date(2012, 6, 1), True, AgeDecision.ALLOWED),
        (date(2008, 6, 2), False, AgeDecision.NEEDS_GUARDIAN),  # 17, a day before 18
        (date(2008, 6, 1), False, AgeDecision.ALLOWED),  # 18 today
    ],
)
def test_age_rule(born: date, consent: bool, decision: AgeDecision) -> None:
    assert age_decision(born, date(2026, 6, 1), has_guardian_consent=consent) is decision


def test_password_rule() -> None:
    assert password_problem("short", "me@example.com") is not None
    assert password_problem("me@example.com", "ME@example.com") is not None
    assert password_problem("a long passphrase", "me@example.com") is None
