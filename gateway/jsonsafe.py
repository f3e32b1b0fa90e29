"""JSON from untrusted senders (camera headers, API bodies) with a bound on nesting.

``json.loads`` recurses once per nested array or object and raises ``RecursionError`` (a ``RuntimeError``,
not a ``ValueError``) a few thousand levels down, which a 4 KiB payload reaches. Counting the brackets
before parsing bounds the depth (it can never exceed their number) at C speed; brackets inside strings
count too, which only makes the bound stricter.
"""

import json
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
