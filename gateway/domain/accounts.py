"""Account rules: sign-up identifiers, the age rule, passwords."""

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

MINIMUM_AGE = 14
ADULT_AGE = 18
PASSWORD_MIN_LENGTH = 10
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")  # E.164


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


@dataclass(frozen=True)
class Identifier:
    """What a person signs up and logs in with: an e-mail address or an E.164 phone number."""

    channel: Channel
    value: str


def parse_identifier(raw: str) -> Identifier:
    """Normalises an e-mail (lower-cased) or a phone number (spaces and dashes dropped)."""
    text = raw.strip()
    if "@" in text:
        local, _, domain = text.rpartition("@")
        if not local or "." not in domain or any(ch.isspace() for ch in text):
            raise ValueError("not a valid e-mail address")
        return Identifier(Channel.EMAIL, f"{local}@{domain.lower()}")
    phone = re.sub(r"[\s\-().]", "", text)
    if not _PHONE.match(phone):
        raise ValueError("not an e-mail address or an E.164 phone number such as +6591234567")
    return Identifier(Channel.SMS, phone)


def age_on(birth_date: date, today: date) -> int:
    """Completed years of age on ``today``."""
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - before_birthday


class AgeDecision(StrEnum):
    ALLOWED = "allowed"
    TOO_YOUNG = "too_young"
    NEEDS_GUARDIAN = "needs_guardian"


def age_decision(birth_date: date, today: date, *, has_guardian_consent: bool) -> AgeDecision:
    """Under 14 refused; 14 to 17 only with a recorded guardian consent; 18 and over allowed."""
    age = age_on(birth_date, today)
    if age < MINIMUM_AGE:
        return AgeDecision.TOO_YOUNG
    if age < ADULT_AGE and not has_guardian_consent:
        return AgeDecision.NEEDS_GUARDIAN
    return AgeDecision.ALLOWED


def password_problem(password: str, identifier: str) -> str | None:
    """Why a password is refused, or None. Length over composition rules, as NIST SP 800-63B advises."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"must be at least {PASSWORD_MIN_LENGTH} characters"
    if password.lower() == identifier.lower():
        return "must differ from the e-mail address or phone number"
    return None
