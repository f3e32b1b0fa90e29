"""Values from untrusted senders (camera headers, API bodies): JSON with a bound on nesting, text any
database column can store, times that UTC can express.

``json.loads`` recurses once per nested array or object and raises ``RecursionError`` (a ``RuntimeError``,
not a ``ValueError``) a few thousand levels down, which a 4 KiB payload reaches. Counting the brackets
before parsing bounds the depth (it can never exceed their number) at C speed; brackets inside strings
count too, which only makes the bound stricter.
"""

import json
import re
from datetime import UTC, datetime
from typing import Any


class JsonRejected(ValueError):
    """The text is not JSON, or is nested deeper than allowed; the message says which."""


def nesting_bound(raw: bytes | str) -> int:
    """An upper bound of the nesting depth of ``raw``: the number of opening brackets."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def loads(raw: bytes | str, *, max_containers: int) -> Any:
    """Parses JSON holding at most ``max_containers`` arrays and objects; raises JsonRejected."""
    if nesting_bound(raw) > max_containers:
        raise JsonRejected(f"more than {max_containers} nested arrays or objects")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: belt and braces, the bound prevents it
        raise JsonRejected(f"not JSON: {exc}") from None


# C0 and C1 controls (NUL among them: PostgreSQL refuses it in text, SQLite stores it), DEL, and lone
# surrogates (which no UTF-8 text column stores, and JSON's \ud800 escapes produce).
UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def in_utc(value: datetime) -> datetime:
    """An aware time converted to UTC; ValueError for one that UTC cannot express (it overflows: e.g.
    ``0001-01-01T00:00+14:00`` or ``9999-12-31T23:59-23:59``)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time cannot be expressed in UTC (years 1 to 9999)") from None


def printable(value: str, limit: int) -> str:
    """``value`` with unsafe characters replaced and cut to ``limit``: storable in any text column."""
    return UNSAFE_TEXT.sub("\ufffd", value[:limit])
