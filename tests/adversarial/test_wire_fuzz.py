"""Issue 8: property-based fuzzing of the envelope and header decoder, and of ingest behind it.

Structured strategies rather than random bytes alone: deep nesting, NUL and other control characters,
lone surrogates, huge and non-finite numbers, unicode, and valid envelopes whose header has one field
mutated. Properties: ``wire.decode`` raises nothing but ``WireError``; ``decode_json_header`` never raises
and returns what any JSON column stores; ``IngestService.handle`` always returns an outcome (on SQLite
and PostgreSQL) and never leaves a message unsettled.
"""

import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_sim.registry import SimDevice
from gateway.bootstrap import Services
from gateway.services.ingest import Outcome
from gateway.wire import WireError, decode, decode_json_header
from storage.keys import validate_id
from tests.support.api import auth, new_user

JPEG_ISH = b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9"

# Characters a hostile camera likes: controls (NUL first), DEL and C1, lone surrogates, bidi overrides.
nasty_chars = st.sampled_from(
    ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ud800", "\udfff"]
)
nasty_text = st.lists(nasty_chars | st.characters(), max_size=40).map("".join)
huge_numbers = st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "9" * 400, "-" + "9" * 4000, "1e-999"])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | nasty_text

json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=20,
)


def deep(depth: int, opener: str) -> bytes:
    closer = {"[": "]", "{": "}"}[opener]
    inner = '"k":' if opener == "{" else ""
    return ((opener + inner) * depth + "1" + closer * depth).encode()


deep_headers = st.builds(deep, st.integers(1, 4000), st.sampled_from(["[", "{"]))

VALID_ALERT: dict[str, Any] = {
    "type": "alert",
    "event_id": "fuzz-1",
    "captured_at": "2026-06-01T11:59:00Z",
    "kind": "motion",
    "body_size": len(JPEG_ISH),
}
VALID_STATUS: dict[str, Any] = {
    "type": "status",
    "online": True,
    "firmware": "1.0",
    "at": "2026-06-01T11:59:00Z",
}
TIMES = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+14:00",
    "2001-01-01T00:00:00Z",
    "2026-13-01T00:00Z",
]


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    """A valid alert header with one field replaced, removed or added, serialised with raw number tricks."""
    header = dict(draw(st.sampled_from([VALID_ALERT, VALID_STATUS])))
    field = draw(st.sampled_from([*header, "clip_id", "extra\x00"]))
    action = draw(st.sampled_from(["replace", "remove", "number", "time"]))
    if action == "remove":
        header.pop(field, None)
    elif action == "time":
        header[field] = draw(st.sampled_from(TIMES))
    else:
        header[field] = draw(json_values) if action == "replace" else "__NUMBER__"
    text = json.dumps(header)  # allow_nan: Infinity and NaN are what a hostile camera would send
    return text.replace('"__NUMBER__"', draw(huge_numbers)).encode("utf-8", "surrogatepass")


headers = (
    deep_headers
    | mutated_headers()
    | json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
    | st.binary(max_size=300)
)


def envelope(header: bytes, body: bytes, declared: int | None) -> bytes:
    length = len(header) if declared is None else declared
    return b"CG\x01" + struct.pack(">H", length & 0xFFFF) + header + body


payloads = st.builds(
    envelope, headers, st.sampled_from([b"", JPEG_ISH, b"\x00" * 10]), st.none() | st.integers(0, 0xFFFF)
) | st.binary(max_size=200)


# Valid envelopes (right length, matching body) around a mutated header: these reach the field validators.
mutated_envelopes = st.builds(envelope, mutated_headers(), st.just(JPEG_ISH), st.none())


@settings(max_examples=400, deadline=None)
@given(mutated_envelopes | payloads)
def test_decode_raises_only_wire_errors_and_accepts_only_storable_headers(payload: bytes) -> None:
    try:
        header, _ = decode(payload)
    except WireError as exc:
        assert exc.reason and safe_text(exc.detail)
        return
    # What decode accepts can be written to any database and any key: printable strings, ids valid as key
    # segments, times that exist in UTC.
    for name, value in header:
        if isinstance(value, str):
            assert safe_text(value), name
        if isinstance(value, datetime):
            assert value.astimezone(UTC).tzinfo is not None, name
    for name in ("event_id", "clip_id"):
        if isinstance(getattr(header, name, None), str):
            validate_id(getattr(header, name))


def safe_text(text: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def storable(value: dict[str, object]) -> bool:
    json.dumps(value, allow_nan=False)  # raises on Infinity/NaN, which PostgreSQL's JSON refuses
    texts = [*value, *(v for v in value.values() if isinstance(v, str))]
    # no controls (NUL among them) and no lone surrogates, which no UTF-8 column stores
    return not any(
        ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for t in texts for c in t
    )


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_the_dead_letter_header_never_raises_and_is_always_storable(payload: bytes) -> None:
    header = decode_json_header(payload)
    assert isinstance(header, dict) and len(header) <= 32
    assert storable(header)
    assert all(not isinstance(v, dict | list) for v in header.values())


@pytest.fixture
async def bound(client: TestClient, mailbox: Path, fleet: list[SimDevice]) -> SimDevice:
    """A camera bound to an account, so that hostile payloads reach every step of ingest."""
    token = await new_user(client, mailbox, "fuzz@example.com")
    cam = fleet[0]
    resp = await client.post(
        "/v1/devices", json={"serial": cam.serial, "code": cam.code}, headers=auth(token)
    )
    assert resp.status == 201
    return cam


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=mutated_envelopes | payloads,
    channel=st.sampled_from(["alert", "status", "clip/fuzz-1", "config"]),
)
async def test_ingest_always_settles_hostile_payloads(
    payload: bytes, channel: str, bound: SimDevice, services: Services
) -> None:
    """On both databases (``services`` is parametrized over them): an outcome, never an exception."""
    outcome = await services.ingest.handle(f"cam/{bound.serial}/{channel}", payload)
    assert isinstance(outcome, Outcome)
