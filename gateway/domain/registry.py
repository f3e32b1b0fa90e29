"""Validation of factory registry rows (serial, label code, model, broker secret)."""

import re
from dataclasses import dataclass

from gateway.domain.credentials import CODE_ALPHABET, CODE_LENGTH, normalise_code

SERIAL_PATTERN = re.compile(r"^[A-Z0-9]{8,32}$")
MODEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
BROKER_SECRET_MIN = 16
COLUMNS = ("serial", "verification_code", "model", "broker_secret")


@dataclass(frozen=True)
class RegistryRow:
    """One validated device of the factory registry, still holding its plain code and secret."""

    serial: str
    code: str
    model: str
    broker_secret: str


def validate_row(raw: dict[str, str]) -> RegistryRow:
    """Validates one CSV row; raises ValueError naming the first bad field."""
    serial = raw.get("serial", "").strip().upper()
    if not SERIAL_PATTERN.match(serial):
        raise ValueError("serial: 8 to 32 characters A-Z and 0-9 expected")
    code = normalise_code(raw.get("verification_code", ""))
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        raise ValueError(f"verification_code: {CODE_LENGTH} characters from {CODE_ALPHABET} expected")
    model = raw.get("model", "").strip()
    if not MODEL_PATTERN.match(model):
        raise ValueError("model: 1 to 64 letters, digits, spaces, '.', '_' or '-' expected")
    secret = raw.get("broker_secret", "")
    if len(secret) < BROKER_SECRET_MIN or any(ch.isspace() or ch in ":$" for ch in secret):
        raise ValueError(f"broker_secret: at least {BROKER_SECRET_MIN} characters, no spaces, ':' or '$'")
    return RegistryRow(serial=serial, code=code, model=model, broker_secret=secret)
