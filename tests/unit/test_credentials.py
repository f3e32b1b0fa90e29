from gateway.domain.credentials import (
    CODE_ALPHABET,
    broker_secret_matches,
    hash_broker_secret,
    hash_label_code,
    label_code_matches,
    new_label_code,
)

PEPPER = b"p" * 32


def test_label_code_hash_is_keyed_and_bound_to_serial() -> None:
    h = hash_label_code(PEPPER, "CG12345678", "ABC234")
    assert "ABC234" not in h
    assert label_code_matches(PEPPER, "CG12345678", "abc-234", h)  # typed with a dash, lower case
    assert not label_code_matches(PEPPER, "CG12345678", "ABC235", h)
    assert not label_code_matches(PEPPER, "CG12345679", "ABC234", h)
    assert not label_code_matches(b"q" * 32, "CG12345678", "ABC234", h)


def test_new_codes_use_the_label_alphabet() -> None:
    codes = {new_label_code() for _ in range(200)}
    assert len(codes) > 190
    assert all(len(c) == 6 and set(c) <= set(CODE_ALPHABET) for c in codes)


def test_broker_hash_is_mosquitto_pbkdf2_and_salted() -> None:
    a, b = hash_broker_secret("secret-1234567890"), hash_broker_secret("secret-1234567890")
    assert a.startswith("$7$") and a != b
    assert broker_secret_matches("secret-1234567890", a)
    assert not broker_secret_matches("secret-1234567891", a)
