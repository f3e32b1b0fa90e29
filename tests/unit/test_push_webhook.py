"""The webhook provider's pure parts: signatures, the body, Retry-After, status classes and URL checks."""

import ipaddress
import json
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.adapters.push.addresses import literal_address
from gateway.adapters.push.webhook import (
    check_literal,
    classify,
    is_forbidden_ip,
    parse_retry_after,
    parse_url,
    render_body,
    signature,
    verify_signature,
    webhook_secret,
)
from gateway.config import PushSettings
from gateway.domain.credentials import keyed_digest
from gateway.errors import InvalidRequest
from gateway.ports import DeliveryOutcome, Notification

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BODY = b'{"type":"alert"}'


def test_signature_verifies_and_binds_body_time_and_secret() -> None:
    secret = webhook_secret(b"p" * 32, "target-1")
    header = signature(secret, 1_780_000_000, BODY)
    assert header.startswith("t=1780000000,v1=")
    assert verify_signature(secret, header, BODY, now=1_780_000_010)
    assert not verify_signature(secret, header, BODY + b" ", now=1_780_000_010)
    assert not verify_signature("other", header, BODY, now=1_780_000_010)
    assert not verify_signature(secret, header, BODY, now=1_780_000_000 + 301)  # replayed too late
    assert not verify_signature(secret, "v1=abc", BODY, now=1_780_000_000)
    assert not verify_signature(secret, "t=x,v1=abc", BODY, now=1_780_000_000)


def test_secret_is_the_keyed_digest_of_the_target() -> None:
    assert webhook_secret(b"p" * 32, "t1") == keyed_digest(b"p" * 32, "webhook", "t1")
    assert webhook_secret(b"p" * 32, "t1") != webhook_secret(b"p" * 32, "t2")


def test_body_is_the_documented_json() -> None:
    notification = Notification(
        delivery_id="7",
        event_id="e1",
        device_id="d1",
        device_name="Porch",
        kind="motion",
        captured_at=NOW,
        thumbnail_url="/v1/events/e1/thumbnail",
    )
    assert json.loads(render_body(notification)) == {
        "type": "alert",
        "event": {
            "id": "e1",
            "device_id": "d1",
            "device_name": "Porch",
            "kind": "motion",
            "captured_at": "2026-06-01T12:00:00Z",
        },
        "thumbnail_url": "/v1/events/e1/thumbnail",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        (format_datetime(NOW + timedelta(seconds=90), usegmt=True), 90.0),
        (format_datetime(NOW - timedelta(seconds=90), usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone
        ("soon", None),
        ("-5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_takes_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    ("status", "retry_after", "outcome", "wait"),
    [
        (200, None, DeliveryOutcome.DELIVERED, None),
        (204, "30", DeliveryOutcome.DELIVERED, None),
        (404, None, DeliveryOutcome.GONE, None),
        (410, None, DeliveryOutcome.GONE, None),
        (429, "120", DeliveryOutcome.RETRY, 120.0),
        (503, "7", DeliveryOutcome.RETRY, 7.0),
        (500, "60", DeliveryOutcome.RETRY, None),  # only 429 and 503 carry a meaningful Retry-After
        (301, None, DeliveryOutcome.RETRY, None),
        (400, None, DeliveryOutcome.RETRY, None),
    ],
)
def test_status_classes(
    status: int, retry_after: str | None, outcome: DeliveryOutcome, wait: float | None
) -> None:
    result = classify(status, retry_after, NOW)
    assert (result.outcome, result.status, result.retry_after_s) == (outcome, status, wait)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
        "224.0.0.251",
        "224.0.1.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        # Python 3.11 calls these global: the policy unwraps or refuses them itself.
        "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a9fe:a9fe",  # NAT64 local-use prefix (RFC 8215)
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "::1.1.1.1",  # IPv4-compatible, even of a global address: nothing routes it
        "::ffff:0:a9fe:a9fe",  # IPv4-translated (SIIT)
        "fec0::1",  # site-local (deprecated)
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo (client 127.0.0.1)
        "2001:db8::1",
        "3fff::1",  # documentation (RFC 9637)
        "5f00::1",  # outside 2000::/3
        "ff0e::1",  # global-scope multicast
        "fe80::1%eth0",  # any zone
    ],
)
def test_non_global_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "1.1.1.1",
        "8.8.8.8",
        "2606:4700:4700::1111",
        "::ffff:1.1.1.1",
        "64:ff9b::101:101",  # NAT64 of 1.1.1.1: how an IPv6-only host reaches it
        "2002:101:101::1",  # 6to4 of 1.1.1.1
    ],
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_ip(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://1.1.1.1/hook",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "/relative/path",
        "https:///no-host",
        "https://user:secret@1.1.1.1/hook",
        "https://1.1.1.1/" + "a" * 2000,
        "http://[not-an-ip/",
    ],
)
def test_bad_urls_are_refused_with_a_stable_code(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_url(url)
    assert caught.value.code == "webhook_url_invalid"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # what getaddrinfo makes of the legacy forms
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("::1", "::1"),
        ("hooks.example.com", None),
        ("cafe.be", None),
    ],
)
def test_literal_addresses_are_read_as_the_c_library_reads_them(host: str, expected: str | None) -> None:
    ip = literal_address(host)
    assert (str(ip) if ip is not None else None) == expected


def test_a_global_address_in_a_legacy_form_is_refused_not_rewritten() -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_literal("16843009")
    assert caught.value.code == "webhook_url_invalid"
    assert check_literal("1.1.1.1") and not check_literal("hooks.example.com")


def test_production_takes_https_only() -> None:
    assert str(parse_url("https://1.1.1.1/hook", https_only=True)) == "https://1.1.1.1/hook"
    assert str(parse_url("http://1.1.1.1/hook")) == "http://1.1.1.1/hook"
    with pytest.raises(InvalidRequest) as caught:
        parse_url("http://1.1.1.1/hook", https_only=True)
    assert caught.value.code == "webhook_https_required"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
    ],
)
def test_nameservers_take_an_optional_port(entry: str, expected: tuple[str, int]) -> None:
    assert PushSettings(nameservers=[entry]).nameserver_addresses() == [expected]


@pytest.mark.parametrize("entry", ["dns.example.com", "127.0.0.1:0", "127.0.0.1:x", "[::1]:70000"])
def test_bad_nameservers_fail_the_settings(entry: str) -> None:
    with pytest.raises(ValidationError):
        PushSettings(nameservers=[entry])


def test_good_url_is_kept() -> None:
    assert str(parse_url("https://hooks.example.com:8443/camgate?x=1")) == (
        "https://hooks.example.com:8443/camgate?x=1"
    )


def test_the_verification_snippet_in_the_docs_works() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "push.md").read_text()
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", docs, re.S) if "def verify(" in block]
    scope: dict[str, Any] = {}
    exec(snippet, scope)  # noqa: S102 - our own documentation, checked so it cannot rot
    verify = scope["verify"]
    secret = webhook_secret(b"p" * 32, "target-1")
    header = signature(secret, int(time.time()), BODY)
    assert verify(secret, header, BODY)
    assert not verify(secret, header, BODY + b"x")
    assert not verify(secret, signature(secret, int(time.time()) - 3600, BODY), BODY)
    assert not verify(secret, "garbage", BODY)
