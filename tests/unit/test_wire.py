import contextlib
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.wire import (
    AlertHeader,
    Channel,
    ConfigHeader,
    StatusHeader,
    Topic,
    WireError,
    decode,
    encode,
    parse_topic,
    topic,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def alert(body: bytes = b"\xff\xd8jpeg\xff\xd9", **kw: object) -> bytes:
    fields: dict[str, object] = {
        "event_id": "e-1",
        "captured_at": NOW,
        "kind": "motion",
        "body_size": len(body),
    }
    fields.update(kw)
    return encode(AlertHeader(**fields), body)  # type: ignore[arg-type]


def test_alert_round_trip_carries_raw_bytes() -> None:
    body = bytes(range(256)) * 400
    header, got = decode(alert(body))
    assert isinstance(header, AlertHeader) and header.event_id == "e-1" and bytes(got) == body
    assert len(alert(body)) < len(body) + 200  # no base64 inflation


def test_status_and_config_round_trip() -> None:
    status, body = decode(encode(StatusHeader(online=False, firmware="1.2")))
    assert status == StatusHeader(online=False, firmware="1.2") and len(body) == 0
    cfg = ConfigHeader(alerts_enabled=False, event_kinds=["person"], issued_at=NOW)
    assert decode(encode(cfg))[0] == cfg


def test_unknown_header_fields_are_ignored() -> None:
    raw = b'{"type":"status","online":true,"battery":88}'
    header, _ = decode(b"CG\x01" + struct.pack(">H", len(raw)) + raw)
    assert header == StatusHeader(online=True)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "truncated"),
        (b"XX\x01\x00\x00", "bad_magic"),
        (b"CG\x02\x00\x00", "unsupported_version"),
        (b"CG\x01\x00\x50{}", "truncated"),
        (b"CG\x01\x00\x02{}", "bad_header"),
        (b"CG\x01\x00\x04null", "bad_header"),
    ],
)
def test_malformed_envelopes_have_reasons(payload: bytes, reason: str) -> None:
    with pytest.raises(WireError) as info:
        decode(payload)
    assert info.value.reason == reason


def test_body_size_must_match() -> None:
    with pytest.raises(WireError) as info:
        decode(alert(b"abc", body_size=4))
    assert info.value.reason == "size_mismatch"


@pytest.mark.parametrize("event_id", ["", "a/b", "x" * 65, "../etc"])
def test_event_ids_are_restricted(event_id: str) -> None:
    with pytest.raises(ValueError):
        AlertHeader(event_id=event_id, captured_at=NOW, kind="motion", body_size=1)


def test_naive_capture_times_are_refused() -> None:
    raw = b'{"type":"alert","event_id":"e","captured_at":"2026-06-01T12:00:00","kind":"motion","body_size":1}'
    with pytest.raises(WireError, match="captured_at"):
        decode(b"CG\x01" + struct.pack(">H", len(raw)) + raw + b"x")


def test_topics() -> None:
    assert topic("CG12345678", Channel.ALERT) == "cam/CG12345678/alert"
    assert parse_topic("cam/CG12345678/status").channel is Channel.STATUS
    assert parse_topic("cam/CG12345678/clip/c1") == Topic("CG12345678", Channel.CLIP, "c1")
    assert str(Topic("CG12345678", Channel.CLIP, "c1")) == "cam/CG12345678/clip/c1"
    for bad in ("cam/CG12345678/clip", "cam/CG12345678/clip/c1/0", "cam/CG12345678/clip/a b"):
        with pytest.raises(WireError):
            parse_topic(bad)
    for bad in (
        "cam/cg12345678/alert",
        "cam/CG12345678/alert/x",
        "dev/CG12345678/alert",
        "cam/CG12345678/nope",
    ):
        with pytest.raises(WireError):
            parse_topic(bad)


@given(st.binary(max_size=300))
def test_any_bytes_either_decode_or_raise_wire_error(payload: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(payload)


@given(st.binary(max_size=200))
def test_any_header_bytes_in_a_valid_frame(raw: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(b"CG\x01" + struct.pack(">H", len(raw)) + raw)
