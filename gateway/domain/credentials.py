"""Hashes for the secrets a camera carries: its label code and its broker password.

The label verification code is short (6 characters), so a plain hash would fall to an offline brute
force in seconds; it is stored as an HMAC keyed with the server's secret key ("pepper"), which an
attacker holding only a database dump does not have.

The broker secret is stored in Mosquitto's own PBKDF2-SHA512 format (``$7$``), so the broker's password
file can be generated from the database without ever holding the plain secret again. Broker secrets
are long random strings (>= 16 characters), so the iteration count protects little and is kept modest
to keep imports of large fleets fast.
"""

import base64
import hashlib
import hmac
import secrets

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read off printed labels
CODE_LENGTH = 6
BROKER_HASH_ITERATIONS = 1000
_BROKER_SALT_BYTES = 12


def normalise_code(raw: str) -> str:
    """Upper-cases a typed label code and drops the spaces and dashes people type between groups."""
    return "".join(ch for ch in raw.upper() if ch not in " -")


def keyed_digest(pepper: bytes, *parts: str) -> str:
    """HMAC-SHA256 of the parts joined by NUL: for short codes and bearer tokens at rest."""
    return hmac.new(pepper, "\0".join(parts).encode(), hashlib.sha256).hexdigest()


def hash_label_code(pepper: bytes, serial: str, code: str) -> str:
    """Keyed hash of a label code, bound to its serial so equal codes on two labels hash apart."""
    return keyed_digest(pepper, "label", serial, normalise_code(code))


def label_code_matches(pepper: bytes, serial: str, code: str, stored_hash: str) -> bool:
    """Constant-time check of a typed code against the stored hash."""
    return hmac.compare_digest(hash_label_code(pepper, serial, code), stored_hash)


def new_label_code() -> str:
    """A fresh label code from a CSPRNG."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def hash_broker_secret(secret: str, *, iterations: int = BROKER_HASH_ITERATIONS) -> str:
    """Mosquitto ``$7$`` (PBKDF2-SHA512) hash of a device's broker password."""
    salt = secrets.token_bytes(_BROKER_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def broker_secret_matches(secret: str, stored_hash: str) -> bool:
    """Checks a broker password against a ``$7$`` hash (used by tests and ops look-ups)."""
    _, kind, iterations, salt_b64, digest_b64 = stored_hash.split("$")
    if kind != "7":
        return False
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt_b64), int(iterations))
    return hmac.compare_digest(base64.b64encode(digest).decode(), digest_b64)
